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
