"""HTTP/WebSocket transport of the web leash: a thin Starlette app over the command handler.

Modules: :mod:`.app` (the factory :func:`create_app`), :mod:`.auth` (challenges, tokens,
rate limits), :mod:`.guards` (Host header, body sizes), :mod:`.connections` (connection cap,
header timeout), :mod:`.routes`, :mod:`.websocket`, :mod:`.serve` (uvicorn in a thread).

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

Failed logins and challenge requests are rate-limited per client address (HTTP 429 with
``Retry-After``); request bodies are capped per route (413); requests for a ``Host`` that
is not a name of this server are refused (400).

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

from ...protocol.weblogin import COOKIE_NAME, DEFAULT_HTTP_PORT, WS_UNAUTHORIZED
from .app import WebContext, create_app
from .auth import AuthState, PendingChallenges, RateLimiter, TooManyRequests
from .jsonutil import jsonable
from ...logfilter import RepeatFilter, install_repeat_filter
from .serve import HTTPServerThread, start_http_server
from .websocket import ResultFeed, result_message

__all__ = ["create_app", "start_http_server", "HTTPServerThread", "WebContext", "AuthState",
           "PendingChallenges", "RateLimiter", "TooManyRequests", "ResultFeed", "result_message",
           "jsonable", "RepeatFilter",
           "install_repeat_filter", "COOKIE_NAME", "DEFAULT_HTTP_PORT", "WS_UNAUTHORIZED"]
