"""What the web leash's server and its clients (the page, the ``leash`` command) share.

Constants only, plus the login MAC re-exported from :mod:`saxsdog.protocol.signing`, so
that a client needs nothing from :mod:`saxsdog.server`.
"""

from __future__ import annotations

from .signing import compute_mac

__all__ = ["DEFAULT_HTTP_PORT", "COOKIE_NAME", "WS_UNAUTHORIZED", "compute_mac"]

#: Default port of the web leash (the ZeroMQ command service uses 7777).
DEFAULT_HTTP_PORT = 7780
#: Name of the session cookie.
COOKIE_NAME = "saxsdog_session"
#: WebSocket close code for an unauthenticated connection (HTTP 401 in the 4xxx range).
WS_UNAUTHORIZED = 4401
