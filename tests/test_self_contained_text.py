"""The library's text is read without the project's planning notes: no docstring or comment in
jaxsynth/ or agents/ may point to a decision or question label (D1-D5, Q1-Q6), an issue number,
DESIGN.md or the planning log; it says what is meant in the repository's own words."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_REFERENCE = re.compile(r"\b(D[1-5]|Q[1-6])\b|issue [0-9]+|DESIGN\.md|planning log")


def test_no_references_to_text_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for pkg in ("jaxsynth", "agents") for p in sorted((ROOT / pkg).rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE_REFERENCE.search(line)]
    assert not hits, "say what is meant instead of:\n" + "\n".join(hits)
    # the pattern does find such a reference
    assert OUTSIDE_REFERENCE.search("the D3 reward (see DESIGN.md)")
