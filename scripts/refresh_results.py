"""Regenerate the v5 study's tables and figures from the committed cells, and splice the tables into results.md.

Run it after committing cells (``tests/test_study_report.py`` checks that ``docs/results_v5_matrix.md`` and the block
of ``docs/results.md`` between the two markers below are exactly what ``robosteer study-report`` writes)::

    python scripts/refresh_results.py            # docs/results_v5_matrix.md, .html, docs/img/study_v5_figure.png
    python scripts/refresh_results.py --check    # exit 1, writing nothing, when a committed file is stale

The same files by hand::

    robosteer study-report docs/results/v5-matrix --bands docs/results/v5-bands --out docs/results_v5_matrix.md \\
        --html docs/results_v5_matrix.html --png docs/img/study_v5_figure.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
MATRIX, BANDS = DOCS / "results" / "v5-matrix", DOCS / "results" / "v5-bands"
TABLE, HTML, PNG = DOCS / "results_v5_matrix.md", DOCS / "results_v5_matrix.html", DOCS / "img" / "study_v5_figure.png"
BEGIN, END = "<!-- v5-matrix tables: begin (scripts/refresh_results.py) -->", "<!-- v5-matrix tables: end -->"


def spliced(results: str, table: str) -> str:
    """``results`` with the text between the markers replaced by ``table``."""
    if results.count(BEGIN) != 1 or results.count(END) != 1 or results.index(BEGIN) > results.index(END):
        raise ValueError(f"{DOCS / 'results.md'}: expected one {BEGIN!r} line followed by one {END!r} line")
    head, rest = results.split(BEGIN, 1)
    return head + BEGIN + "\n\n" + table.strip() + "\n\n" + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only say whether the committed files are stale")
    args = parser.parse_args(argv)
    results = (DOCS / "results.md").read_text()
    if args.check:
        from robosteer.app.study_report import StudyReport

        table = StudyReport.load(MATRIX, bands=BANDS).markdown()
        stale = [str(p) for p, fresh in ((TABLE, table), (DOCS / "results.md", spliced(results, table)))
                 if not p.is_file() or p.read_text() != fresh]
        print("stale: " + ", ".join(stale) if stale else "up to date")
        return 1 if stale else 0
    from robosteer.cli import main as robosteer

    code = robosteer(["study-report", str(MATRIX), "--bands", str(BANDS), "--out", str(TABLE), "--html", str(HTML),
                      "--png", str(PNG)])
    if code:
        return code
    from robosteer.files import atomic_write_text

    atomic_write_text(DOCS / "results.md", spliced(results, TABLE.read_text()))
    print(f"wrote {TABLE}, {HTML}, {PNG} and the tables in {DOCS / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
