"""The README as a GitHub-style renderer shows it: every table renders as a table (a blank line inside one once
split the claim table, leaving the LPO and FiberPO rows as raw ``|`` text), and its first screen names what the
project is, who it is for, the two set-up commands and how to open the book."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

README = Path(__file__).resolve().parents[1] / "README.md"


def _html() -> str:
    return MarkdownIt("commonmark").enable("table").render(README.read_text(encoding="utf-8"))


def test_every_table_row_renders_inside_a_table():
    html = _html()
    stray = [p[:60] for p in re.findall(r"<p>(.*?)</p>", html, re.S) if p.lstrip().startswith("|")]
    assert stray == []
    separators = [line for line in README.read_text(encoding="utf-8").splitlines() if re.match(r"^\|\s*-{3}", line)]
    assert html.count("<table>") == len(separators) > 0          # one table per header separator


def test_the_first_screen_says_what_who_how_and_where_the_book_is():
    first = "\n".join(README.read_text(encoding="utf-8").splitlines()[:30])
    for needed in ("**What.**", "**For whom.**", "make verify", "make test", "book/_build/html/index.html"):
        assert needed in first, needed
