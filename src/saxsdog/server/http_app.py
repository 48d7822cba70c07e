"""HTTP/WebSocket transport for the web leash: a thin Starlette app over the command handler.

The page (``/``) and its assets (``/static/...``) are public; everything under ``/api``
except the challenge and the login needs a session token, and so does the WebSocket.

Authentication never sends the shared secret:

1. ``GET /api/challenge`` returns a fresh random ``nonce`` (single use, valid 60 s);
2. the client computes ``mac = hex(HMAC-SHA256(secret, nonce))`` (the browser with
   WebCrypto, from the secret the user pastes; nothing is stored);
3. ``POST /api/login {"nonce", "mac"}`` returns a random session ``token`` (valid
   ``token_ttl`` seconds), also set as an ``HttpOnly; SameSite=Strict`` cookie.

The ``leash`` command gets a *launch code* the same way (``POST /api/launch {"nonce",
"mac"}``) and opens the page with ``#code=...`` in the URL fragment (never sent to a
server); the page exchanges it once at ``POST /api/login {"code"}``.  Codes expire after
60 s.  Later requests carry the token as ``Authorization: Bearer TOKEN`` or the cookie.

Endpoints
---------
``POST /api/command``           ``{"command", "argument", "attachments": [base64]}`` → handler response
``GET  /api/session``           whether the token is valid, and when it expires (public)
``POST /api/logout``            forget the token
``GET  /api/schema/calibration`` the calibration JSON Schema
``POST /api/validate``          ``{"calibration"}`` → ``[{"path", "message", ...}]`` (empty: valid)
``POST /api/convert/fit2d``     ``{"text", "template"?}`` → ``{"calibration"}``
``POST /api/convert/poni``      ``{"text", "template"?}`` → ``{"calibration"}`` (needs pyFAI)
``POST /api/maskpreview``       ``{"calibration", "mask"?: {"name", "data"}, "image"?, "index"?}`` → PNG
``WS   /ws``                    ``{"type": "result", ...}`` for new curves (at most ``max_results_per_second``),
                                 ``{"type": "stat", "stat": {...}}`` every second
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import importlib.util
import io
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from .handler import CommandHandler
from .paths import PathOutsideBase, relative_to_base, resolve_inside

log = logging.getLogger(__name__)

__all__ = ["AuthState", "ResultFeed", "build_app", "start_http_server", "HTTPServerThread",
           "compute_mac", "calibration_problems", "render_mask_preview", "jsonable",
           "COOKIE_NAME", "DEFAULT_HTTP_PORT"]

#: Default port of the web leash (the ZeroMQ command service uses 7777).
DEFAULT_HTTP_PORT = 7780
#: Name of the session cookie.
COOKIE_NAME = "saxsdog_session"
#: WebSocket close code for an unauthenticated connection (HTTP 401 in the 4xxx range).
WS_UNAUTHORIZED = 4401

STATIC_DIR = Path(__file__).resolve().parent / "static"


# --------------------------------------------------------------------------- authentication

def compute_mac(secret: str | bytes, nonce: str) -> str:
    """``hex(HMAC-SHA256(secret, nonce))``: what a client proves knowledge of the secret with."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    return hmac.new(key, nonce.encode("utf-8"), hashlib.sha256).hexdigest()


class _Expiring:
    """A bounded set of random strings, each valid until its expiry (thread-safe)."""

    def __init__(self, ttl: float, limit: int):
        self.ttl = ttl
        self.limit = limit
        self._items: dict[str, float] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        for k in [k for k, exp in self._items.items() if exp <= now]:
            del self._items[k]
        while len(self._items) >= self.limit:  # drop the oldest ones (dicts keep insertion order)
            del self._items[next(iter(self._items))]

    def issue(self, nbytes: int = 32) -> tuple[str, float]:
        now = time.monotonic()
        value = secrets.token_urlsafe(nbytes)
        with self._lock:
            self._purge(now)
            self._items[value] = now + self.ttl
        return value, self.ttl

    def consume(self, value: Any) -> bool:
        """True once for a valid, unexpired value; it is gone afterwards."""
        if not isinstance(value, str) or not value:
            return False
        with self._lock:
            exp = self._items.pop(value, None)
        return exp is not None and exp > time.monotonic()

    def valid(self, value: Any) -> float | None:
        """Seconds left for a valid value (it stays valid), else ``None``."""
        if not isinstance(value, str) or not value:
            return None
        with self._lock:
            exp = self._items.get(value)
        left = None if exp is None else exp - time.monotonic()
        return left if left is not None and left > 0 else None

    def revoke(self, value: Any) -> None:
        with self._lock:
            self._items.pop(value, None)


class AuthState:
    """Challenges, launch codes and session tokens of one HTTP service.

    Parameters
    ----------
    secret
        The shared secret (kept in memory only; never logged, never sent).
    nonce_ttl
        Seconds a login challenge stays valid.
    code_ttl
        Seconds a launch code stays valid.
    token_ttl
        Seconds a session token stays valid.
    """

    def __init__(self, secret: str | bytes, nonce_ttl: float = 60.0, code_ttl: float = 60.0,
                 token_ttl: float = 12 * 3600.0):
        if not secret:
            raise ValueError("the shared secret is empty; create a network file with saxsnetconf")
        self._secret = secret
        self.nonces = _Expiring(nonce_ttl, 10_000)
        self.codes = _Expiring(code_ttl, 1_000)
        self.tokens = _Expiring(token_ttl, 10_000)

    def __repr__(self) -> str:  # never show the secret
        return "<AuthState>"

    def challenge(self) -> dict[str, Any]:
        nonce, ttl = self.nonces.issue(24)
        return {"nonce": nonce, "expires_in": ttl}

    def check_mac(self, nonce: Any, mac: Any) -> bool:
        """Consume ``nonce`` and check ``mac`` (constant time); False for anything wrong."""
        if not self.nonces.consume(nonce) or not isinstance(mac, str):
            return False
        return hmac.compare_digest(compute_mac(self._secret, nonce).encode(), mac.strip().lower().encode())

    def new_launch_code(self) -> str:
        return self.codes.issue(24)[0]

    def new_token(self) -> tuple[str, float]:
        return self.tokens.issue(32)


# --------------------------------------------------------------------------- JSON helpers

def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy values turned into Python ones and NaN/±inf into ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            a = obj.astype(np.float64)
            out = a.tolist()
            if not np.isfinite(a).all():
                return jsonable(out)
            return out
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dumps(obj: Any) -> bytes:
    return json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- helpers for the page

def calibration_problems(calibration: Any) -> list[dict[str, Any]]:
    """Every schema violation of a calibration, each with its JSON path and a message.

    Returns
    -------
    list of dict
        ``{"path": "$.Geometry.DedectorDistanceMM", "message": ..., "value": ..., "expected": ...}``
        sorted by path; empty when the calibration is valid.
    """
    import jsonschema

    from ..calibration import _expected, _json_path, load_schema

    if not isinstance(calibration, dict):
        return [{"path": "$", "message": "a calibration must be a JSON object", "value": None,
                 "expected": "a JSON object"}]
    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for error in validator.iter_errors(calibration):
        parts = list(error.absolute_path)
        value: Any = error.instance
        if error.validator == "required":
            missing = [f for f in error.validator_value if f not in error.instance]
            path, message, value = _json_path(parts + missing[:1]), f"missing required field {missing[0]!r}", None
        elif error.validator in ("oneOf", "anyOf"):
            path, message, value = _json_path(parts), error.schema.get("description", error.message), None
        else:
            path = _json_path(parts)
            message = f"bad value {json.dumps(jsonable(value))[:80]}: expected {_expected(error)}"
        if (path, message) in seen:
            continue
        seen.add((path, message))
        out.append({"path": path, "message": message, "value": jsonable(value) if _small(value) else None,
                    "expected": _expected(error)})
    out.sort(key=lambda e: e["path"])
    return out


def _small(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _image_shape(calibration: dict[str, Any]) -> tuple[int, int] | None:
    g = calibration.get("Geometry") if isinstance(calibration, dict) else None
    size = (g or {}).get("Imagesize", (g or {}).get("ImageSize")) if isinstance(g, dict) else None
    try:
        rows, cols = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


def render_mask_preview(basedir: str | os.PathLike[str], calibration: dict[str, Any],
                        mask: tuple[str, bytes] | None = None, image: str | None = None,
                        index: int = 0, max_pixels: int = 1400) -> bytes:
    """A PNG of an image (log scale) with a mask overlaid and the beam centre marked.

    Parameters
    ----------
    basedir
        The server's base directory: ``image`` and mask files named in the calibration
        resolve inside it.
    calibration
        The calibration being edited (image size, beam centre, masks, slices).
    mask
        ``(file name, content)`` of the mask file the user chose; otherwise
        ``Masks[index].MaskFile`` is looked up in the base directory, if present there.
    image
        An image file relative to the base directory (optional).
    index
        Which entry of ``Masks`` is shown.
    max_pixels
        Images larger than this along an axis are decimated for the picture.

    Returns
    -------
    bytes
        The PNG.

    Raises
    ------
    SaxsdogError
        Unreadable mask or image, paths outside the base directory, wrong sizes.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..errors import SaxsdogError
    from ..io.images import read_image
    from ..io.masks import read_mask, read_mask_bytes

    shape = _image_shape(calibration)
    notes: list[str] = []
    data = None
    title = []
    if image:
        path = resolve_inside(basedir, image)
        if not path.is_file():
            raise SaxsdogError(f"{image!r} is not a file in the base directory")
        data = np.asarray(read_image(path, expected_shape=shape).data, dtype=np.float64)
        shape = shape or data.shape
        title.append(relative_to_base(basedir, path))
    masks = calibration.get("Masks") if isinstance(calibration.get("Masks"), list) else []
    json_path = f"$.Masks[{index}].MaskFile"
    valid = None
    if mask is not None:
        valid = read_mask_bytes(mask[1], mask[0], shape, json_path)
        title.append(mask[0])
    elif 0 <= index < len(masks) and isinstance(masks[index], dict) and masks[index].get("MaskFile"):
        name = masks[index]["MaskFile"]
        try:
            p = resolve_inside(basedir, name)
        except PathOutsideBase:
            p = None
        if p is not None and p.is_file():
            valid = read_mask(p, shape, json_path)
            title.append(relative_to_base(basedir, p))
        else:
            notes.append(f"mask {name} not loaded: choose the file")
    if valid is not None:
        shape = shape or valid.shape
    if shape is None:
        raise SaxsdogError("no image size: set Geometry.Imagesize, or choose an image or a mask")
    rows, cols = shape
    step = max(1, math.ceil(max(rows, cols) / max_pixels))

    fig = Figure(figsize=(7.2, 7.2 * min(max(rows / cols, 0.4), 2.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    extent = (0, cols, rows, 0)  # continuous pixel coordinates, row 0 at the top
    if data is not None:
        shown = data[::step, ::step]
        with np.errstate(invalid="ignore", divide="ignore"):
            logimg = np.where(shown > 0, np.log10(np.where(shown > 0, shown, 1.0)), np.nan)
        im = ax.imshow(logimg, cmap="viridis", extent=extent, interpolation="nearest", aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log10(counts)")
    else:
        ax.imshow(np.full((2, 2), 0.85), cmap="gray", vmin=0, vmax=1, extent=extent, aspect="equal")
    if valid is not None:
        m = ~valid[::step, ::step]
        overlay = np.zeros(m.shape + (4,), dtype=np.float32)
        overlay[m] = (1.0, 0.1, 0.1, 0.45)
        ax.imshow(overlay, extent=extent, interpolation="nearest", aspect="equal")
        notes.append(f"{int(valid.sum()):,} of {valid.size:,} pixels used (red: masked)")
    slices = calibration.get("Slices") if isinstance(calibration.get("Slices"), list) else []
    for sl in slices:
        if not isinstance(sl, dict):
            continue
        try:
            pos, margin = float(sl.get("CutPosition", 0)), float(sl.get("CutMargin", 1))
        except (TypeError, ValueError):
            continue
        if sl.get("Direction", "x") == "x":
            y = rows - pos
            ax.axhspan(y - margin, y + margin, color="orange", alpha=0.5)
        else:
            x = pos - 0.5
            ax.axvspan(x - margin, x + margin, color="orange", alpha=0.5)
    geom = calibration.get("Geometry") if isinstance(calibration.get("Geometry"), dict) else {}
    try:
        y_c, x_c = float(geom["BeamCenter"][0]), float(geom["BeamCenter"][1])
    except (KeyError, TypeError, ValueError, IndexError):
        notes.append("no beam centre")
    else:
        bx, by = x_c, rows - y_c  # FIT2D: Y counted from the bottom edge
        ax.plot([bx], [by], marker="+", markersize=22, mew=2.5, color="white", clip_on=False)
        ax.plot([bx], [by], marker="o", markersize=12, mfc="none", mew=1.5, color="red", clip_on=False)
        inside = 0 <= bx <= cols and 0 <= by <= rows
        notes.append(f"beam centre Y={y_c:g}, X={x_c:g}" + ("" if inside else " (outside the detector)"))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("row from the top (pixels)")
    ax.set_title(" + ".join(title) or "mask preview", fontsize=10)
    fig.text(0.01, 0.005, "; ".join(notes), fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plotly_js() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package, without importing it."""
    spec = importlib.util.find_spec("plotly")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "package_data" / "plotly.min.js"
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------- live results

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
                    "array": [np.asarray(a) for a in g.get("array", [])]} for g in result.curves or []],
    }


# --------------------------------------------------------------------------- the app

def build_app(handler: CommandHandler, secret: str | bytes, *, token_ttl: float = 12 * 3600.0,
              code_ttl: float = 60.0, nonce_ttl: float = 60.0, max_body_bytes: int = 64 * 1024 * 1024,
              max_results_per_second: float = 4.0, stat_interval: float = 1.0):
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
        Largest accepted request body.
    max_results_per_second
        Rate limit of live results per WebSocket.
    stat_interval
        Seconds between ``stat`` messages on the WebSocket.

    Returns
    -------
    starlette.applications.Starlette
        The app; ``app.state.auth`` is its :class:`AuthState`, ``app.state.feed`` its
        :class:`ResultFeed`.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from ..errors import SaxsdogError

    auth = AuthState(secret, nonce_ttl=nonce_ttl, code_ttl=code_ttl, token_ttl=token_ttl)
    feed = ResultFeed()
    handler.listeners.append(feed)
    if handler.session is not None:  # a queue restored before the app was built
        handler.session.queue.add_callback(feed)
    basedir = handler.basedir
    plotly_path = _plotly_js()

    class SafeJSON(JSONResponse):
        def render(self, content: Any) -> bytes:
            return _dumps(content)

    def err(status: int, message: str) -> Response:
        return SafeJSON({"result": "Error", "data": {"Error": message}}, status_code=status)

    class HTTPFail(Exception):
        def __init__(self, status: int, message: str):
            self.status, self.message = status, message

    def token_of(conn) -> str | None:
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
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPFail(413, f"request too large: the limit is {max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise HTTPFail(413, f"request too large: the limit is {max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPFail(400, f"the request body is not JSON: {exc}") from None

    def endpoint(fn: Callable, public: bool = False) -> Callable:
        async def wrapped(request: Request) -> Response:
            try:
                if not public:
                    if auth.tokens.valid(token_of(request)) is None:
                        return err(401, "not logged in (or the session expired): log in with the shared secret")
                    if request.method == "POST" and not same_origin(request):
                        return err(403, "cross-origin request refused")
                return await fn(request)
            except HTTPFail as exc:
                return err(exc.status, exc.message)
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

    def login_response(token: str, ttl: float) -> Response:
        resp = SafeJSON({"token": token, "expires_in": ttl})
        resp.set_cookie(COOKIE_NAME, token, max_age=int(ttl), httponly=True, samesite="strict", path="/")
        return resp

    # -- public routes -----------------------------------------------------------------
    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                       "style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                                       "script-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    async def plotly(request: Request) -> Response:
        if plotly_path is None:
            return Response("/* plotly is not installed: pip install plotly */\n", media_type="text/javascript",
                            status_code=404)
        return FileResponse(plotly_path, media_type="text/javascript",
                            headers={"Cache-Control": "max-age=86400"})

    async def challenge(request: Request) -> Response:
        return SafeJSON(auth.challenge(), headers={"Cache-Control": "no-store"})

    async def login(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            return err(400, "login needs {nonce, mac} or {code}")
        client = request.client.host if request.client else "?"
        if "code" in body:
            ok = auth.codes.consume(body.get("code"))
            how = "launch code"
        else:
            ok = auth.check_mac(body.get("nonce"), body.get("mac"))
            how = "shared secret"
        if not ok:
            log.warning("refused web leash login from %s (%s)", client, how)
            return err(401, "login refused: wrong secret, or the challenge/launch code was used or expired")
        log.info("web leash login from %s (%s)", client, how)
        return login_response(*auth.new_token())

    async def launch(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not auth.check_mac(body.get("nonce"), body.get("mac")):
            return err(401, "launch refused: wrong secret, or the challenge was used or expired")
        return SafeJSON({"code": auth.new_launch_code(), "expires_in": auth.codes.ttl})

    # -- authenticated routes ----------------------------------------------------------
    async def session(request: Request) -> Response:
        left = auth.tokens.valid(token_of(request))
        if left is None:  # public, so that a page without a session gets no error
            return SafeJSON({"ok": False}, headers={"Cache-Control": "no-store"})
        return SafeJSON({"ok": True, "expires_in": left, "basedir": basedir.name},
                        headers={"Cache-Control": "no-store"})

    async def logout(request: Request) -> Response:
        auth.tokens.revoke(token_of(request))
        resp = SafeJSON({"ok": True})
        resp.delete_cookie(COOKIE_NAME, path="/")
        return resp

    async def command(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or "command" not in body:
            return err(400, "expected {\"command\": NAME, \"argument\": {...}, \"attachments\": [base64, ...]}")
        attachments = decode_attachments(body.get("attachments"))
        # the handler checks the command and its argument, as for the ZeroMQ transport
        response = await run_in_threadpool(handler.execute, body["command"], body.get("argument"), attachments,
                                           None)
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

    async def tool(name: str, argument: Any, attachments: list[bytes] = ()) -> Any:
        """Run a calibration tool command of the handler; its errors map to HTTP statuses."""
        from .handler import ToolUnavailable

        try:
            return await run_in_threadpool(handler.call, name, argument, list(attachments))
        except ToolUnavailable as exc:
            raise HTTPFail(501, str(exc)) from None

    async def schema(request: Request) -> Response:
        from ..calibration import load_schema

        return SafeJSON(load_schema())

    async def validate(request: Request) -> Response:
        body = await read_json(request)
        cal = body.get("calibration") if isinstance(body, dict) else None
        return SafeJSON((await tool("validate", {"calibration": cal}))["problems"])

    async def convert_fit2d(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return err(400, "expected {\"text\": FIT2D text, \"template\": calibration}")
        return SafeJSON(await tool("convertfit2d", {k: body[k] for k in ("text", "template") if k in body}))

    async def convert_poni(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return err(400, "expected {\"text\": PONI file text, \"template\": calibration}")
        return SafeJSON(await tool("convertponi", {k: body[k] for k in ("text", "template") if k in body}))

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
        data = await tool("maskpreview", argument, attachments)
        return Response(base64.b64decode(data["png"]), media_type="image/png", headers={"Cache-Control": "no-store"})

    # -- WebSocket ----------------------------------------------------------------------
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        token = websocket.cookies.get(COOKIE_NAME)
        origin = websocket.headers.get("origin")
        if origin and urlsplit(origin).netloc != websocket.headers.get("host"):
            token = None  # another site's page: its cookie proves nothing
        if auth.tokens.valid(token) is None:
            try:
                first = await asyncio.wait_for(websocket.receive_json(), timeout=5.0)
            except Exception:
                first = None
            token = first.get("token") if isinstance(first, dict) and first.get("type") == "auth" else None
            if auth.tokens.valid(token) is None:
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
        min_gap = 1.0 / max(max_results_per_second, 0.1)
        last_seq, last_sent, next_stat = -1, 0.0, 0.0
        try:
            await websocket.send_text(_dumps({"type": "hello", "basedir": basedir.name}).decode())
            while not gone.is_set():
                now = time.monotonic()
                if auth.tokens.valid(token) is None:
                    await websocket.close(code=WS_UNAUTHORIZED, reason="session expired")
                    break
                seq, latest = feed.get()
                if seq != last_seq and latest is not None and now - last_sent >= min_gap:
                    msg = await run_in_threadpool(lambda: _dumps(result_message(basedir, latest)).decode())
                    await websocket.send_text(msg)
                    last_seq, last_sent = seq, now
                if now >= next_stat:
                    st = await run_in_threadpool(handler.stat)
                    await websocket.send_text(_dumps({"type": "stat", "stat": st,
                                                      "running": handler.session is not None}).decode())
                    next_stat = now + stat_interval
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

    routes = [
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
        WebSocketRoute("/ws", ws),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return err(404, f"no such resource: {request.url.path}")

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.auth = auth
    app.state.feed = feed
    app.state.handler = handler
    return app


# --------------------------------------------------------------------------- serving

class HTTPServerThread:
    """A uvicorn server running an app in a background thread.

    Attributes
    ----------
    host, port
        Where it listens (the bound port, also when 0 was asked for).
    app
        The ASGI app.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = DEFAULT_HTTP_PORT):
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
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws_ping_interval=20.0)
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
                      port: int = DEFAULT_HTTP_PORT, **app_options: Any) -> HTTPServerThread:
    """Serve the web leash for ``handler`` in a background thread.

    Parameters
    ----------
    handler
        The command handler.
    secret
        The shared secret.
    host
        Address to listen on (loopback by default).
    port
        TCP port; 0 picks a free one (see ``.port`` of the result).
    **app_options
        Passed to :func:`build_app`.

    Returns
    -------
    HTTPServerThread
        Running; ``.port`` is the bound port, ``.stop()`` ends it, ``.app.state.auth`` is
        its :class:`AuthState` (e.g. for launch codes in local-server mode).
    """
    app = build_app(handler, secret, **app_options)
    return HTTPServerThread(app, host, port).start()
