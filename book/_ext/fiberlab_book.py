"""Sphinx hooks of fiberlab's book (loaded through ``sphinx.local_extensions`` in ``_config.yml``).

- Each page's scripts are written once. sphinx-thebe and sphinx-togglebutton add their inline configuration
  script a second time on every page, and the second ``const THEBE_JS_URL`` is a console error ("Identifier
  'THEBE_JS_URL' has already been declared").
"""

from __future__ import annotations

from typing import Any


def _script_key(js: Any) -> tuple:
    """What makes two script entries the same script: the file, and the attributes (an inline script's ``body``
    among them); not Sphinx's priority, under which the same script can be added twice."""
    filename = getattr(js, "filename", js) or ""        # an inline script is added with None or with ""
    attributes = getattr(js, "attributes", {}) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
