"""Oversized ZeroMQ requests from a client without the secret are refused while they arrive.

A plain REP socket holds a whole multipart message in memory before the application sees
its first frame; the command service parses the frames itself and checks each header.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import psutil
import pytest
import zmq

from saxsdog.protocol.messages import decode_response, encode_request
from saxsdog.protocol.signing import sign_request
from saxsdog.server.handler import error_response
from saxsdog.server.zmq_service import CommandService

from server_helpers import Server

MiB = 1 << 20


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _stat_time(server: Server) -> float:
    t0 = time.monotonic()
    with server.client(timeout=5) as c:
        assert c.request("stat")["result"] in ("stat", "Error")
    return time.monotonic() - t0


def _flood(url: str, frames: int, frame_bytes: int, results: list, wait_ms: int = 60_000) -> None:
    """One REQ client sending ``frames`` frames of ``frame_bytes`` (one buffer, sent zero-copy)."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(url)
    try:
        chunk = memoryview(bytearray(frame_bytes))
        for i in range(frames):
            s.send(chunk, flags=zmq.SNDMORE if i < frames - 1 else 0, copy=False)
        if s.poll(wait_ms):
            results.append(decode_response(s.recv_multipart()))
        else:
            results.append(None)
    finally:
        s.close(0)


@pytest.fixture
def server(tmp_path):
    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    srv = Server(tmp_path, base, ["--rescan", "0"]).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("frames,frame_bytes", [(16, 250 * MiB), (40, 60 * MiB)],
                         ids=["16x250MiB", "40x60MiB"])
@pytest.mark.slow
def test_an_oversized_multipart_request_is_refused_while_it_arrives(server, frames, frame_bytes):
    pid = server.proc.pid
    assert _stat_time(server) < 1.0
    before = _rss(pid)
    peak = [before]
    results: list = []
    sender = threading.Thread(target=_flood, args=(server.url, frames, frame_bytes, results, 5000))
    sender.start()
    slowest = 0.0
    while sender.is_alive():
        peak[0] = max(peak[0], _rss(pid))
        slowest = max(slowest, _stat_time(server))  # the service keeps answering meanwhile
        time.sleep(0.05)
    sender.join()
    after = _rss(pid)
    growth = (max(peak[0], after) - before) / MiB
    print(f"{frames}x{frame_bytes // MiB} MiB: RSS growth {growth:.0f} MiB, slowest stat {slowest:.2f} s")
    # far beyond the limit: refused at the first frame over it, the connection closed unread
    assert results == [None]
    assert "request too large" in (server.base.parent / "server.log").read_text()
    assert growth < 200, f"the server grew by {growth:.0f} MiB"
    assert slowest < 1.0
    assert _stat_time(server) < 1.0


@pytest.mark.slow
def test_a_request_somewhat_over_the_limit_is_answered_with_an_error(server):
    results: list = []
    _flood(server.url, 3, 40 * MiB, results)  # 120 MiB, limit 64 MiB: read on and answered
    assert results[0]["result"] == "Error" and "too large" in results[0]["data"]["Error"]


@pytest.mark.slow
def test_parallel_requests_just_under_the_limit_do_not_add_up(server):
    pid = server.proc.pid
    before = _rss(pid)
    peak = before
    results: list = []
    senders = [threading.Thread(target=_flood, args=(server.url, 1, 63 * MiB, results)) for _ in range(4)]
    for t in senders:
        t.start()
    while any(t.is_alive() for t in senders):
        peak = max(peak, _rss(pid))
        time.sleep(0.02)
    growth = (peak - before) / MiB
    print(f"4 parallel 63 MiB requests: RSS growth {growth:.0f} MiB")
    assert len(results) == 4 and all(r is not None and r["result"] == "Error" for r in results)
    assert growth < 200
    assert _stat_time(server) < 1.0


@pytest.mark.slow
def test_too_many_frames_are_refused(server):
    results: list = []
    _flood(server.url, 1000, 10, results)
    assert results[0]["result"] == "Error" and "frames" in results[0]["data"]["Error"]
    assert _stat_time(server) < 1.0


def test_a_request_at_the_limit_is_still_served(tmp_path):
    class Handler:
        def execute(self, command, argument, attachments):
            return error_response(f"{command}: {[len(a) for a in attachments]}")

    secret = "k" * 48
    svc = CommandService(Handler(), secret, bind="tcp://127.0.0.1:0", max_bytes=4 * MiB)
    t = threading.Thread(target=svc.serve_forever, daemon=True)
    t.start()
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(svc.endpoint)
    try:
        atts = [os.urandom(3 * MiB), os.urandom(200)]
        s.send_multipart(encode_request(sign_request("stat", secret=secret, attachments=atts), atts))
        assert s.poll(10_000)
        r = decode_response(s.recv_multipart())
        assert r["data"]["Error"] == f"stat: {[3 * MiB, 200]}"
    finally:
        s.close(0)
        svc.stop()
        t.join(5)


@pytest.mark.slow
def test_garbage_and_idle_connections_do_not_stop_the_service(tmp_path):
    class Handler:
        def execute(self, command, argument, attachments):
            return error_response("ok")

    secret = "k" * 48
    svc = CommandService(Handler(), secret, bind="tcp://127.0.0.1:0", max_connections=20)
    t = threading.Thread(target=svc.serve_forever, daemon=True)
    t.start()
    host, port = svc.endpoint.rsplit("/", 1)[1].rsplit(":", 1)
    raw = []
    try:
        for i in range(40):  # beyond max_connections: those are closed at once
            c = socket.create_connection((host, int(port)))
            if i % 2:
                c.sendall(b"GET / HTTP/1.1\r\n\r\n")
            raw.append(c)
        time.sleep(0.3)
        s = zmq.Context.instance().socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        for c in raw:
            c.close()
        raw.clear()
        time.sleep(0.3)
        s.connect(svc.endpoint)
        s.send_multipart(encode_request(sign_request("stat", secret=secret)))
        assert s.poll(5000), "the service stopped answering"
        assert decode_response(s.recv_multipart())["data"]["Error"] == "ok"
        s.close(0)
    finally:
        for c in raw:
            c.close()
        svc.stop()
        t.join(5)


@pytest.mark.slow
def test_stat_answers_while_idle_http_connections_pile_up(tmp_path, data_dir):
    """~1100 idle HTTP connections under a common 1024-file soft limit: ZeroMQ keeps answering."""
    import resource
    import subprocess

    from saxsdog.testing import free_port

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit {hard} is too small for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192, hard))
    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    http_port = free_port()
    srv = Server(tmp_path, base, ["--rescan", "0"])
    srv.args = [a for a in srv.args if a != "--no-http"] + ["--http-port", str(http_port)]
    popen = subprocess.Popen

    def small_limit():  # what many systems give a service by default
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    subprocess.Popen = lambda *a, **kw: popen(*a, preexec_fn=small_limit, **kw)  # type: ignore[misc]
    try:
        srv.start()
    finally:
        subprocess.Popen = popen
    idle = []
    try:
        for _ in range(1100):
            try:
                idle.append(socket.create_connection(("127.0.0.1", http_port), timeout=2))
            except OSError:
                break
        time.sleep(1.0)
        times = [_stat_time(srv) for _ in range(5)]
        print(f"{len(idle)} idle HTTP connections: slowest stat {max(times):.3f} s")
        assert max(times) < 1.0
        assert srv.proc.poll() is None
    finally:
        for c in idle:
            c.close()
        srv.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
