"""The web leash's freeze after Start queue: workers forked by ``new`` must not keep the page's
HTTP connections open.

On ``e665fb8`` the worker processes forked while ``new`` was answered inherited every socket of
the server, among them the page's keep-alive connections.  When the server later closed such a
connection (idle for the keep-alive timeout) the workers still held it, so no FIN went out: the
browser kept the connection in its pool, sent the next command over it (Read directory, the
History's ``plotdata``) and nobody ever read it.  Once the browser's six connections to the host
were used up that way, every command of the page hung while the WebSocket (another connection)
kept the header "live", and any other client was answered at once.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
import socket
import time

import pytest
from webleash_helpers import add_images, calibration_request, login

pytestmark = [pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc"),
              pytest.mark.slow]  # each waits out the keep-alive timeout


def _tcp_inodes() -> set[str]:
    """Inodes of every TCP socket of this machine (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        inodes.update(line.split()[9] for line in lines if len(line.split()) > 9)
    return inodes


def _tcp_sockets_of(pid: int) -> list[str]:
    tcp = _tcp_inodes()
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in tcp:
            out.append(f"fd {fd} -> {target}")
    return out


def _http(sock: socket.socket, method: str, path: str, port: int, token: str, body: dict | None = None) -> dict:
    """One keep-alive request on ``sock``; returns the JSON answer (the connection stays open)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n")
    sock.sendall(head.encode() + data)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection instead of answering"
        raw += chunk
    header, rest = raw.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in the middle of an answer"
        rest += chunk
    assert header.startswith(b"HTTP/1.1 200"), header
    return json.loads(rest[:length])


def test_idle_page_connections_open_at_new_are_really_closed(server, handler, base, data_dir):
    """Connections open while ``new`` forks the workers (the one carrying ``new`` and an idle
    one) hold no TCP socket in any worker, and are closed for the client (EOF) once the
    server drops them after the keep-alive timeout, so a browser never reuses a dead one."""
    import httpx

    add_images(base, 3)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        token = login(c)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    carrier = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        assert _http(idle, "GET", "/api/session", server.port, token)["ok"] is True
        argument, attachments = calibration_request(data_dir)
        answer = _http(carrier, "POST", "/api/command", server.port, token, {
            "command": "new", "argument": argument,
            "attachments": [base64.b64encode(a).decode() for a in attachments]})
        assert answer["result"] == "new queue", answer
        pids = handler.session.queue.worker_pids()
        assert pids, "no worker processes"
        for pid in pids:
            assert _tcp_sockets_of(pid) == [], f"worker {pid} holds TCP sockets of the server"
        # the server drops idle keep-alive connections after 5 s: the client must see that
        t0 = time.monotonic()
        for sock in (idle, carrier):
            sock.settimeout(max(1.0, 12.0 - (time.monotonic() - t0)))
            try:
                eof = sock.recv(1) == b""
            except TimeoutError:
                eof = False
            assert eof, "an idle connection the server closed is still open for the client (a worker holds it)"
        print(f"idle connections closed for the client {time.monotonic() - t0:.1f} s after new")
    finally:
        idle.close()
        carrier.close()


def test_a_connection_the_server_closes_reaches_the_client_even_while_a_copy_is_held(server):
    """Whatever else holds a copy of a connection's descriptor (here a dup in this process, as a
    forked child would), the server's close reaches the client: it shuts the socket down
    before closing it, so the keep-alive timeout ends the connection for the browser too."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        assert _http(client, "GET", "/api/session", server.port, "no-token") == {"ok": False}
        here = client.getsockname()
        conns = [c for c in list(server._server.server_state.connections)
                 if c.transport is not None and c.transport.get_extra_info("peername") == here]
        assert len(conns) == 1, conns
        copy = os.dup(conns[0].transport.get_extra_info("socket").fileno())
        try:
            client.settimeout(12.0)
            t0 = time.monotonic()
            try:
                eof = client.recv(1) == b""
            except TimeoutError:
                eof = False
            assert eof, "the server's close did not reach the client while a copy of the socket was held"
            print(f"closed for the client after {time.monotonic() - t0:.1f} s")
        finally:
            os.close(copy)
