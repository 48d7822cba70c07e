"""A real ``saxsdogserver`` subprocess for the end-to-end tests, and what they do with it."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from saxsdog.protocol.client import LeashClient, build_new_request
from saxsdog.testing import free_port


class Server:
    """A saxsdogserver subprocess with its network file."""

    def __init__(self, tmp: Path, base: Path, extra: list[str] = ()):
        self.port, self.fport = free_port(), free_port()
        self.network = tmp / "network.json"
        if not self.network.exists():
            subprocess.run([sys.executable, "-m", "saxsdog.cli.netconf", "--server",
                            f"tcp://127.0.0.1:{self.port}", "--feeder", f"tcp://127.0.0.1:{self.fport}",
                            "--network", str(self.network), "--non-interactive", "--replace"],
                           check=True, capture_output=True, timeout=60)
        entry = json.loads(self.network.read_text())[0]
        self.port = int(entry["Server"].rsplit(":", 1)[1])
        self.fport = int(entry["Feeder"].rsplit(":", 1)[1])
        self.secret = entry["Secret"]
        self.url = entry["Server"]
        self.base = base
        self.args = [sys.executable, "-m", "saxsdog.cli.server", str(base), "--network", str(self.network),
                     "-t", "2", "--no-http", *extra]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        if self.proc is not None:  # a restart: the files of the previous (ended) run are closed
            self._close_files()
        self.log = open(self.base.parent / "server.log", "a")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        try:
            line = self.proc.stdout.readline()
            assert "serving" in line, line + (self.base.parent / "server.log").read_text()
        except BaseException:
            self.kill()
            raise
        return self

    def client(self, secret: str | None = None, timeout: float = 20.0) -> LeashClient:
        return LeashClient(self.url, secret or self.secret, timeout=timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # server and its workers
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._close_files()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_files()

    def _close_files(self) -> None:
        """Close this run's stdout pipe and log (a restart by :meth:`start` opens new ones)."""
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if getattr(self, "log", None) is not None:
            self.log.close()


def start_queue(server: Server, data_dir: Path, directory: str = "run") -> None:
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), directory)
    with server.client() as c:
        r = c.request("new", arg, att)
    assert r["result"] == "new queue", r


def wait_done(server: Server, n: int, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    st = {}
    with server.client() as c:
        while time.monotonic() < deadline:
            st = c.request("stat")["data"]["stat"]
            if st["images processed"] >= n and st["queue length"] == 0:
                return st
            time.sleep(0.2)
    raise AssertionError(f"not done in time: {st}")


def add_images(base: Path, n: int, start: int = 0, sub: str = "run") -> list[Path]:
    """Hard links ``BASE/<sub>/img_<i>.tif`` of ``BASE/template.tif`` (the ``base`` fixture's)."""
    out = []
    for i in range(start, start + n):
        p = base / sub / f"img_{i:05d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        os.link(base / "template.tif", p)
        out.append(p)
    return out


def new_request(data_dir: Path, directory: tuple[str, ...] = ("run",)) -> tuple[dict, list[bytes]]:
    """The argument and attachments of a ``new`` with the real calibration and mask."""
    cal = json.loads((data_dir / "cal.json").read_text())
    return {"calibration": cal, "directory": list(directory)}, [(data_dir / "AAA_integ.msk").read_bytes()]


def peak_traced_bytes(fn) -> int:
    """The peak of Python's traced allocations while ``fn()`` runs (after a collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
