"""The documentation's figures have one source: docs/benchmarks.md.

The README shows a table of current figures; the same table, with its
command and date, is the summary at the top of docs/benchmarks.md.  A
figure changed in one place and not the other fails here.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADER = "| benchmark | Keel | reference | ratio |"


def figures_table(text: str, after: str) -> list[str]:
    """The rows of the first figures table after the line ``after``."""
    start = text.index(HEADER, text.index(after))
    rows = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        rows.append(line.strip())
    return rows


def test_readme_figures_come_from_docs_benchmarks() -> None:
    readme = figures_table((ROOT / "README.md").read_text(), "## Tests and benchmarks")
    summary = figures_table(
        (ROOT / "docs" / "benchmarks.md").read_text(), "## Summary: the figures the README shows"
    )
    assert len(readme) > 2
    assert readme == summary
