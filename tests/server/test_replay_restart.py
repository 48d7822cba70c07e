"""A request captured before a server restart is refused after it (the nonces are persisted)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import zmq

from saxsdog.protocol.messages import decode_response, encode_request
from saxsdog.protocol.signing import AuthError, PersistentReplayCache, sign_request

from server_helpers import Server


def test_nonces_survive_a_new_cache_on_the_same_file(tmp_path):
    path = tmp_path / "state" / "nonces.sqlite"
    now = time.time()
    cache = PersistentReplayCache(path, window=900)
    cache.remember("a" * 32, now, now)
    cache.remember("b" * 32, now - 1000, now - 950)  # expires at now - 100
    cache.close()
    again = PersistentReplayCache(path, window=900)
    with pytest.raises(AuthError, match="replayed"):
        again.remember("a" * 32, now, now + 1)
    again.remember("b" * 32, now, now + 1)  # its window had passed: dropped on load, no false refusal
    assert len(again) == 2


def test_an_unreadable_record_refuses_requests_signed_before_the_start(tmp_path):
    path = tmp_path / "nonces.sqlite"
    path.write_bytes(os.urandom(10_000))
    start = time.time()
    cache = PersistentReplayCache(path, window=900, now=start)
    assert cache.not_before == start and list(tmp_path.glob("nonces.sqlite.corrupt-*"))
    with pytest.raises(AuthError, match="signed before the server started"):
        cache.remember("c" * 32, start - 5, start)
    cache.remember("d" * 32, start + 0.1, start + 0.2)


def _send(server: Server, frames: list[bytes]) -> dict:
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 20000)
    s.connect(server.url)
    try:
        s.send_multipart(frames)
        return decode_response(s.recv_multipart())
    finally:
        s.close(0)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
@pytest.mark.slow
def test_a_captured_new_or_abort_is_refused_after_a_restart(tmp_path, data_dir, stop):
    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    server = Server(tmp_path, base, ["--rescan", "0"]).start()
    captured = {
        "abort": encode_request(sign_request("abort", secret=server.secret)),
        "new": encode_request(sign_request("new", {"calibration": {}, "directory": ["run"]},
                                           secret=server.secret)),
        "stat": encode_request(sign_request("stat", secret=server.secret)),
    }
    try:
        for frames in captured.values():  # authentic: accepted (the command itself may fail)
            r = _send(server, frames)
            assert "replay" not in r.get("data", {}).get("Error", "") and "refused" not in str(r), r
    finally:
        if stop == "sigterm":
            server.stop()
        else:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            server.log.close()
    server.start()
    try:
        for name, frames in captured.items():
            r = _send(server, frames)
            assert r["result"] == "Error" and "replayed" in str(r), (name, r)
        with server.client() as c:  # fresh requests are served
            assert c.request("stat")["result"] == "stat"
    finally:
        server.stop()
