"""Source-level checks of the book's MyST that the build itself does not catch."""

from __future__ import annotations

from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"


def bullet_continuations(text: str) -> list[int]:
    """Line numbers, outside ``$$`` display blocks, of lines starting with ``+ ``: a wrapped inline formula whose
    continuation starts so becomes a list item in MyST (the book writes its own bullets with ``- ``)."""
    bad, in_display = [], False
    for i, line in enumerate(text.splitlines(), 1):
        if not in_display and line.startswith("+ "):
            bad.append(i)
        if line.count("$$") % 2 == 1:
            in_display = not in_display
    return bad


def test_no_formula_continuation_line_reads_as_a_bullet():
    """The App. B.2 proof in lpo.md showed stray ``$`` and italics: its formula wrapped onto a ``+ O(s^2)$`` line."""
    assert bullet_continuations("$a = b\n+ c$ text") == [2]                 # the pattern is caught ...
    assert bullet_continuations("$$\na\n+ b\n$$") == []                      # ... and display math is left alone
    bad = {p.name: bullet_continuations(p.read_text(encoding="utf-8")) for p in sorted(BOOK.glob("*.md"))}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_registry_cells_hide_their_input():
    """A claim's card and evidence are the page's content; the ``claim_card(…)``/``show_claims(…)`` call that
    makes them is boilerplate, hidden with ``remove-input`` (the output, the evidence, stays)."""
    shown = []
    for p in sorted(BOOK.glob("*.md")):
        lines = p.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.strip() == "```{code-cell} python3":
                body = [x for x in lines[i + 1:i + 3] if not x.startswith(":")]
                if body and body[0].startswith(("claim_card(", "show_claims(")) and \
                        lines[i + 1] != ":tags: [remove-input]":
                    shown.append(f"{p.name}:{i + 1}")
    assert not shown, f"registry cells showing their code: {shown}"


def code_cells(text: str) -> list[tuple[int, list[str], str]]:
    """``(line, tags, source)`` of each code cell of a MyST page: the 1-based line of its fence, its tags (from
    ``:tags:`` or the YAML block) and its source."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "```{code-cell} python3":
            start, j, meta = i + 1, i + 1, []
            if j < len(lines) and lines[j] == "---":
                j += 1
                while lines[j] != "---":
                    meta.append(lines[j])
                    j += 1
                j += 1
            while j < len(lines) and lines[j].startswith(":"):
                meta.append(lines[j])
                j += 1
            k = j
            while lines[k] != "```":
                k += 1
            tags = [t.strip() for m in meta if "tags" in m for t in m.split("[", 1)[1].rstrip("]").split(",")]
            out.append((start, tags, "\n".join(lines[j:k])))
            i = k
        i += 1
    return out


def test_figure_and_coverage_cells_fold_their_input():
    """The code that draws a figure is folded (``hide-input``: a reader can open it); the cells that check a page
    shows all its claims are bookkeeping, removed (``remove-input``: their printed list stays)."""
    assert code_cells("```{code-cell} python3\n---\ntags: [hide-input]\n---\nplt.subplots()\n```") == \
        [(1, ["hide-input"], "plt.subplots()")]
    shown = []
    for p in sorted(BOOK.glob("*.md")):
        for line, tags, src in code_cells(p.read_text(encoding="utf-8")):
            if "plt.subplots(" in src and not {"hide-input", "remove-input"} & set(tags):
                shown.append(f"{p.name}:{line} (figure)")
            if "shown_claims()" in src and "import" not in src.split("\n", 1)[0] and "remove-input" not in tags:
                shown.append(f"{p.name}:{line} (coverage)")
    assert not shown, f"cells showing their code: {shown}"
