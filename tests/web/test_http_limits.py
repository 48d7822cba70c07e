"""No-login attacks on the web leash over real sockets, where the socket matters.

A real ``saxsdogserver`` (subprocess, 256 file descriptors) for idle-connection floods,
large bodies and login floods: the ZeroMQ ``stat`` and a new HTTP request must answer
within 1 s, the server must grow less than 200 MB and its log must stay small. The
connection cap and the header timeout are checked on an HTTP service in this process.
"""

from __future__ import annotations

import resource
import shutil
import socket
import time

import pytest
from http_attacks import (ServerProcess, http_seconds, open_idle, parallel_big_bodies, real_login, stat_seconds,
                          wrong_logins)
from saxsdog.testing import wait_for

from webleash_helpers import require_web

pytest.importorskip("zmq")
require_web()

NOFILE = 256  # the server's descriptor limit: 300 idle connections would exhaust it
MAX_GROWTH_MB = 200


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("attacked")
    base = tmp / "base"
    (base / "run").mkdir(parents=True)
    shutil.copy(shared_data / "buf1_00000.tif", base / "template.tif")
    server = ServerProcess(tmp, base, nofile=NOFILE).start()
    assert wait_for(lambda: stat_seconds(server) < 1.0, 30)
    server.rss0 = server.rss_mb()
    yield server
    print(f"\nserver RSS {server.rss0:.0f} -> {server.rss_mb():.0f} MiB; log {server.log_bytes()} bytes")
    server.stop()


@pytest.mark.slow
def test_idle_connections_stop_neither_transport(attacked):
    log0 = attacked.log_bytes()
    idle = open_idle(attacked.http_port, 300)
    try:
        assert len(idle) == 300
        time.sleep(0.5)  # let the server accept them all
        stat, http = stat_seconds(attacked, timeout=5), http_seconds(attacked, timeout=5)
        print(f"\n300 idle connections: stat {stat:.3f} s, new HTTP request {http:.3f} s")
        assert stat < 1.0 and http < 1.0
        assert real_login(attacked.http_port) == 200
    finally:
        for s in idle:
            s.close()
    grown = attacked.log_bytes() - log0
    assert grown < 20_000, (attacked.log.read_text(errors="replace")[-3000:])
    assert attacked.rss_mb() - attacked.rss0 < MAX_GROWTH_MB


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_parallel_large_login_bodies_are_refused_without_growing_the_server(attacked, chunked):
    t0 = time.monotonic()
    statuses = parallel_big_bodies(attacked.http_port, 3, chunked=chunked)
    took = time.monotonic() - t0
    growth = attacked.rss_mb() - attacked.rss0
    print(f"\n3 x 63 MiB ({'chunked' if chunked else 'declared'}): {statuses} in {took:.2f} s, RSS +{growth:.0f} MiB")
    assert statuses == [413, 413, 413]
    assert growth < MAX_GROWTH_MB
    assert stat_seconds(attacked) < 1.0


@pytest.mark.slow
def test_login_flood_is_refused_and_does_not_flood_the_log(attacked):
    log0 = attacked.log_bytes()
    codes = wrong_logins(attacked.http_port, 400)
    print(f"\n400 wrong logins: {dict(codes)}")
    assert codes[401] <= 20 and codes[429] + codes["challenge 429"] >= 380
    assert attacked.log_bytes() - log0 < 20_000
    assert stat_seconds(attacked) < 1.0


# --------------------------------------------------------------------------- in this process

@pytest.mark.slow
def test_at_the_cap_the_longest_idle_connection_makes_room(server_factory):
    import httpx

    srv = server_factory(max_connections=8)
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(20)]
    try:
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            t0 = time.monotonic()
            assert c.get("/api/session").json() == {"ok": False}
            assert time.monotonic() - t0 < 1.0
        assert wait_for(lambda: srv.guard.evicted >= 13, 5), srv.guard
        closed = 0
        for s in idle:
            s.settimeout(0.05)
            try:
                closed += s.recv(1) == b""
            except (TimeoutError, OSError):
                pass
        assert closed >= 13  # the oldest ones were closed by the server
    finally:
        for s in idle:
            s.close()


@pytest.mark.slow
def test_slow_headers_are_cut_off(server_factory):
    srv = server_factory(header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        t0 = time.monotonic()
        closed_after = None
        request = f"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nX-Slow: " + "a" * 100
        try:
            for ch in request:  # one byte every 0.1 s: uvicorn's keep-alive timer alone never fires
                s.sendall(ch.encode())
                s.settimeout(0.1)
                try:
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - t0
                        break
                except TimeoutError:
                    pass
        except OSError:
            closed_after = time.monotonic() - t0
    assert closed_after is not None and 0.9 < closed_after < 3.0, closed_after
    assert srv.guard.timed_out >= 1
    # a keep-alive connection gets the same deadline for its next request's headers
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(f"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        assert b"200 OK" in s.recv(4096)
        s.sendall(b"GET /api/session HTTP/1.1\r\n")
        s.settimeout(5)
        t0 = time.monotonic()
        while s.recv(4096):
            pass
        assert 0.5 < time.monotonic() - t0 < 3.0


def test_the_repeat_filter_collapses_identical_lines():
    import logging

    from saxsdog.server.http import RepeatFilter

    flt = RepeatFilter(window=0.3, burst=3)
    rec = lambda i: logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "accept failed: %s", (i,), None)  # noqa: E731
    passed = [flt.filter(rec(i)) for i in range(1000)]
    assert passed[:3] == [True] * 3 and not any(passed[3:])
    time.sleep(0.35)
    later = rec(1000)
    assert flt.filter(later) and "997 more like this" in later.getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "another message", (), None)
    assert flt.filter(other)


def test_default_connection_cap_leaves_descriptors_for_the_rest():
    from saxsdog.server.http.connections import default_max_connections

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = default_max_connections()
    assert 8 <= cap <= 256 and (soft == resource.RLIM_INFINITY or cap <= max(8, soft // 4))


def test_a_large_websocket_message_closes_the_socket(server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + "/ws"
    with connect(url, open_timeout=10, max_size=None) as ws:
        ws.send("x" * (1 << 20))  # before any login: uvicorn's default would buffer up to 16 MiB
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # message too big


@pytest.mark.slow
def test_when_every_connection_is_busy_a_new_one_is_told_so(server_factory):
    srv = server_factory(max_connections=4)
    head = (f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n").encode()
    busy = []
    try:
        for _ in range(4):  # requests in progress: their bodies never come
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(head)
            busy.append(s)
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503") and b"too many connections" in reply
        assert srv.guard.refused >= 1
    finally:
        for s in busy:
            s.close()
