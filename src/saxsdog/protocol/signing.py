"""Signing and verifying leash requests with a shared secret.

Every request a leash sends to a saxsdog server is an *envelope*: a JSON object that
carries the command, its argument, the client's clock, a random nonce, the SHA-256
digests of the binary attachment frames, and an HMAC-SHA256 signature over all of it::

    {
      "command": "stat",
      "argument": {},                     # omitted when there is none
      "time": 1712345678.123456,          # client's time.time()
      "nonce": "3f0c...e1",               # 32 lowercase hex characters, random
      "attachments": ["9b71...", ...],    # sha256 hex of each attachment frame, in order
      "sign": "a4c2...07"                 # hex HMAC-SHA256(secret, canonical JSON without "sign")
    }

The *canonical JSON* of an object is
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)``;
it does not depend on the order in which keys were inserted, so the server can recompute
the signature from the parsed envelope.

How this differs from the original SAXSDOG signing
--------------------------------------------------
The original leash set ``"sign": ""`` and ``"time"`` in the request, hashed
``json.dumps(request, sort_keys=True)`` followed by the secret with plain SHA-512, and the
server accepted any request whose time lay within 900 s of its clock.  This module keeps
the shared secret, the timestamp and the 900 s window, but

* uses a keyed MAC (HMAC-SHA256) instead of a plain hash of message + secret, which is the
  construction designed for this job (no length-extension games, constant-time compare);
* adds a random *nonce* and a :class:`ReplayCache` on the server: a captured request cannot
  be replayed, not even within the time window;
* covers binary attachments (mask files, log tables) by listing their SHA-256 digests in
  the signed envelope, so a frame cannot be swapped in transit — the original sent masks
  base64-encoded inside extra JSON frames that the signature did not cover;
* signs a fully specified canonical JSON (compact separators, ASCII only, no NaN), so
  clients in other languages (the web leash) can produce byte-identical input.

Secrets are never part of an error message, a log line or a ``repr``.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import math
import os
import re
import secrets as _secrets
import sqlite3
import threading
import time as _time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from saxsdog.errors import SaxsdogError
from saxsdog.io.atomic import set_aside

__all__ = [
    "AuthError",
    "ReplayCache",
    "PersistentReplayCache",
    "DEFAULT_WINDOW",
    "canonical_json",
    "attachment_digest",
    "sign_request",
    "verify_request",
    "compute_signature",
    "compute_mac",
]

#: Accepted difference between the request's time and the server's clock, seconds.
DEFAULT_WINDOW = 900.0

#: Default bound on the number of nonces a :class:`ReplayCache` remembers.
DEFAULT_MAX_NONCES = 1_000_000

_NONCE_RE = re.compile(r"[0-9a-f]{32}")

_log = logging.getLogger(__name__)


class AuthError(SaxsdogError):
    """A request failed authentication (signature, time, nonce, replay or attachments).

    The message says what was wrong; it never contains the shared secret.
    """


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, compact, ASCII, no NaN/Infinity).

    Raises
    ------
    ValueError
        When ``obj`` contains NaN or ±Infinity, or something that is not JSON.
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except ValueError as exc:  # NaN / Infinity
        raise ValueError(f"request is not valid JSON: {exc} (NaN and Infinity are not allowed)") from None
    except TypeError as exc:
        raise ValueError(f"request is not valid JSON: {exc}") from None


def attachment_digest(data: bytes) -> str:
    """SHA-256 hex digest of one attachment frame."""
    return hashlib.sha256(bytes(data)).hexdigest()


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        key = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray)):
        key = bytes(secret)
    else:
        raise TypeError(f"the shared secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError("the shared secret is empty; create a network file with saxsnetconf")
    return key


def compute_mac(secret: str | bytes, nonce: str) -> str:
    """``hex(HMAC-SHA256(secret, nonce))``: how a web leash client proves it knows the secret.

    The web leash's login answers a random challenge ``nonce`` with this MAC (the browser
    computes it with WebCrypto), so the secret itself never travels.
    """
    return hmac.new(_key(secret), nonce.encode("utf-8"), hashlib.sha256).hexdigest()


def compute_signature(envelope: Mapping[str, Any], secret: str | bytes) -> str:
    """Hex HMAC-SHA256 of the canonical JSON of ``envelope`` without its ``"sign"`` key."""
    return _signature(envelope, _key(secret))


def _signature(envelope: Mapping[str, Any], key: bytes) -> str:
    body = {k: v for k, v in envelope.items() if k != "sign"}
    return hmac.new(key, canonical_json(body).encode("ascii"), hashlib.sha256).hexdigest()


def sign_request(command: str, argument: Any = None, *, secret: str | bytes,
                 attachments: Iterable[bytes] = (), now: float | None = None,
                 nonce: str | None = None) -> dict[str, Any]:
    """Build a signed request envelope.

    Parameters
    ----------
    command
        The command name, e.g. ``"stat"``.
    argument
        The command's argument (a JSON object); omitted from the envelope when ``None``.
    secret
        The shared secret of the network file.
    attachments
        The raw bytes of the attachment frames that will follow the envelope on the wire.
    now
        The time to put in the envelope (default: ``time.time()``).
    nonce
        32 lowercase hex characters (default: fresh random).

    Returns
    -------
    dict
        The envelope, including ``"sign"``.

    Raises
    ------
    ValueError
        For an empty secret, a malformed nonce, or an argument that is not valid JSON.
    """
    if not isinstance(command, str) or not command:
        raise ValueError("command must be a non-empty string")
    nonce = _secrets.token_hex(16) if nonce is None else nonce
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise ValueError("nonce must be 32 lowercase hexadecimal characters")
    envelope: dict[str, Any] = {"command": command}
    if argument is not None:
        envelope["argument"] = argument
    envelope["time"] = float(_time.time() if now is None else now)
    envelope["nonce"] = nonce
    envelope["attachments"] = [attachment_digest(a) for a in attachments]
    envelope["sign"] = compute_signature(envelope, secret)
    return envelope


class ReplayCache:
    """Remembers the nonces of accepted requests while their time is inside the window.

    A nonce is kept until ``request time + window`` has passed; after that the request
    would be refused as stale anyway, so the entry is dropped.  Memory is bounded by
    ``max_entries``: when that many unexpired nonces are held, new requests are refused
    (with a clear error) rather than forgetting a nonce that could still be replayed.

    Thread-safe.

    Parameters
    ----------
    window
        Accepted clock difference in seconds (the same as the verifier's window).
    max_entries
        Most nonces held at once.
    """

    def __init__(self, window: float = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_NONCES):
        if not window > 0:
            raise ValueError("window must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.window = float(window)
        self.max_entries = int(max_entries)
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def __bool__(self) -> bool:  # an empty cache is still a cache (``cache or default``)
        return True

    def __repr__(self) -> str:
        return f"ReplayCache(window={self.window:g}, entries={len(self)}, max_entries={self.max_entries})"

    def _prune(self, now: float) -> None:
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] < now:
            t, nonce = heapq.heappop(heap)
            if expiry.get(nonce) == t:
                del expiry[nonce]

    def remember(self, nonce: str, request_time: float, now: float | None = None) -> None:
        """Record ``nonce``; raise :class:`AuthError` if it was seen and has not expired.

        Raises
        ------
        AuthError
            On a replayed nonce, or when the cache is full of unexpired nonces.
        """
        now = _time.time() if now is None else now
        expires = float(request_time) + self.window
        with self._lock:
            self._prune(now)
            if nonce in self._expiry:
                raise AuthError("replayed request refused: this nonce was already used")
            if len(self._expiry) >= self.max_entries:
                raise AuthError(
                    f"request refused: the replay cache holds {self.max_entries} unexpired nonces "
                    f"(more than {self.max_entries} requests within {self.window:g} s); try again later")
            self._expiry[nonce] = expires
            heapq.heappush(self._heap, (expires, nonce))


class PersistentReplayCache(ReplayCache):
    """A :class:`ReplayCache` whose nonces survive a server restart (SQLite in the state dir).

    Without it, a request captured before a restart is accepted again after it (the
    nonces lived in memory only).  Each accepted nonce is written, with its expiry, before
    the command runs (WAL mode: durable against the process being killed); a restarted
    server loads the nonces whose window has not passed.

    When the file cannot be read (damaged, unreadable), it is moved aside and every
    request signed before this start is refused instead (:attr:`not_before`): the client
    simply signs again.  When a nonce cannot be written (a full disk), the request is
    still served (the command service must keep answering) and a warning is logged; that
    nonce is then only protected until the next restart.

    Parameters
    ----------
    path
        The SQLite file (created with its folder).
    window, max_entries
        As for :class:`ReplayCache`.
    now
        The start time (default: ``time.time()``).
    """

    def __init__(self, path: str | os.PathLike[str], window: float = DEFAULT_WINDOW,
                 max_entries: int = DEFAULT_MAX_NONCES, now: float | None = None):
        super().__init__(window, max_entries)
        self.path = Path(path)
        now = _time.time() if now is None else float(now)
        #: Requests whose time is before this are refused (set when the record was lost).
        self.not_before: float | None = None
        self._inserts = 0
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open(now)
        except (sqlite3.Error, OSError) as exc:
            self.not_before = now
            self._move_aside(exc)
            try:
                self._db = self._open(now)
            except (sqlite3.Error, OSError) as again:
                _log.error("cannot keep the replay record %s (%s): only requests signed after the "
                           "start are accepted, nonces are remembered in memory", self.path, again)
                self._db = None

    def _open(self, now: float) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)")
            db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            rows = db.execute("SELECT nonce, expires FROM nonces").fetchall()
        except BaseException:
            db.close()
            raise
        for nonce, expires in rows:
            if isinstance(nonce, str) and isinstance(expires, float):
                self._expiry[nonce] = expires
                heapq.heappush(self._heap, (expires, nonce))
        return db

    def _move_aside(self, exc: Exception) -> None:
        try:
            set_aside(self.path)
        except OSError:
            pass
        _log.error("the replay record %s is not readable (%s): moved it aside; requests signed before "
                   "this start are refused", self.path, exc)

    def remember(self, nonce: str, request_time: float, now: float | None = None) -> None:
        now = _time.time() if now is None else now
        if self.not_before is not None and float(request_time) < self.not_before:
            raise AuthError("request refused: it was signed before the server started and the server "
                            "lost its record of used nonces; send it again")
        super().remember(nonce, request_time, now)
        if self._db is None:
            return
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO nonces VALUES (?, ?)",
                                 (nonce, float(request_time) + self.window))
                self._inserts += 1
                if self._inserts % 1000 == 0:
                    self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            except sqlite3.Error as exc:
                _log.warning("cannot record a used nonce in %s: %s (it is protected against replay "
                             "until the server restarts)", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _is_number(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def verify_request(envelope: Mapping[str, Any], secret: str | bytes,
                   attachments: Iterable[bytes] = (), replay: ReplayCache | None = None,
                   window: float = DEFAULT_WINDOW, now: float | None = None) -> dict[str, Any]:
    """Check a received envelope; return it unchanged when it is authentic and fresh.

    The checks, in order: a signature is present, the signature is right (constant-time
    comparison), the time is within ``±window`` of ``now``, the nonce is well formed, the
    attachment digests match the frames received, and — only then — the nonce has not
    been used before (it is remembered in ``replay``).

    Parameters
    ----------
    envelope
        The decoded request envelope.
    secret
        The shared secret.
    attachments
        The attachment frames received after the envelope.
    replay
        The server's replay cache (required; pass one :class:`ReplayCache` per server).
    window
        Accepted clock difference in seconds.
    now
        The server's time (default: ``time.time()``).

    Raises
    ------
    AuthError
        With a message naming what failed (never the secret).
    """
    if replay is None:
        raise TypeError("verify_request needs a ReplayCache (replay=...)")
    key = _key(secret)
    if not isinstance(envelope, Mapping):
        raise AuthError("request refused: the request is not a JSON object")
    sign = envelope.get("sign")
    if sign is None:
        raise AuthError("request refused: it is not signed (no 'sign' field)")
    if not isinstance(sign, str):
        raise AuthError("request refused: 'sign' must be a string of 64 hex characters")
    try:
        expected = _signature(envelope, key)
    except ValueError as exc:
        raise AuthError(f"request refused: {exc}") from None
    if not hmac.compare_digest(sign.encode("utf-8"), expected.encode("ascii")):
        raise AuthError("request refused: wrong signature (is the secret in the network file the "
                        "same on the leash and the server, and was the request altered?)")

    t = envelope.get("time")
    if not _is_number(t) or not math.isfinite(t):
        raise AuthError("request refused: 'time' must be a number (seconds since the epoch)")
    now = _time.time() if now is None else float(now)
    if abs(t - now) > window:
        when = "in the past" if t < now else "in the future"
        raise AuthError(f"request refused: its time is {abs(t - now):.0f} s {when}, more than the "
                        f"allowed {window:g} s (check the clocks of leash and server)")

    nonce = envelope.get("nonce")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise AuthError("request refused: 'nonce' must be 32 lowercase hexadecimal characters")

    digests = envelope.get("attachments")
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        raise AuthError("request refused: 'attachments' must be a list of SHA-256 hex digests")
    frames = list(attachments)
    if len(digests) != len(frames):
        raise AuthError(f"request refused: the envelope lists {len(digests)} attachment(s) but "
                        f"{len(frames)} attachment frame(s) arrived")
    for i, (d, frame) in enumerate(zip(digests, frames)):
        if not hmac.compare_digest(d.encode("utf-8"), attachment_digest(frame).encode("ascii")):
            raise AuthError(f"request refused: attachment {i} does not match its SHA-256 digest "
                            "in the signed envelope")

    replay.remember(nonce, t, now)
    return dict(envelope)
