"""Login state of the web leash: challenges, launch codes, session tokens, rate limits.

Authentication never sends the shared secret: the client answers a random challenge with
``hex(HMAC-SHA256(secret, nonce))`` (:func:`saxsdog.protocol.signing.compute_mac`).

Two attacks that need no login are bounded here:

* guessing: every client address has a token bucket of failed logins; once it is empty
  the address is refused (HTTP 429 with ``Retry-After``) for a time that doubles with each
  further failure, up to :attr:`RateLimiter.max_backoff`;
* challenge floods: each address holds at most ``per_client`` pending challenges (a new one
  replaces that address's oldest), so one address cannot push out another's challenge; when
  all addresses together hold ``limit`` of them, new challenges are refused until some
  expire, never evicted.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ...protocol.signing import compute_mac

__all__ = ["AuthState", "PendingChallenges", "RateLimiter", "TooManyRequests", "client_key"]


class TooManyRequests(Exception):
    """A client asked too often; ``retry_after`` seconds until it may try again."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1.0, retry_after)


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: the address, or its /64 for IPv6.

    One IPv6 host usually owns a whole /64, so counting single addresses would let it
    rotate through 2**64 of them.
    """
    if not host:
        return "?"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)


class _Expiring:
    """A bounded set of random strings, each valid until its expiry (thread-safe).

    All entries share one lifetime, so insertion order is expiry order and purging only
    looks at the oldest entries.
    """

    def __init__(self, ttl: float, limit: int):
        self.ttl = ttl
        self.limit = limit
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        while self._items and next(iter(self._items.values())) <= now:
            self._items.popitem(last=False)
        while len(self._items) >= self.limit:  # drop the oldest ones
            self._items.popitem(last=False)

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


class PendingChallenges:
    """Login challenges, at most ``per_client`` pending per client and ``limit`` in all.

    Parameters
    ----------
    ttl
        Seconds a challenge stays valid.
    per_client
        Pending challenges one client key may hold; its next one replaces its oldest.
    limit
        Pending challenges of all clients together; beyond it new ones are refused.
    """

    def __init__(self, ttl: float, per_client: int = 16, limit: int = 10_000):
        self.ttl = ttl
        self.per_client = per_client
        self.limit = limit
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()  # nonce -> (expiry, client)
        self._by_client: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, nonce: str) -> None:
        _, client = self._items.pop(nonce)
        mine = self._by_client.get(client)
        if mine is not None:
            mine.pop(nonce, None)
            if not mine:
                del self._by_client[client]

    def issue(self, client: str, nbytes: int = 24) -> tuple[str, float]:
        """A new challenge for ``client``; :class:`TooManyRequests` when all slots are taken."""
        now = time.monotonic()
        nonce = secrets.token_urlsafe(nbytes)
        with self._lock:
            while self._items and next(iter(self._items.values()))[0] <= now:
                self._drop(next(iter(self._items)))
            mine = self._by_client.get(client)
            if mine is not None and len(mine) >= self.per_client:
                self._drop(next(iter(mine)))  # this client's own oldest, nobody else's
            elif len(self._items) >= self.limit:
                oldest = next(iter(self._items.values()))[0]
                raise TooManyRequests("too many pending login challenges; try again shortly", oldest - now)
            self._items[nonce] = (now + self.ttl, client)
            self._by_client.setdefault(client, OrderedDict())[nonce] = None
        return nonce, self.ttl

    def consume(self, nonce: Any) -> bool:
        """True once for a pending, unexpired challenge; it is gone afterwards."""
        if not isinstance(nonce, str) or not nonce:
            return False
        with self._lock:
            entry = self._items.get(nonce)
            if entry is None:
                return False
            self._drop(nonce)
        return entry[0] > time.monotonic()


@dataclass
class _Bucket:
    tokens: float
    updated: float
    strikes: int = 0
    blocked_until: float = 0.0


class RateLimiter:
    """Token buckets per client key, with a doubling back-off once a bucket is empty.

    Parameters
    ----------
    burst
        Tokens a fresh client has (attempts in a row before any wait).
    per_second
        Tokens regained per second.
    max_backoff
        Longest wait imposed, seconds.
    max_clients
        Clients remembered; the least recently seen are forgotten beyond it.
    """

    def __init__(self, burst: float, per_second: float, max_backoff: float = 300.0, max_clients: int = 10_000):
        if burst < 1 or per_second <= 0:
            raise ValueError(f"a rate limit needs burst >= 1 and per_second > 0, not {burst}, {per_second}")
        self.burst = float(burst)
        self.per_second = float(per_second)
        self.max_backoff = max_backoff
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _bucket(self, key: str, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(self.burst, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.per_second)
            b.updated = now
            if b.tokens >= self.burst and now >= b.blocked_until:
                b.strikes = 0  # a full bucket forgives the past
        return b

    def wait(self, key: str) -> float:
        """Seconds ``key`` must still wait (0: it may go ahead); spends nothing."""
        now = time.monotonic()
        with self._lock:
            b = self._bucket(key, now)
            return max(0.0, b.blocked_until - now)

    def spend(self, key: str) -> float:
        """Spend one token of ``key``; returns 0, or the seconds to wait when none was left."""
        now = time.monotonic()
        with self._lock:
            b = self._bucket(key, now)
            if now < b.blocked_until:
                return b.blocked_until - now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            b.strikes += 1
            delay = min(self.max_backoff, (1.0 - b.tokens) / self.per_second * 2 ** min(b.strikes - 1, 16))
            b.blocked_until = now + delay
            return delay

    def reset(self, key: str) -> None:
        """Forget ``key`` (after a successful login)."""
        with self._lock:
            self._buckets.pop(key, None)


class AuthState:
    """Challenges, launch codes, session tokens and login limits of one HTTP service.

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
    failed_login_burst, failed_login_rate
        Failed logins an address may make in a row, and how many per second it regains.
    challenge_burst, challenge_rate
        The same for challenge requests.
    challenges_per_client
        Pending challenges one address may hold.
    max_challenges
        Pending challenges of all addresses together.
    """

    def __init__(self, secret: str | bytes, nonce_ttl: float = 60.0, code_ttl: float = 60.0,
                 token_ttl: float = 12 * 3600.0, *, failed_login_burst: int = 10,
                 failed_login_rate: float = 1 / 6, challenge_burst: int = 60, challenge_rate: float = 2.0,
                 challenges_per_client: int = 16, max_challenges: int = 10_000):
        if not secret:
            raise ValueError("the shared secret is empty; create a network file with saxsnetconf")
        self._secret = secret
        self.nonces = PendingChallenges(nonce_ttl, per_client=challenges_per_client, limit=max_challenges)
        self.codes = _Expiring(code_ttl, 1_000)
        self.tokens = _Expiring(token_ttl, 10_000)
        self.failed_logins = RateLimiter(failed_login_burst, failed_login_rate)
        self.challenge_requests = RateLimiter(challenge_burst, challenge_rate)

    def __repr__(self) -> str:  # never show the secret
        return "<AuthState>"

    def challenge(self, client: str = "?") -> dict[str, Any]:
        """A fresh challenge for ``client`` (a :func:`client_key`).

        Raises
        ------
        TooManyRequests
            The client asked too often, or all challenge slots are taken.
        """
        wait = self.challenge_requests.spend(client)
        if wait > 0:
            raise TooManyRequests(f"too many login challenges from {client}: wait {wait:.0f} s", wait)
        nonce, ttl = self.nonces.issue(client)
        return {"nonce": nonce, "expires_in": ttl}

    def login_wait(self, client: str) -> float:
        """Seconds ``client`` must wait before its next login attempt (0: none)."""
        return self.failed_logins.wait(client)

    def login_failed(self, client: str) -> float:
        """Count a failed login of ``client``; returns the wait it now has (0: none)."""
        return self.failed_logins.spend(client)

    def login_succeeded(self, client: str) -> None:
        self.failed_logins.reset(client)

    def check_mac(self, nonce: Any, mac: Any) -> bool:
        """Consume ``nonce`` and check ``mac`` (constant time); False for anything wrong."""
        if not self.nonces.consume(nonce) or not isinstance(mac, str):
            return False
        return hmac.compare_digest(compute_mac(self._secret, nonce).encode(), mac.strip().lower().encode())

    def new_launch_code(self) -> str:
        return self.codes.issue(24)[0]

    def new_token(self) -> tuple[str, float]:
        return self.tokens.issue(32)
