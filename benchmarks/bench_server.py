"""Benchmark: the server fed by the feeder at a fixed rate; losses and latency.

Usage::

    python benchmarks/bench_server.py [--rate 200] [--duration 60] [--workers 2] [--quick] [--json PATH]

Starts ``saxsdogserver`` (a subprocess, as users run it) on a temporary base directory,
sends ``new`` with the real calibration and mask, then announces hard links of the real
Pilatus 1M image at ``--rate`` events/s for ``--duration`` seconds.  Latency is measured
from the announcement to the image's entry in the ledger/history (both wall clocks of
this machine).

Every result is checked whatever the mode: the server starts and accepts the queue, and
every announced image is in the ledger as done (none lost, none failed).  ``--quick``
announces 100 images at 50 events/s (timings meaningless).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _harness import Report, parser


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of announcements")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.rate, args.duration = 50.0, 2.0
    rep = Report("bench_server: the server fed at a fixed rate", args)

    from saxsdog.feeder import Feeder
    from saxsdog.protocol.client import LeashClient, build_new_request
    from saxsdog.testing import free_port, link_images

    n = int(args.rate * args.duration)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        images = link_images(args.data / "buf1_00000.tif", base / "run", n)
        port, fport = free_port(), free_port()
        network = tmp / "network.json"
        subprocess.run([sys.executable, "-m", "saxsdog.cli.netconf", "--server", f"tcp://127.0.0.1:{port}",
                        "--feeder", f"tcp://127.0.0.1:{fport}", "--network", str(network), "--non-interactive",
                        "--replace"], check=True, capture_output=True)
        secret = json.loads(network.read_text())[0]["Secret"]
        env = {**os.environ, "SAXSDOG_CACHE_DIR": str(tmp / "cache")}
        server = subprocess.Popen([sys.executable, "-m", "saxsdog.cli.server", str(base), "--network", str(network),
                                   "-t", str(args.workers), "--rescan", "0", "--no-http"], stdout=subprocess.PIPE, text=True,
                                  env=env, start_new_session=True)
        try:
            rep.check("serving" in server.stdout.readline(), "the server did not start")
            arg, att = build_new_request(str(args.data / "cal.json"), str(args.data / "AAA_integ.msk"), "run")
            with LeashClient(f"tcp://127.0.0.1:{port}", secret, timeout=60) as c:
                answer = c.request("new", arg, att)
                rep.check(answer.get("result") == "new queue", f"'new' was answered {answer}")
            announced: dict[str, float] = {}
            with Feeder(f"tcp://127.0.0.1:{fport}") as feeder:
                rep.check(feeder.wait_for_subscriber(10), "the server did not subscribe to the feeder")
                time.sleep(0.5)
                t0 = time.perf_counter()
                wall0 = time.time()
                max_queue = 0
                with LeashClient(f"tcp://127.0.0.1:{port}", secret, timeout=60) as c:
                    for i, p in enumerate(images):
                        target = t0 + i / args.rate
                        delay = target - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        announced[str(p)] = time.time()
                        feeder.announce(p)
                        if i % int(args.rate) == 0:
                            max_queue = max(max_queue, c.request("stat")["data"]["stat"]["queue length"])
                    send_time = time.time() - wall0
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        st = c.request("stat")["data"]["stat"]
                        if st["images processed"] + st["images failed"] >= n and st["queue length"] == 0:
                            break
                        time.sleep(0.2)
            rep.context["final stat"] = {k: st.get(k) for k in ("images processed", "images failed", "queue length",
                                                                 "worker restarts", "stage seconds")}
            db = sqlite3.connect(str(base / ".saxsdog" / "ledger.sqlite"))
            rows = db.execute("SELECT path, state, updated FROM images WHERE state != 'preexisting'").fetchall()
            db.close()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)

    done = [(p, u) for p, s, u in rows if s == "done"]
    failed = sum(1 for _, s, _ in rows if s == "failed")
    rep.check(bool(done), f"nothing processed: {len(rows)} ledger rows, e.g. {rows[:3]}")
    lat = np.array([u - announced[p] for p, u in done if p in announced]) * 1e3
    lost = n - len(done)
    rep.context["setup"] = (f"{args.workers} workers, feeder at {args.rate:.0f} events/s for {args.duration:.0f} s "
                            f"({n} Pilatus 1M images, real calibration and mask)")
    rep.add("events announced", n, "", key="announced")
    rep.add("actual announce rate", n / send_time, "events/s", key="announce_rate")
    rep.add("images processed (ledger rows done)", len(done), "", key="processed")
    rep.add("lost (announced, not processed)", lost, "", "0", key="lost")
    rep.add("largest queue length seen", max_queue, "", key="max_queue")
    rep.add("latency event -> history, p50", float(np.percentile(lat, 50)), "ms", "< 20", key="latency_p50_ms")
    rep.add("latency event -> history, p90", float(np.percentile(lat, 90)), "ms", key="latency_p90_ms")
    rep.add("latency event -> history, p99", float(np.percentile(lat, 99)), "ms", key="latency_p99_ms")
    rep.add("latency event -> history, max", float(lat.max()), "ms", key="latency_max_ms")
    rep.check(lost == 0 and failed == 0, f"{lost} of {n} announced images not processed, {failed} failed")
    rep.finish()


if __name__ == "__main__":
    main()
