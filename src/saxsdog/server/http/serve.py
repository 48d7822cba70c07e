"""Serving the web leash: uvicorn in a background thread, with connection limits."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from ...protocol.weblogin import DEFAULT_HTTP_PORT
from ..handler import CommandHandler
from .app import create_app
from .connections import default_max_connections, guarded_protocol

__all__ = ["HTTPServerThread", "start_http_server", "WS_MAX_MESSAGE_BYTES"]

#: Largest WebSocket message a client may send (the page sends ``{"type": "auth", "token"}``).
WS_MAX_MESSAGE_BYTES = 64 * 1024


class HTTPServerThread:
    """A uvicorn server running an app in a background thread.

    Parameters
    ----------
    app
        The ASGI app.
    host, port
        Where to listen (``"*"``: all interfaces; port 0: any free one).
    max_connections
        Open HTTP and WebSocket connections at most (default: 256, or a quarter of the file
        descriptor limit if lower); see :mod:`~.connections`.
    header_timeout
        Seconds a connection may take to send a request's headers.

    Attributes
    ----------
    host, port
        Where it listens (the bound port, also when 0 was asked for).
    app
        The ASGI app.
    guard
        The :class:`~.connections.ConnectionGuard` (counters of refused, evicted and timed
        out connections).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = DEFAULT_HTTP_PORT,
                 max_connections: int | None = None, header_timeout: float = 10.0):
        import uvicorn

        self.app = app
        self.host = host = "0.0.0.0" if host == "*" else host  # ZeroMQ's spelling of "all interfaces"
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(addr)
        except OSError:
            self._sock.close()
            raise
        self.port = self._sock.getsockname()[1]
        protocol = guarded_protocol(max_connections or default_max_connections(), header_timeout)
        self.guard = protocol.guard  # type: ignore[attr-defined]
        # log_config=None: uvicorn's records go to the process's handlers (and their repeat filter).
        # ws_max_size: the page only sends a small "auth" message; uvicorn's default (16 MiB per
        # message) would let unauthenticated sockets hold max_connections x 16 MiB.
        config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws_ping_interval=20.0, http=protocol,
                                timeout_keep_alive=5, backlog=128, ws_max_size=WS_MAX_MESSAGE_BYTES)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="saxsdog-http", daemon=True)
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<HTTPServerThread {self.url}>"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> "HTTPServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the HTTP service did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP service did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()


def start_http_server(handler: CommandHandler, secret: str | bytes, host: str = "127.0.0.1",
                      port: int = DEFAULT_HTTP_PORT, *, max_connections: int | None = None,
                      header_timeout: float = 10.0, **app_options: Any) -> HTTPServerThread:
    """Serve the web leash for ``handler`` in a background thread.

    Parameters
    ----------
    handler
        The command handler.
    secret
        The shared secret.
    host
        Address to listen on (loopback by default); also an accepted ``Host`` header.
    port
        TCP port; 0 picks a free one (see ``.port`` of the result).
    max_connections, header_timeout
        Connection limits, see :class:`HTTPServerThread`.
    **app_options
        Passed to :func:`~.app.create_app`.

    Returns
    -------
    HTTPServerThread
        Running; ``.port`` is the bound port, ``.stop()`` ends it, ``.app.state.auth`` is
        its :class:`~.auth.AuthState` (e.g. for launch codes in local-server mode).
    """
    app_options.setdefault("bind", "0.0.0.0" if host == "*" else host)
    app = create_app(handler, secret, **app_options)
    return HTTPServerThread(app, host, port, max_connections=max_connections,
                            header_timeout=header_timeout).start()
