"""A real saxsdogserver holds a plain REQ client's reply while its command runs on a worker
thread: the client gets the command's own answer (never "accepted"), other clients are
served meanwhile, and SIGTERM still stops the server, answering the client that waits."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import zmq

from saxsdog.protocol.client import build_new_request
from saxsdog.protocol.signing import sign_request

from server_helpers import Server

pytestmark = pytest.mark.slow  # real saxsdogserver processes

#: saxsdogserver, with a calibration build that waits while the file HOLD exists (a slow
#: build, as a large calibration or a cold start makes it, but as long as the test wants).
SLOW_SERVER = """
import os, sys, time
from pathlib import Path
from saxsdog.server import session

hold, entered = Path(sys.argv[1]), Path(sys.argv[2])
real = session.Calibration

def slow_calibration(*args, **kwargs):
    with open(entered, "a") as fh:
        fh.write("build\\n")
    deadline = time.monotonic() + 120
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return real(*args, **kwargs)

session.Calibration = slow_calibration
from saxsdog.cli.server import main
sys.exit(main(sys.argv[3:]))
"""


class Plain:
    """A bare REQ socket speaking the original manual's protocol (signed JSON, one answer)."""

    def __init__(self, url: str, secret: str):
        self.secret = secret
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)

    def send(self, command: str, argument=None, attachments=()) -> None:
        env = sign_request(command, argument, secret=self.secret, attachments=list(attachments))
        self.sock.send_multipart([json.dumps(env).encode("utf-8"), *attachments])

    def answer(self, timeout: float) -> dict | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return json.loads(self.sock.recv_multipart()[0])

    def close(self) -> None:
        self.sock.close(0)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def slow_server(tmp_path):
    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    hold, entered = tmp_path / "hold", tmp_path / "entered"
    srv = Server(tmp_path, base, ["--rescan", "0"])
    srv.args = [sys.executable, "-c", SLOW_SERVER, str(hold), str(entered), *srv.args[3:]]
    srv.start()
    yield srv, hold, entered
    hold.unlink(missing_ok=True)
    srv.stop()


def _builds(entered: Path) -> int:
    return len(entered.read_text().splitlines()) if entered.exists() else 0


def _stat_is_fast(srv: Server, command: str) -> None:
    with srv.client(timeout=5) as c:
        for _ in range(3):
            t0 = time.monotonic()
            stat = c.request("stat")
            assert stat["result"] == "stat" and time.monotonic() - t0 < 1.0
            assert stat["data"]["stat"]["job"]["command"] == command
            assert stat["data"]["stat"]["job"]["state"] == "running"


def test_a_plain_client_gets_new_queue_and_queue_closed_from_a_real_server(slow_server, data_dir):
    srv, hold, entered = slow_server
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    plain = Plain(srv.url, srv.secret)
    try:
        hold.touch()
        plain.send("new", arg, att)
        _wait_for(lambda: _builds(entered) == 1, 30, "the build never started")
        assert plain.answer(timeout=1.5) is None  # no "accepted" while it builds
        _stat_is_fast(srv, "new")
        hold.unlink()
        resp = plain.answer(timeout=60)
        assert resp is not None and resp["result"] == "new queue", resp
        for i in range(8):  # a burst of images, then close on the same plain connection
            (srv.base / "run" / f"burst_{i:05d}.tif").write_bytes((data_dir / "buf1_00000.tif").read_bytes())
        plain.send("close")
        resp = plain.answer(timeout=60)
        assert resp is not None and resp["result"] == "queue closed", resp
    finally:
        plain.close()


def test_sigterm_with_a_reply_pending_answers_the_client_and_stops(slow_server, data_dir):
    srv, hold, entered = slow_server
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    plain, leaving = Plain(srv.url, srv.secret), Plain(srv.url, srv.secret)
    try:
        hold.touch()
        leaving.send("new", arg, att)  # a client that leaves while its command runs
        _wait_for(lambda: _builds(entered) == 1, 30, "the build never started")
        leaving.close()
        plain.send("new", arg, att)  # waits behind the first, on the command worker
        _stat_is_fast(srv, "new")
        srv.proc.send_signal(signal.SIGTERM)
        resp = plain.answer(timeout=15)  # answered although its command never ran
        assert resp is not None and resp["result"] == "Error", resp
        assert "shutting down" in resp["data"]["Error"]
        hold.unlink()  # the build in progress may end now; the server stops after it
        t0 = time.monotonic()
        assert srv.proc.wait(30) == 0
        assert time.monotonic() - t0 < 30
        assert "saxsdogserver: stopped" in srv.proc.stdout.read()
    finally:
        plain.close()
    log = (srv.base.parent / "server.log").read_text()
    assert "Traceback" not in log, log
