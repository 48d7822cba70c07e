"""Run every benchmark's ``--quick`` mode, as ``.ci/run`` does.

Usage::

    python benchmarks/quick.py [--json-dir DIR]

Each script under ``benchmarks/`` whose parser comes from ``_harness.parser`` (so it has
``--quick``) runs on a few frames: a crash or a wrong result (a ``BenchmarkFailure``) fails
this command; timings are printed but never judged, since CI machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def quick_scripts() -> list[Path]:
    """The benchmark scripts that support ``--quick``."""
    return sorted(p for p in HERE.glob("bench_*.py") if "_harness" in p.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-dir", type=Path, help="write each script's JSON report into DIR")
    ap.add_argument("--data", type=Path, help="data folder passed on to the scripts")
    args = ap.parse_args()
    failed = []
    for script in quick_scripts():
        cmd = [sys.executable, str(script), "--quick"]
        if args.json_dir:
            cmd += ["--json", str(args.json_dir / (script.stem + ".json"))]
        if args.data:
            cmd += ["--data", str(args.data)]
        print(f"--- {script.name} --quick", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, env=os.environ.copy()).returncode
        print(f"--- {script.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t:.1f} s",
              flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
