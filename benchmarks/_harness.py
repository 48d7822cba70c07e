"""What every benchmark script shares: timing, one table, ``--json`` and ``--quick``.

Each script under ``benchmarks/`` builds a :class:`Report`, adds rows (a measurement, its
value and unit, and the target, if the issue that asked for it gave one), prints it as a
table and, with ``--json PATH``, writes it with the machine (CPU model, cores, memory), the
commit and the date, so ``benchmarks/readme_table.py`` can regenerate the README's
performance table from measurements instead of typed figures.

``--quick`` runs a script on a few frames: it must still exercise every code path and
check every result (``Report.check``), but its timings mean nothing.  ``.ci/run`` runs the
quick mode of every script (``benchmarks/quick.py``): a crash or a wrong result fails CI,
a slow shared machine never does.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: The shared data folder next to the repository (real Pilatus 1M images, cal.json).
DEFAULT_DATA = REPO.parent / "shared" / "data"


class BenchmarkFailure(AssertionError):
    """A benchmark computed a wrong result (not a slow one)."""


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="folder with buf1_00000.tif and cal.json (default: ../shared/data)")
    ap.add_argument("--quick", action="store_true",
                    help="a few frames only: checks results and code paths, timings are meaningless")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON to PATH")
    return ap


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float:
    """Total memory of the machine in GiB (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return 0.0


def commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(memory_gib(), 1),
            "python": platform.python_version(), "system": platform.platform()}


def per_call(fn: Callable[[], Any], repeat: int, batches: int = 5) -> float:
    """Median seconds per call over ``repeat`` calls in ``batches`` batches, after one warm-up."""
    fn()
    n = max(1, repeat // batches)
    times = []
    for _ in range(batches):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def format_value(v: float) -> str:
    """A measurement for a table: three significant digits or more, whole numbers as such
    (a count of 0 or 12,000), small ratios in scientific notation (4.6e-04, not 0.000)."""
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) < 0.01:
        return f"{v:.2e}"
    digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else (2 if abs(v) >= 1 else 3))
    return f"{v:,.{digits}f}"


@dataclass
class Row:
    """One measurement."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    key: str = ""
    note: str = ""

    def formatted(self) -> str:
        if self.value is None:
            return "n/a"
        return f"{format_value(self.value)} {self.unit}".strip()


@dataclass
class Report:
    """The table a benchmark prints (and writes as JSON)."""

    title: str
    args: argparse.Namespace | None = None
    rows: list[Row] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.args is not None and getattr(self.args, "quick", False))

    def add(self, name: str, value: float | None, unit: str = "", target: str = "", key: str = "",
            note: str = "") -> Row:
        """Add a row; ``key`` names it in the JSON (default: derived from the name)."""
        row = Row(name, value, unit, target, key or _key(name), note)
        self.rows.append(row)
        return row

    def section(self, name: str) -> None:
        """A heading row (no value)."""
        self.rows.append(Row(name, None, "", key=""))

    def check(self, condition: bool, message: str) -> None:
        """Fail the benchmark (also in ``--quick``) when a result is wrong."""
        if not condition:
            raise BenchmarkFailure(f"{self.title}: {message}")

    def value(self, key: str) -> float | None:
        return next((r.value for r in self.rows if r.key == key), None)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "commit": commit(), "machine": machine(), "quick": self.quick, "context": self.context,
                "rows": [{"key": r.key, "name": r.name, "value": r.value, "unit": r.unit, "target": r.target,
                          "note": r.note} for r in self.rows if r.key]}

    def render(self) -> str:
        m = machine()
        lines = [f"\n{self.title}", f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; commit {commit()}"
                 + ("; --quick: timings are not meaningful" if self.quick else "")]
        for k, v in self.context.items():
            lines.append(f"{k}: {v}")
        width = max([len(r.name) for r in self.rows] + [11])
        vwidth = max([len(r.formatted()) for r in self.rows if r.key] + [5])
        lines.append(f"{'measurement':<{width}}  {'value':>{vwidth}}  target")
        lines.append("-" * (width + vwidth + 10))
        for r in self.rows:
            if not r.key:
                lines.append(r.name)
                continue
            extra = f"  {r.target}" if r.target else ""
            if r.note:
                extra += f"  ({r.note})"
            lines.append(f"{r.name:<{width}}  {r.formatted():>{vwidth}}{extra}")
        return "\n".join(lines)

    def finish(self) -> None:
        """Print the table and write the JSON if asked."""
        print(self.render(), flush=True)
        if self.args is not None and getattr(self.args, "json", None):
            path = Path(self.args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.as_dict(), indent=1) + "\n")
            print(f"(written to {path})")


def _key(name: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in name.lower())
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")[:60]


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB (PSS shares shared pages fairly between processes)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
