"""Regenerate the README's performance table from benchmark JSON reports.

Usage::

    python benchmarks/bench_pipeline.py --json benchmarks/results/bench_pipeline.json
    python benchmarks/readme_table.py [--results benchmarks/results] [--readme README.md] [--check]

Every report in the results folder (written by a script's ``--json``) contributes its rows;
the table between the README's ``<!-- perf-table:start -->`` and ``<!-- perf-table:end -->``
markers is replaced, with the date, commit and machine of each report, so the figures
are measurements, never typed by hand.  ``--check`` only says whether the README is current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import format_value  # noqa: E402
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"


def render(reports: list[dict]) -> str:
    """The Markdown table (and its provenance lines) of some reports."""
    lines = []
    for rep in reports:
        m = rep.get("machine", {})
        lines.append(f"**{rep['title']}** — {rep['date'][:10]}, commit `{rep['commit']}`, "
                     f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
                     + (" (quick run: timings not meaningful)" if rep.get("quick") else ""))
        lines.append("")
        lines.append("| measurement | value | target |")
        lines.append("|---|---|---|")
        for row in rep["rows"]:
            value = row["value"]
            if value is None:
                shown = "n/a"
            else:
                shown = f"{format_value(value)} {row['unit']}".strip()
            lines.append(f"| {row['name'].strip()} | {shown} | {row.get('target', '')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--readme", type=Path, default=HERE.parent / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's table is not current")
    args = ap.parse_args()
    reports = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
    if not reports:
        print(f"no reports in {args.results}", file=sys.stderr)
        return 1
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"{args.readme} has no {START} … {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + START + "\n" + render(reports) + END + tail
    if args.check:
        return 0 if new == text else 1
    args.readme.write_text(new)
    print(f"{args.readme}: table from {len(reports)} report(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
