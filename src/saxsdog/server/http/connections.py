"""Connection limits of the web leash's HTTP server (uvicorn's h11 protocol, guarded).

Idle TCP connections cost the server a file descriptor each and nothing to the client;
about a thousand of them used to exhaust the descriptors of the whole process, which
stopped the ZeroMQ command service as well. :func:`guarded_protocol` makes an HTTP
protocol class that

* keeps at most ``max_connections`` HTTP and WebSocket connections: at the cap a new
  connection closes the *idle* connection that has waited longest (no request in
  progress: connected without a request yet, or kept alive after one); when every
  connection is busy the new one is answered 503 and closed;
* closes a connection whose request headers have not all arrived ``header_timeout``
  seconds after it was opened or after its previous response (slow-header attacks:
  uvicorn's keep-alive timer restarts on every byte received).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("saxsdog.server.http")

__all__ = ["ConnectionGuard", "default_max_connections", "guarded_protocol"]

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 47\r\n"
         b"connection: close\r\n\r\nthe web leash has too many connections: retry\r\n")


def default_max_connections(ceiling: int = 256) -> int:
    """``ceiling``, or a quarter of this process's file descriptor limit if that is lower.

    The rest of the descriptors stay for the workers' pipes, the ledger, images and ZeroMQ.
    """
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        return ceiling
    if soft == resource.RLIM_INFINITY:
        return ceiling
    return max(8, min(ceiling, soft // 4))


class ConnectionGuard:
    """Counts a server's connections and picks which idle one to close at the cap."""

    def __init__(self, max_connections: int, header_timeout: float):
        if max_connections < 1 or header_timeout <= 0:
            raise ValueError(f"need max_connections >= 1 and header_timeout > 0, not {max_connections}, "
                             f"{header_timeout}")
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    def __repr__(self) -> str:
        return (f"<ConnectionGuard max={self.max_connections} refused={self.refused} evicted={self.evicted} "
                f"timed_out={self.timed_out}>")


class _GuardedH11(H11Protocol):
    guard: ConnectionGuard  # set on the subclass made by guarded_protocol()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._idle_since = time.monotonic()
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: Any = None

    # -- idle connections -------------------------------------------------------------
    def _is_idle(self) -> bool:
        """No request in progress (and still an HTTP connection, not a WebSocket)."""
        if self.transport is None or self.transport.is_closing():
            return False
        if self.transport.get_protocol() is not self:
            return False
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._idle_since = time.monotonic()
        self._seen_cycle = self.cycle
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.guard.header_timeout, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport is not None and not self.transport.is_closing() and self._is_idle():
            self.guard.timed_out += 1
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        others = len(self.connections)  # before super() adds this one; WebSockets included
        super().connection_made(transport)
        if others >= self.guard.max_connections:
            idle = [c for c in list(self.connections)
                    if c is not self and isinstance(c, _GuardedH11) and c._is_idle()]
            if idle:
                oldest = min(idle, key=lambda c: c._idle_since)
                self.guard.evicted += 1
                oldest.transport.close()
            else:
                self.guard.refused += 1
                transport.write(_BUSY)
                transport.close()
                return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        # Shut the socket down before asyncio closes it: a close alone sends no FIN while any
        # other process still holds a copy of the descriptor (a forked child), and a browser
        # then keeps the dead connection in its pool and sends the next request into it.
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen_cycle and self._header_timer is not None:
            self._header_timer.cancel()  # a request's headers are complete
            self._header_timer = None

    def on_response_complete(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers get the same deadline
        super().on_response_complete()


def guarded_protocol(max_connections: int, header_timeout: float) -> type[H11Protocol]:
    """An h11 protocol class for uvicorn's ``Config(http=...)`` with these limits.

    The class carries its :class:`ConnectionGuard` as ``.guard`` (counters for tests).
    """
    guard = ConnectionGuard(max_connections, header_timeout)
    return type("GuardedH11Protocol", (_GuardedH11,), {"guard": guard})
