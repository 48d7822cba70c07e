"""Attacks on the web leash that need no login, against the app in this process (ASGI).

Body caps per route, login and challenge rate limits per client address, and the Host
header check. The attacks that need a real socket (idle connections, slow headers, the
server's memory) are in ``test_http_limits.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from webleash_helpers import SECRET, require_web

from saxsdog.protocol.signing import compute_mac

require_web()
import httpx  # noqa: E402

from saxsdog.server.http import AuthState, PendingChallenges, RateLimiter, TooManyRequests, create_app  # noqa: E402

MiB = 1 << 20


def run(coro):
    return asyncio.run(coro)


def asgi_client(app, address: str = "127.0.0.1", host: str = "127.0.0.1") -> httpx.AsyncClient:
    """An in-process client of ``app`` that connects from ``address`` and names ``host``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", timeout=30)


async def login(c: httpx.AsyncClient, secret: str = SECRET) -> httpx.Response:
    r = await c.get("/api/challenge")
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    return await c.post("/api/login", json={"nonce": nonce, "mac": compute_mac(secret, nonce)})


class CountingBody:
    """An async request body of ``size`` bytes that counts how much the server pulled."""

    def __init__(self, size: int, chunk: int = 64 * 1024):
        self.size, self.chunk, self.pulled = size, chunk, 0

    async def __aiter__(self):
        while self.pulled < self.size:
            n = min(self.chunk, self.size - self.pulled)
            self.pulled += n
            yield b"{" * n


@pytest.fixture
def app(handler):
    return create_app(handler, SECRET, bind="127.0.0.1", allowed_hosts=["beamline-pc.example"])


# --------------------------------------------------------------------------- body caps

def test_a_large_login_body_is_refused_before_it_is_read(app):
    async def main():
        async with asgi_client(app) as c:
            body = CountingBody(63 * MiB)
            r = await c.post("/api/login", content=body, headers={"Content-Length": str(63 * MiB)})
            assert r.status_code == 413
            assert "4096" in r.json()["data"]["Error"] and "/api/login" in r.json()["data"]["Error"]
            assert body.pulled <= 64 * 1024  # refused from the declared length
            chunked = CountingBody(63 * MiB)  # no Content-Length: counted while streaming
            r = await c.post("/api/login", content=chunked)
            assert r.status_code == 413 and "4096" in r.json()["data"]["Error"]
            assert chunked.pulled <= 128 * 1024
            for path in ("/api/launch", "/api/logout", "/api/session"):
                r = await c.post(path, content=b"x" * 5000)
                assert r.status_code == 413, path
            # a normal login still works, and so do bodies below a route's own limit
            assert (await login(c)).status_code == 200
            r = await c.post("/api/validate", json={"calibration": {"Title": "x" * 500_000}})
            assert r.status_code == 200
            r = await c.post("/api/validate", content=b"x" * (2 * MiB))
            assert r.status_code == 413
    run(main())


def test_command_bodies_up_to_the_configured_limit(handler):
    app = create_app(handler, SECRET, max_body_bytes=100_000)

    async def main():
        async with asgi_client(app) as c:
            assert (await login(c)).status_code == 200
            ok = await c.post("/api/command", json={"command": "stat", "attachments": ["QUFB" * 20_000]})
            assert ok.status_code == 200, ok.text
            r = await c.post("/api/command", json={"command": "stat", "attachments": ["QUFB" * 30_000]})
            assert r.status_code == 413 and "100000" in r.json()["data"]["Error"]
            body = CountingBody(10 * MiB)
            r = await c.post("/api/command", content=body)
            assert r.status_code == 413 and body.pulled <= 200_000
    run(main())


@pytest.mark.slow
def test_a_trickled_login_body_is_cut_off(handler):
    app = create_app(handler, SECRET, body_seconds=0.5)

    async def trickle():
        for _ in range(100):
            yield b" "
            await asyncio.sleep(0.05)

    async def main():
        async with asgi_client(app) as c:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await c.post("/api/login", content=trickle(), headers={"Content-Length": "100"})
            took = loop.time() - t0
            assert r.status_code == 408 and "too slow" in r.json()["data"]["Error"]
            assert 0.4 < took < 2.0, took
            assert (await login(c)).status_code == 200  # a body that arrives at once is fine
    run(main())


# --------------------------------------------------------------------------- login rate limit

def test_wrong_logins_are_rate_limited_per_address_with_back_off(app):
    async def main():
        async with asgi_client(app, "10.0.0.66") as attacker, asgi_client(app, "10.0.0.7") as user:
            codes = []
            for _ in range(40):
                r = await login(attacker, secret="guess")
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert "too many failed logins" in r.json()["data"]["Error"]
            assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
            # the right secret from the blocked address waits too: no guessing during the back-off
            r = await login(attacker)
            assert r.status_code == 429
            # another address is not affected
            assert (await login(user)).status_code == 200
            # launch codes share the limit
            r = await attacker.post("/api/launch", json={"nonce": "x", "mac": "y"})
            assert r.status_code == 429
    run(main())


def test_rate_limiter_back_off_doubles_and_forgives():
    rl = RateLimiter(burst=2, per_second=10.0, max_backoff=5.0)
    assert rl.spend("a") == 0 and rl.spend("a") == 0
    first = rl.spend("a")
    assert 0 < first <= 0.11
    assert rl.wait("a") > 0 and rl.wait("b") == 0
    rl.reset("a")
    assert rl.wait("a") == 0 and rl.spend("a") == 0
    rl2 = RateLimiter(burst=1, per_second=100.0, max_backoff=1.0)
    rl2.spend("x")
    waits = []
    for _ in range(5):
        w = rl2.spend("x")
        waits.append(w)
        rl2._buckets["x"].blocked_until = 0.0  # as if the wait had passed, the bucket still empty
        rl2._buckets["x"].tokens = 0.0
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0] and max(waits) <= 1.0


# --------------------------------------------------------------------------- challenge flood

def test_a_challenge_flood_from_one_address_cannot_stop_a_real_login(handler):
    # A small global pool and no request rate limit: only the per-address bound protects the user.
    app = create_app(handler, SECRET, auth_options={"max_challenges": 100, "challenge_burst": 100_000,
                                                    "challenges_per_client": 16})

    async def main():
        async with asgi_client(app, "10.0.0.66") as attacker, asgi_client(app, "10.0.0.7") as user:
            nonce = (await user.get("/api/challenge")).json()["nonce"]
            for _ in range(500):
                r = await attacker.get("/api/challenge")
                assert r.status_code == 200
            assert len(app.state.auth.nonces) <= 17
            r = await user.post("/api/login", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)})
            assert r.status_code == 200, r.text
    run(main())


def test_challenge_requests_are_rate_limited(app):
    async def main():
        async with asgi_client(app, "10.0.0.66") as attacker, asgi_client(app, "10.0.0.7") as user:
            codes = [(await attacker.get("/api/challenge")).status_code for _ in range(100)]
            assert codes.count(200) >= 60 and codes[-1] == 429
            r = await attacker.get("/api/challenge")
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert (await login(user)).status_code == 200
    run(main())


def test_pending_challenges_are_bounded_per_client_and_never_evicted_by_others():
    pc = PendingChallenges(ttl=60, per_client=4, limit=50)
    mine = [pc.issue("user")[0] for _ in range(3)]
    for _ in range(20_000):
        pc.issue("attacker")
    assert len(pc) == 3 + 4
    many = [f"10.1.{i // 250}.{i % 250}" for i in range(200)]
    with pytest.raises(TooManyRequests):
        for addr in many:
            pc.issue(addr)
    assert all(pc.consume(n) for n in mine)
    assert not pc.consume(mine[0])  # single use


def test_auth_state_repr_hides_the_secret():
    assert SECRET not in repr(AuthState(SECRET))


# --------------------------------------------------------------------------- Host header

def test_requests_for_other_host_names_are_refused(app):
    async def main():
        for host in ("127.0.0.1", "localhost", "127.0.0.1:7780", "localhost:7780", "[::1]:7780",
                     "beamline-pc.example", "BEAMLINE-PC.example:7780"):
            async with asgi_client(app, host=host) as c:
                r = await c.get("/api/session")
                assert r.status_code == 200, (host, r.text)
        for host in ("attacker.example", "attacker.example:7780", "127.0.0.1.attacker.example",
                     "10.0.0.5", "localhost.attacker.example"):
            async with asgi_client(app, host=host) as c:
                r = await c.get("/")
                assert r.status_code == 400, host
                assert "unknown host name" in r.json()["data"]["Error"]
                assert (await c.get("/api/challenge")).status_code == 400
        async with asgi_client(app) as c:  # no Host header at all
            r = await c.get("/api/session", headers={"Host": ""})
            assert r.status_code == 400
    run(main())


def test_a_server_on_all_interfaces_accepts_ip_literals_and_its_names(handler):
    import socket

    app = create_app(handler, SECRET, bind="0.0.0.0")

    async def main():
        for host in ("10.0.0.5:7780", "[fe80::1]:7780", socket.gethostname()):
            async with asgi_client(app, host=host) as c:
                assert (await c.get("/api/session")).status_code == 200, host
        async with asgi_client(app, host="rebound.attacker.example") as c:
            assert (await c.get("/api/session")).status_code == 400
    run(main())


def _ws_handshake_status(port: int, host: str) -> str:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        return s.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def test_a_websocket_for_another_host_is_refused(server):
    assert " 403 " in _ws_handshake_status(server.port, "attacker.example:80")
    assert " 101 " in _ws_handshake_status(server.port, f"127.0.0.1:{server.port}")
