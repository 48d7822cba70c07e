"""The web leash's WebSocket: live results (rate-limited) and ``stat`` every second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...protocol.weblogin import COOKIE_NAME, WS_UNAUTHORIZED
from ..paths import relative_to_base
from .jsonutil import dumps

if TYPE_CHECKING:
    from .app import WebContext

log = logging.getLogger("saxsdog.server.http")

__all__ = ["ResultFeed", "result_message", "live_socket"]


class ResultFeed:
    """Keeps the latest result with curves; registered as a queue callback.

    Called in the queue's dispatcher thread, so it only stores a reference.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seq = 0
        self.latest: Any = None

    def __call__(self, result: Any) -> None:
        try:
            if getattr(result, "curves", None) and getattr(result, "error", None) is None:
                with self._lock:
                    self.latest = result
                    self.seq += 1
        except Exception:  # never disturb the dispatcher
            log.exception("result feed failed")

    def get(self) -> tuple[int, Any]:
        with self._lock:
            return self.seq, self.latest


def result_message(basedir: Path, result: Any) -> dict[str, Any]:
    """The WebSocket message for one result with curves."""
    return {
        "type": "result",
        "filename": relative_to_base(basedir, result.path),
        "frame": result.frame,
        "time": result.image_time,
        "processed_at": result.processed_at,
        "IntegralParameters": result.parameters,
        "timings": result.timings,
        "graphs": [{"kind": g.get("kind"), "conf": g.get("conf"), "columnLabels": g.get("columnLabels"),
                    "array": [np.asarray(a) for a in g.get("array", [])],
                    **({"cake": g["cake"]} if "cake" in g else {})}  # a cake map's small preview
                   for g in result.curves or []],
    }


def _result_text(basedir: Path, result: Any) -> str:
    return dumps(result_message(basedir, result)).decode()


async def _authenticate(ctx: "WebContext", websocket: WebSocket) -> str | None:
    """The session token of this socket (cookie of this page, or a first ``auth`` message)."""
    token = websocket.cookies.get(COOKIE_NAME)
    origin = websocket.headers.get("origin")
    if origin and urlsplit(origin).netloc != websocket.headers.get("host"):
        token = None  # another site's page: its cookie proves nothing
    if ctx.auth.tokens.valid(token) is not None:
        return token
    try:
        first = await asyncio.wait_for(websocket.receive_json(), timeout=5.0)
    except Exception:
        first = None
    token = first.get("token") if isinstance(first, dict) and first.get("type") == "auth" else None
    return token if ctx.auth.tokens.valid(token) is not None else None


async def live_socket(websocket: WebSocket) -> None:
    """``/ws``: after authentication, push new results and ``stat`` until the client leaves."""
    ctx: WebContext = websocket.app.state.ctx
    await websocket.accept()
    token = await _authenticate(ctx, websocket)
    if token is None:
        with contextlib.suppress(Exception):
            await websocket.close(code=WS_UNAUTHORIZED, reason="not logged in")
        return
    gone = asyncio.Event()

    async def drain() -> None:
        try:
            while True:
                msg = await websocket.receive()
                if msg.get("type") == "websocket.disconnect":
                    break
        except Exception:
            pass
        gone.set()

    reader = asyncio.create_task(drain())
    handler, feed, basedir = ctx.handler, ctx.feed, ctx.basedir
    min_gap = 1.0 / max(ctx.max_results_per_second, 0.1)
    last_seq, last_sent, next_stat = -1, 0.0, 0.0
    try:
        await websocket.send_text(dumps({"type": "hello", "basedir": basedir.name}).decode())
        while not gone.is_set():
            now = time.monotonic()
            if ctx.auth.tokens.valid(token) is None:
                await websocket.close(code=WS_UNAUTHORIZED, reason="session expired")
                break
            seq, latest = feed.get()
            if seq != last_seq and latest is not None and now - last_sent >= min_gap:
                msg = await run_in_threadpool(_result_text, basedir, latest)
                await websocket.send_text(msg)
                last_seq, last_sent = seq, now
            if now >= next_stat:
                st = await run_in_threadpool(handler.stat)
                await websocket.send_text(dumps({"type": "stat", "stat": st,
                                                 "running": handler.session is not None}).decode())
                next_stat = now + ctx.stat_interval
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), timeout=min(0.1, min_gap))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    except Exception:
        log.exception("web socket failed")
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
