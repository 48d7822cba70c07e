"""The app factory of the web leash: state, guards and routes put together."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..handler import CommandHandler
from .auth import AuthState
from .guards import BodyLimit, HostGuard, allowed_host_names
from .routes import LOGIN_BODY_LIMIT, body_limits, build_routes, not_found
from .websocket import ResultFeed

__all__ = ["WebContext", "create_app"]


@dataclass
class WebContext:
    """What the routes of one app share (``app.state.ctx``)."""

    handler: CommandHandler
    auth: AuthState
    feed: ResultFeed
    basedir: Path
    plotly_path: Path | None
    max_results_per_second: float
    stat_interval: float


def _plotly_js() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package, without importing it."""
    spec = importlib.util.find_spec("plotly")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "package_data" / "plotly.min.js"
        if p.is_file():
            return p
    return None


def create_app(handler: CommandHandler, secret: str | bytes, *, token_ttl: float = 12 * 3600.0,
               code_ttl: float = 60.0, nonce_ttl: float = 60.0, max_body_bytes: int = 64 * 1024 * 1024,
               max_upload_bytes: int = 32 * 1024 * 1024, max_results_per_second: float = 4.0,
               stat_interval: float = 1.0, bind: str | None = "127.0.0.1",
               allowed_hosts: Iterable[str] = (), auth_options: dict[str, Any] | None = None,
               body_seconds: float = 10.0) -> Starlette:
    """The ASGI app of the web leash over ``handler``.

    Parameters
    ----------
    handler
        The command handler shared with the ZeroMQ service.
    secret
        The shared secret (to check login MACs; never sent, never logged).
    token_ttl, code_ttl, nonce_ttl
        Lifetimes of session tokens, launch codes and login challenges (seconds).
    max_body_bytes
        Largest accepted ``/api/command`` body (the login routes accept 4 KiB).
    max_upload_bytes
        Largest accepted mask preview body (a mask file in base64).
    max_results_per_second
        Rate limit of live results per WebSocket.
    stat_interval
        Seconds between ``stat`` messages on the WebSocket.
    bind
        The address the server listens on: with the loopback names and this machine's
        names, the accepted ``Host`` header values (DNS-rebinding protection).
    allowed_hosts
        More accepted ``Host`` names (e.g. the network file's server name).
    auth_options
        Keyword arguments of :class:`~.auth.AuthState` (rate limits).
    body_seconds
        Time a request body may take to arrive, plus 4 s per MiB of its route's limit.

    Returns
    -------
    starlette.applications.Starlette
        The app; ``app.state.auth`` is its :class:`~.auth.AuthState`, ``app.state.feed``
        its :class:`~.websocket.ResultFeed`, ``app.state.ctx`` the :class:`WebContext`.
    """
    auth = AuthState(secret, nonce_ttl=nonce_ttl, code_ttl=code_ttl, token_ttl=token_ttl, **(auth_options or {}))
    feed = ResultFeed()
    handler.listeners.append(feed)
    if handler.session is not None:  # a queue restored before the app was built
        handler.session.queue.add_callback(feed)
    names, any_ip = allowed_host_names(bind, allowed_hosts)
    app = Starlette(routes=build_routes(), exception_handlers={404: not_found}, middleware=[
        Middleware(HostGuard, names=names, any_ip=any_ip),
        Middleware(BodyLimit, limits=body_limits(max_body_bytes, max_upload_bytes), default=LOGIN_BODY_LIMIT,
                   base_seconds=body_seconds),
    ])
    app.state.ctx = WebContext(handler=handler, auth=auth, feed=feed, basedir=handler.basedir,
                               plotly_path=_plotly_js(), max_results_per_second=max_results_per_second,
                               stat_interval=stat_interval)
    app.state.auth = auth
    app.state.feed = feed
    app.state.handler = handler
    return app
