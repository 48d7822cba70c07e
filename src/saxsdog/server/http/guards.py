"""ASGI guards in front of the web leash's routes: the Host header and request body sizes.

* :class:`HostGuard` refuses requests whose ``Host`` is not a name of this server
  (protection against DNS rebinding: a page of ``attacker.example`` whose name later
  resolves to 127.0.0.1 sends ``Host: attacker.example``).
* :class:`BodyLimit` caps each route's request body *before* it is read: a declared
  ``Content-Length`` over the route's limit is answered 413 at once, and a chunked body
  is counted while it streams in (the app sees :class:`BodyTooLarge` at the limit).
  A body must also arrive in time (10 s plus 4 s per MiB of the route's limit), so a
  client trickling a login body cannot hold a connection busy (408).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("saxsdog.server.http")

__all__ = ["BodyLimit", "BodyTooLarge", "BodyTooSlow", "HostGuard", "allowed_host_names", "host_of_header"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL_NAMES = ("localhost", "localhost.localdomain", "127.0.0.1", "::1")
WILDCARDS = ("", "*", "0.0.0.0", "::")


class BodyTooSlow(Exception):
    """A request body did not arrive within its route's deadline."""

    def __init__(self, seconds: float):
        super().__init__(f"request body too slow: not complete within {seconds:.0f} s")
        self.seconds = seconds


class BodyTooLarge(Exception):
    """A request body grew past its route's limit while it was read."""

    def __init__(self, limit: int):
        super().__init__(f"request too large: the limit of this request is {limit} bytes")
        self.limit = limit


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


async def send_error(send: Send, status: int, message: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON error response (the transports' ``{"result": "Error"}`` shape)."""
    body = json.dumps({"result": "Error", "data": {"Error": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


def host_of_header(value: str) -> str:
    """The host name of a ``Host`` header value, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_host_names(bind: str | None, extra: Iterable[str] = ()) -> tuple[frozenset[str], bool]:
    """The ``Host`` names this server answers to, and whether any IP literal is accepted.

    The bound address, the loopback names, this machine's host names (for a server bound to
    all interfaces or to a routable address) and ``extra`` (e.g. the network file's server
    name). IP literals cannot be rebound, so a server on all interfaces accepts any of them.
    """
    bind = (bind or "").strip().strip("[]").lower()
    names = set(LOCAL_NAMES)
    names.update(host_of_header(e) for e in extra if e)
    wildcard = bind in WILDCARDS
    if bind and not wildcard:
        names.add(bind)
    loopback = bind in LOCAL_NAMES or bind.startswith("127.")
    if not loopback:
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(name.lower().rstrip("."))
    return frozenset(names), wildcard


class HostGuard:
    """Refuse HTTP and WebSocket requests whose ``Host`` is not one of ``names``.

    Parameters
    ----------
    app
        The ASGI app guarded.
    names
        Accepted host names (lower case, no port).
    any_ip
        Accept every IP literal too (a server bound to all interfaces).
    """

    def __init__(self, app: ASGIApp, names: Iterable[str], any_ip: bool = False):
        self.app = app
        self.names = frozenset(n.lower() for n in names)
        self.any_ip = any_ip

    def allowed(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        name = host_of_header(host_header)
        return name in self.names or (self.any_ip and _is_ip(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            if not self.allowed(host):
                log.warning("refused a request for host %r (not a name of this server; add it with "
                            "--allow-host if it is one)", (host or "")[:100])
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": "unknown host"})
                else:
                    await send_error(send, 400, "unknown host name: this server does not answer to "
                                                f"{(host or '')[:100]!r}")
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Cap request bodies per route before they are read.

    Parameters
    ----------
    app
        The ASGI app guarded.
    limits
        Path -> largest accepted body in bytes.
    default
        Limit of every other path.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int = 4096,
                 base_seconds: float = 10.0, seconds_per_mib: float = 4.0):
        self.app = app
        self.limits = dict(limits)
        self.default = default
        self.base_seconds = base_seconds
        self.seconds_per_mib = seconds_per_mib

    def limit_for(self, path: str) -> int:
        return self.limits.get(path, self.default)

    def deadline_for(self, limit: int) -> float:
        """Seconds a body of a route with ``limit`` may take to arrive."""
        return self.base_seconds + self.seconds_per_mib * limit / (1 << 20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await send_error(send, 400, f"bad Content-Length {declared[:40]!r}")
                return
            if too_big:
                await send_error(send, 413, f"request too large: {declared} bytes, the limit of "
                                            f"{scope.get('path')} is {limit} bytes")
                return
        received = 0
        started = False
        complete = False
        allowed = self.deadline_for(limit)
        deadline: float | None = None

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, complete, deadline
            if complete:  # the body is in: later calls wait for the disconnect, unbounded
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + allowed
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTooSlow(allowed) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await send_error(send, 413, f"{exc} ({scope.get('path')})")
        except BodyTooSlow as exc:
            if started:
                raise
            await send_error(send, 408, f"{exc} ({scope.get('path')})")
