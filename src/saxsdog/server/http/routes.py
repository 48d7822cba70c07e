"""The web leash's HTTP routes: public page and login, then the authenticated API.

Every route is a thin layer: parse and check the body, call the command handler or a
helper of the page (validation, converters, mask preview) in a worker thread, answer JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from ...errors import SaxsdogError
from ...protocol.weblogin import COOKIE_NAME
from ..paths import PathOutsideBase
from .auth import TooManyRequests, client_key
from .guards import BodyTooLarge, BodyTooSlow
from .jsonutil import dumps
from .websocket import live_socket

if TYPE_CHECKING:
    from .app import WebContext

log = logging.getLogger("saxsdog.server.http")

__all__ = ["STATIC_DIR", "build_routes", "LOGIN_BODY_LIMIT"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: Largest body of the login routes: ``{"nonce", "mac"}`` or ``{"code"}`` is ~150 bytes.
LOGIN_BODY_LIMIT = 4096

Endpoint = Callable[[Request], Awaitable[Response]]


class SafeJSON(JSONResponse):
    """A JSON response of :func:`~saxsdog.server.http.jsonutil.jsonable` content."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def err(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return SafeJSON({"result": "Error", "data": {"Error": message}}, status_code=status, headers=headers)


class HTTPFail(Exception):
    """Answer ``status`` with ``message`` (raised by body parsers and checks)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def ctx_of(conn: HTTPConnection) -> "WebContext":
    return conn.app.state.ctx


def client_of(conn: HTTPConnection) -> str:
    return client_key(conn.client.host if conn.client else None)


def token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return conn.cookies.get(COOKIE_NAME)


def same_origin(request: Request) -> bool:
    """Cookie-authenticated writes must come from this page (a bearer token cannot be forged)."""
    if request.headers.get("authorization", "")[:7].lower() == "bearer ":
        return True
    origin = request.headers.get("origin")
    return not origin or urlsplit(origin).netloc == request.headers.get("host")


async def read_json(request: Request) -> Any:
    """The body as JSON; its size is capped per route by :class:`~.guards.BodyLimit`."""
    chunks = []
    async for chunk in request.stream():
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPFail(400, f"the request body is not JSON: {exc}") from None


def endpoint(fn: Endpoint, public: bool = False) -> Endpoint:
    """``fn`` behind the session check (unless ``public``), with errors mapped to JSON answers."""
    async def wrapped(request: Request) -> Response:
        try:
            if not public:
                if ctx_of(request).auth.tokens.valid(token_of(request)) is None:
                    return err(401, "not logged in (or the session expired): log in with the shared secret")
                if request.method == "POST" and not same_origin(request):
                    return err(403, "cross-origin request refused")
            return await fn(request)
        except HTTPFail as exc:
            return err(exc.status, exc.message)
        except BodyTooLarge as exc:
            return err(413, f"{exc} ({request.url.path})", headers={"Connection": "close"})
        except BodyTooSlow as exc:
            return err(408, f"{exc} ({request.url.path})", headers={"Connection": "close"})
        except TooManyRequests as exc:
            return err(429, str(exc), headers={"Retry-After": str(int(exc.retry_after + 0.999))})
        except PathOutsideBase as exc:
            return err(403, str(exc))
        except SaxsdogError as exc:
            return err(400, str(exc))
        except ValueError as exc:
            return err(400, str(exc))
        except Exception as exc:
            log.exception("request %s failed", request.url.path)
            return err(500, f"internal error: {type(exc).__name__}")
    return wrapped


# --------------------------------------------------------------------------- public routes

async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                   "style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                                   "script-src 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


async def plotly(request: Request) -> Response:
    path = ctx_of(request).plotly_path
    if path is None:
        return Response("/* plotly is not installed: pip install plotly */\n", media_type="text/javascript",
                        status_code=404)
    return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


async def challenge(request: Request) -> Response:
    return SafeJSON(ctx_of(request).auth.challenge(client_of(request)), headers={"Cache-Control": "no-store"})


def _check_login_wait(request: Request) -> str:
    client = client_of(request)
    wait = ctx_of(request).auth.login_wait(client)
    if wait > 0:
        raise TooManyRequests(f"too many failed logins from {client}: wait {wait:.0f} s", wait)
    return client


def _failed(request: Request, client: str, message: str) -> Response:
    wait = ctx_of(request).auth.login_failed(client)
    if wait > 0:
        raise TooManyRequests(f"{message}; too many failed logins from {client}: wait {wait:.0f} s", wait)
    return err(401, message)


def login_response(token: str, ttl: float) -> Response:
    resp = SafeJSON({"token": token, "expires_in": ttl})
    resp.set_cookie(COOKIE_NAME, token, max_age=int(ttl), httponly=True, samesite="strict", path="/")
    return resp


async def login(request: Request) -> Response:
    auth = ctx_of(request).auth
    client = _check_login_wait(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        return err(400, "login needs {nonce, mac} or {code}")
    if "code" in body:
        ok = auth.codes.consume(body.get("code"))
        how = "launch code"
    else:
        ok = auth.check_mac(body.get("nonce"), body.get("mac"))
        how = "shared secret"
    if not ok:
        log.warning("refused web leash login from %s (%s)", client, how)
        return _failed(request, client, "login refused: wrong secret, or the challenge/launch code was used "
                                        "or expired")
    auth.login_succeeded(client)
    log.info("web leash login from %s (%s)", client, how)
    return login_response(*auth.new_token())


async def launch(request: Request) -> Response:
    auth = ctx_of(request).auth
    client = _check_login_wait(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not auth.check_mac(body.get("nonce"), body.get("mac")):
        log.warning("refused a launch code request from %s", client)
        return _failed(request, client, "launch refused: wrong secret, or the challenge was used or expired")
    auth.login_succeeded(client)
    return SafeJSON({"code": auth.new_launch_code(), "expires_in": auth.codes.ttl})


async def session(request: Request) -> Response:
    ctx = ctx_of(request)
    left = ctx.auth.tokens.valid(token_of(request))
    if left is None:  # public, so that a page without a session gets no error
        return SafeJSON({"ok": False}, headers={"Cache-Control": "no-store"})
    return SafeJSON({"ok": True, "expires_in": left, "basedir": ctx.basedir.name},
                    headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- authenticated routes

async def logout(request: Request) -> Response:
    ctx_of(request).auth.tokens.revoke(token_of(request))
    resp = SafeJSON({"ok": True})
    resp.delete_cookie(COOKIE_NAME, path="/")
    return resp


async def command(request: Request) -> Response:
    """``/api/command``: one command through the handler, which checks it and its argument as
    for the ZeroMQ transport (there is no envelope: the session cookie authenticates)."""
    handler = ctx_of(request).handler
    body = await read_json(request)
    if not isinstance(body, dict) or "command" not in body:
        return err(400, "expected {\"command\": NAME, \"argument\": {...}, \"attachments\": [base64, ...]}")
    attachments = decode_attachments(body.get("attachments"))
    response = await run_in_threadpool(handler.execute, body["command"], body.get("argument"), attachments, None)
    if response.get("result") != "Error":
        log.info("web command %s", body["command"])
    return SafeJSON(response)


def decode_attachments(raw: Any) -> list[bytes]:
    if not raw:
        return []
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise HTTPFail(400, "attachments must be a list of base64 strings")
    try:
        return [base64.b64decode(a, validate=True) for a in raw]
    except (binascii.Error, ValueError):
        raise HTTPFail(400, "an attachment is not valid base64") from None


async def tool(request: Request, name: str, argument: Any, attachments: list[bytes] | None = None) -> Any:
    """Run a calibration-tool command of the handler; its errors map to HTTP statuses."""
    from ..handler import ToolUnavailable

    try:
        return await run_in_threadpool(ctx_of(request).handler.call, name, argument, list(attachments or []))
    except ToolUnavailable as exc:
        raise HTTPFail(501, str(exc)) from None


async def schema(request: Request) -> Response:
    from ...calibration import load_schema

    return SafeJSON(load_schema())


async def validate(request: Request) -> Response:
    body = await read_json(request)
    cal = body.get("calibration") if isinstance(body, dict) else None
    return SafeJSON((await tool(request, "validate", {"calibration": cal}))["problems"])


async def convert_fit2d(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return err(400, "expected {\"text\": FIT2D text, \"template\": calibration}")
    return SafeJSON(await tool(request, "convertfit2d", {k: body[k] for k in ("text", "template") if k in body}))


async def convert_poni(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return err(400, "expected {\"text\": PONI file text, \"template\": calibration}")
    return SafeJSON(await tool(request, "convertponi", {k: body[k] for k in ("text", "template") if k in body}))


async def maskpreview(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("calibration"), dict):
        return err(400, "expected {\"calibration\", \"mask\": {\"name\", \"data\"}, \"image\"}")
    argument = {k: body[k] for k in ("calibration", "image", "index") if k in body}
    attachments: list[bytes] = []
    mask = body.get("mask")
    if mask:  # the page sends the mask inline; the command takes it as an attachment
        if not isinstance(mask, dict) or not isinstance(mask.get("name"), str) \
                or not isinstance(mask.get("data"), str):
            return err(400, "mask must be {\"name\": file name, \"data\": base64}")
        try:
            attachments = [base64.b64decode(mask["data"], validate=True)]
        except (binascii.Error, ValueError):
            return err(400, "the mask is not valid base64")
        argument["filenames"] = [os.path.basename(mask["name"])]
    data = await tool(request, "maskpreview", argument, attachments)
    return Response(base64.b64decode(data["png"]), media_type="image/png", headers={"Cache-Control": "no-store"})


async def not_found(request: Request, exc: Exception) -> Response:
    return err(404, f"no such resource: {request.url.path}")


def body_limits(max_body_bytes: int, max_upload_bytes: int) -> dict[str, int]:
    """Largest accepted request body per path (every other path: :data:`LOGIN_BODY_LIMIT`)."""
    return {
        "/api/login": LOGIN_BODY_LIMIT,
        "/api/launch": LOGIN_BODY_LIMIT,
        "/api/command": max_body_bytes,  # 'new' carries the mask files
        "/api/validate": 1 << 20,
        "/api/convert/fit2d": 4 << 20,
        "/api/convert/poni": 1 << 20,
        "/api/maskpreview": max_upload_bytes,  # a mask file, base64
    }


def build_routes() -> list[BaseRoute]:
    """The routes of the web leash (they find their state in ``app.state.ctx``)."""
    return [
        Route("/", index),
        Route("/index.html", index),
        Route("/static/plotly.min.js", plotly),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/api/challenge", endpoint(challenge, public=True), methods=["GET"]),
        Route("/api/login", endpoint(login, public=True), methods=["POST"]),
        Route("/api/launch", endpoint(launch, public=True), methods=["POST"]),
        Route("/api/session", endpoint(session, public=True), methods=["GET"]),
        Route("/api/logout", endpoint(logout), methods=["POST"]),
        Route("/api/command", endpoint(command), methods=["POST"]),
        Route("/api/schema/calibration", endpoint(schema), methods=["GET"]),
        Route("/api/validate", endpoint(validate), methods=["POST"]),
        Route("/api/convert/fit2d", endpoint(convert_fit2d), methods=["POST"]),
        Route("/api/convert/poni", endpoint(convert_poni), methods=["POST"]),
        Route("/api/maskpreview", endpoint(maskpreview), methods=["POST"]),
        WebSocketRoute("/ws", live_socket),
    ]
