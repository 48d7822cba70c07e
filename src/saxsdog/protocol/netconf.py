"""The network file ``~/.saxsdognetwork``: which server and feeder to talk to, and the secret.

The file is a JSON list (the format of the original SAXSDOG manual)::

    [{"Name": "Pilatus1M", "Server": "tcp://hostname:7777",
      "Feeder": "tcp://hostname:5555", "Secret": "<64 random characters>"}]

It is validated against ``saxsdog/schemas/network.schema.json`` (unknown keys are refused,
``x-`` keys are private notes).  Because it holds the shared secret it is written with mode
0600, and loading refuses a file that other users can read or write (``chmod 600 FILE``
fixes that), a file owned by another user (who could change the secret), anything but a
regular file (a FIFO would block the reader forever) and a secret of less than 256 bits of
entropy (:func:`secret_entropy_bits`).  No message ever shows a secret, not even one
written in the wrong field.  Every tool takes ``--network FILE``
(default: ``$SAXSDOG_NETWORK`` or ``~/.saxsdognetwork``) and ``-N/--serverno`` to choose
an entry; :func:`add_network_arguments` adds both to an argparse parser.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from saxsdog.config import SchemaDoc
from saxsdog.errors import SaxsdogError

__all__ = [
    "NetworkConfigError",
    "DEFAULT_SERVER_URL",
    "DEFAULT_FEEDER_URL",
    "default_network_path",
    "generate_secret",
    "secret_entropy_bits",
    "MIN_SECRET_BITS",
    "make_entry",
    "validate_network",
    "load_network",
    "select_server",
    "write_network",
    "add_network_entry",
    "add_network_arguments",
    "server_from_args",
    "redacted",
    "url_port",
    "url_host",
]

DEFAULT_SERVER_URL = "tcp://localhost:7777"
DEFAULT_FEEDER_URL = "tcp://localhost:5555"
_DOC = SchemaDoc("network.schema.json", what="network file")

#: Least entropy a shared secret must carry (32 bytes).
MIN_SECRET_BITS = 256
_TCP_RE = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>[0-9]{1,5})$")


class NetworkConfigError(SaxsdogError):
    """The network file is missing, unreadable, malformed, insecure, or lacks an entry.

    Messages name the file and the problem, never the secret.
    """


def default_network_path() -> Path:
    """``$SAXSDOG_NETWORK`` if set, else ``~/.saxsdognetwork``."""
    env = os.environ.get("SAXSDOG_NETWORK")
    return Path(env).expanduser() if env else Path("~/.saxsdognetwork").expanduser()


def generate_secret() -> str:
    """A fresh shared secret: 48 random bytes, URL-safe base64 (64 characters, 384 bits)."""
    return secrets.token_urlsafe(48)


_CHARACTER_CLASSES = (
    ("abcdefghijklmnopqrstuvwxyz", 26),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 26),
    ("0123456789", 10),
    (" !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", 33),
)
_OTHER_CHARACTERS = 100  # a generous guess for any character beyond printable ASCII
_DIGITS = frozenset("0123456789")
_HEX_LOWER = frozenset("0123456789abcdef")
_HEX_UPPER = frozenset("0123456789ABCDEF")
_LOWER, _UPPER = frozenset(_CHARACTER_CLASSES[0][0]), frozenset(_CHARACTER_CLASSES[1][0])
#: Both base64 alphabets (standard ``+/`` and URL-safe ``-_``).
_BASE64 = _LOWER | _UPPER | _DIGITS | frozenset("+/-_")

#: How unlikely each test that lowers the estimate may be to fire on a random secret: a
#: genuine random secret is refused with a probability below a few times 2**-40 (1e-12).
_RANDOM_FALSE_ALARM_LOG2 = -40.0


def _nominal_alphabet(secret: str) -> tuple[int, int]:
    """The alphabet a secret was drawn from, judged by its characters, and its counted length.

    Decimal digits count 10, hex digits of one case 16, anything else the union of the
    character classes used (lower case 26, upper case 26, digits 10, ASCII punctuation and
    space 33, beyond ASCII 100).  A base64 string (either alphabet, up to two ``=`` of
    padding, which carry nothing and are not counted) that shows at least two of upper
    case, lower case and digits counts at least 64: a random base64 secret need not show
    every class (43 characters without digits and without ``-``/``_``: 1 in 7,700), but it
    was drawn from 64 symbols all the same.  A random secret of these encodings is judged
    by less than its alphabet only with negligible probability (43 base64 characters of a
    single group: below 2**-49; 64 hex digits that are all decimal: 2**-43).
    """
    chars = frozenset(secret)
    if chars <= _DIGITS:
        return 10, len(secret)
    if chars <= _HEX_LOWER or chars <= _HEX_UPPER:
        return 16, len(secret)  # e.g. openssl rand -hex 32, secrets.token_hex(32)
    body = secret.rstrip("=")
    if len(secret) - len(body) <= 2 and body and frozenset(body) <= _BASE64:
        if sum(bool(chars & group) for group in (_LOWER, _UPPER, _DIGITS)) >= 2:
            return max(_class_pool(body), 64), len(body)  # the padding is not counted
    return _class_pool(secret), len(secret)


def _class_pool(text: str) -> int:
    """Size of the union of the character classes ``text`` uses."""
    chars = frozenset(text)
    pool = sum(size for members, size in _CHARACTER_CLASSES if chars & frozenset(members))
    if any(not (" " <= c <= "~") for c in chars):
        pool += _OTHER_CHARACTERS
    return pool


def _log2_binomial(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


@functools.lru_cache(maxsize=1024)
def _fewest_random_distinct(length: int, alphabet: int) -> int:
    """How many distinct symbols a random string shows, except with negligible probability.

    A random string of ``length`` symbols drawn uniformly from ``alphabet`` shows at most
    ``m`` distinct ones only if all lie in some ``m``-subset:
    ``P(distinct <= m) <= C(alphabet, m) (m / alphabet) ** length``.  The result is the
    smallest ``m`` for which that bound exceeds 2**-40, so fewer distinct symbols mark a
    string as not random over its nominal alphabet (e.g. 16 for 43 base64 characters, which
    show about 31; 9 for 64 hex digits, which show all 16 but rarely).
    """
    m = 1
    while m < alphabet and (_log2_binomial(alphabet, m) + length * math.log2(m / alphabet)
                            <= _RANDOM_FALSE_ALARM_LOG2):
        m += 1
    return m


def _shortest_unlikely_repeat(length: int, alphabet: int) -> int:
    """The shortest repeat a random string holds only with negligible probability.

    A random string of ``length`` symbols from ``alphabet`` has fewer than ``length**2 / 2``
    pairs of start positions, and a given pair starts two equal runs of ``L`` symbols with
    probability ``alphabet ** -L`` (also when the runs overlap), so a repeat of ``L`` or more
    symbols occurs with probability at most ``length**2 / 2 * alphabet ** -L``.  The result
    is the smallest ``L`` making that at most 2**-40 (9 for 43 base64 characters, 13 for 64
    hex digits).
    """
    pairs = max(length * (length - 1) / 2.0, 1.0)
    return max(2, math.ceil((math.log2(pairs) - _RANDOM_FALSE_ALARM_LOG2) / math.log2(alphabet)))


def _repeat_aware_bits(secret: str, symbol_bits: float, min_repeat: int) -> float:
    """Bits of a greedy LZ77 parse: new symbols cost ``symbol_bits``, repeats their position.

    Only repeats of at least ``min_repeat`` symbols (earlier occurrence, overlapping allowed)
    count, so a random secret is charged every symbol; a repeated word costs the word once
    plus about ``2 log2(length)`` bits per repetition.
    """
    n = len(secret)
    if n < 2 * min_repeat:
        return n * symbol_bits
    starts: dict[str, list[int]] = {}
    for j in range(n - min_repeat + 1):
        seen = starts.setdefault(secret[j:j + min_repeat], [])
        if len(seen) < 16:  # the earliest occurrences give the longest matches
            seen.append(j)
    repeat_bits = 2.0 * math.log2(n)
    bits, i = 0.0, 0
    while i < n:
        best = 0
        for j in starts.get(secret[i:i + min_repeat], ()):
            if j >= i:
                break
            k = min_repeat
            while i + k < n and secret[j + k] == secret[i + k]:
                k += 1
            best = max(best, k)
        if best >= min_repeat:
            bits += repeat_bits
            i += best
        else:
            bits += symbol_bits
            i += 1
    return bits


def secret_entropy_bits(secret: str) -> float:
    """An estimate of the entropy of a secret, in bits (an upper bound for random strings).

    The nominal alphabet is judged from the characters used (:func:`_nominal_alphabet`:
    decimal 10, hex 16, else the union of the classes lower case 26, upper case 26, digits
    10, ASCII punctuation and space 33, anything else 100, and at least 64 for base64),
    and a secret counts
    ``length × log2(alphabet)`` bits unless it is clearly repetitive:

    * it repeats a shorter piece: it counts as that piece;
    * it shows fewer distinct symbols than a random string of its length over that
      alphabet shows except with probability 2**-40: it counts as drawn from the symbols it
      shows (``"aabbab…"``);
    * it holds repeats longer than a random string holds except with probability 2**-40:
      each repeat counts as its position (a dictionary word repeated, with or without a
      suffix).

    The bounds are computed, not guessed, so a random secret of 32 bytes or more in any
    common encoding (64 hex digits: 256 bits; 43 or 44 base64 characters: 258 or more;
    saxsnetconf's 64 URL-safe characters: 384 or more) is refused with a probability below
    1e-11.  The estimate
    knows no words, so it is generous to phrases, but it refuses short, repetitive and
    small-alphabet secrets.

    Examples
    --------
    >>> secret_entropy_bits("a" * 16) < 8
    True
    >>> secret_entropy_bits("password" * 10 + "!") < 100
    True
    >>> secret_entropy_bits(generate_secret()) >= 384
    True
    """
    if not secret:
        return 0.0
    pool, n = _nominal_alphabet(secret)
    distinct = len(set(secret[:n]))
    alphabet = pool if distinct >= _fewest_random_distinct(n, pool) else distinct
    if alphabet <= 1:
        return 0.0
    symbol_bits = math.log2(alphabet)
    body = secret[:n]
    # the shortest piece whose repetition (at least twice) makes up the secret
    period = next((p for p in range(1, n // 2 + 1) if all(body[i] == body[i % p] for i in range(n))), n)
    repeats = _repeat_aware_bits(body, symbol_bits, _shortest_unlikely_repeat(n, alphabet))
    return min(period * symbol_bits, repeats)


def url_port(url: str) -> int:
    """The TCP port of a ``tcp://host:port`` URL.

    Raises
    ------
    NetworkConfigError
        When ``url`` is not of that form.
    """
    m = _TCP_RE.match(url or "")
    if not m or not 0 < int(m["port"]) < 65536:
        raise NetworkConfigError(f"{url!r} is not a ZeroMQ TCP URL like tcp://hostname:7777")
    return int(m["port"])


def url_host(url: str) -> str:
    """The host part of a ``tcp://host:port`` URL (brackets of IPv6 removed)."""
    m = _TCP_RE.match(url or "")
    if not m:
        raise NetworkConfigError(f"{url!r} is not a ZeroMQ TCP URL like tcp://hostname:7777")
    return m["host"].strip("[]")


def _check_url(url: str, what: str) -> str:
    if not isinstance(url, str) or not (url.startswith(("ipc://", "inproc://")) or _TCP_RE.match(url)):
        raise NetworkConfigError(f"{what} URL {url!r} is not a ZeroMQ URL like tcp://hostname:port")
    m = _TCP_RE.match(url)
    if m is not None and not 0 < int(m["port"]) < 65536:
        raise NetworkConfigError(f"{what} URL {url!r}: the port must be between 1 and 65535")
    return url


def make_entry(server: str = DEFAULT_SERVER_URL, feeder: str = DEFAULT_FEEDER_URL,
               name: str = "saxsdog", secret: str | None = None) -> dict[str, str]:
    """One network entry with a fresh secret (unless ``secret`` is given)."""
    entry = {"Name": str(name), "Server": _check_url(server, "server"),
             "Feeder": _check_url(feeder, "feeder"),
             "Secret": generate_secret() if secret is None else secret}
    validate_network([entry], "the new entry")
    return entry


def redacted(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an entry with the secret replaced by ``"<hidden>"`` (for printing/logging)."""
    out = dict(entry)
    if "Secret" in out:
        out["Secret"] = "<hidden>"
    return out


def _hidden_values(networks: Any) -> list[str]:
    """Strings of the file that may be a secret.

    Every Secret, a Server or Feeder that is not a URL (e.g. Server and Secret swapped), and
    the value of any unknown key.
    """
    out = []
    for entry in networks if isinstance(networks, list) else []:
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if not isinstance(value, str) or not value or key == "Name":
                continue
            if key == "Secret" or key not in ("Server", "Feeder") or "://" not in value:
                out.append(value)
    return sorted(out, key=len, reverse=True)


def _redact(text: str, hidden: Iterable[str]) -> str:
    for value in hidden:
        if len(value) >= 4:
            text = text.replace(value, "<hidden>")
            text = text.replace(json.dumps(value)[1:-1], "<hidden>")
    return text


def validate_network(networks: Any, source: str = "network file") -> list[dict[str, Any]]:
    """Validate the parsed content of a network file; return it as a list of entries.

    A single object (instead of a list) is accepted as a one-entry list.

    Raises
    ------
    NetworkConfigError
        Naming ``source``, the JSON path and the problem.  Messages never show a secret:
        no value of a Secret field, nor of a Server or Feeder that is not a URL (a secret
        written into the wrong field).
    """
    if isinstance(networks, dict):
        networks = [networks]
    problem = _DOC.first_problem(networks)
    if problem is None:
        for i, entry in enumerate(networks):
            bits = secret_entropy_bits(entry["Secret"])
            if bits < MIN_SECRET_BITS:
                raise NetworkConfigError(
                    f"{source}: invalid $[{i}].Secret: the secret is too weak (about {bits:.0f} bits of "
                    f"entropy, at least {MIN_SECRET_BITS} needed, e.g. 43 random URL-safe characters); "
                    "run saxsnetconf to make a strong one")
        return [dict(e) for e in networks]
    path, hidden = problem.path, _hidden_values(networks)
    if problem.kind == "missing":
        message = (f"{source}: invalid entry at {path.rsplit('.', 1)[0]}: {problem.message} "
                   "(each entry needs Server and Secret)")
    elif path.endswith(".Secret"):
        message = (f"{source}: invalid {path}: the secret must be a string of at least 16 characters "
                   "and 256 bits of entropy (run saxsnetconf to make a strong one)")
    elif problem.kind == "value" and path == "$" and isinstance(networks, list) and not networks:
        message = f"{source}: the list of servers is empty (run saxsnetconf)"
    elif problem.kind == "value" and path == "$":
        message = f"{source}: expected a JSON list of servers " '[{"Name", "Server", "Feeder", "Secret"}]'
    elif problem.kind == "unknown":
        message = f"{source}: invalid {path}: {problem.message} (expected {problem.expected})"
    elif problem.kind == "value":
        shown = problem.value if isinstance(problem.value, str) and problem.value not in hidden else None
        what = f"bad value {json.dumps(shown)}" if shown is not None else "bad value <hidden>"
        message = f"{source}: invalid value at {path}: {what}: expected {problem.expected}"
    else:
        message = f"{source}: invalid value at {path}: {problem.message}"
    raise NetworkConfigError(_redact(message, hidden))


_MAX_NETWORK_FILE = 1 << 20


def _current_uid() -> int:
    """The effective user id (a function, so that tests can pretend to be another user)."""
    return os.geteuid()


def _insecure(st: os.stat_result, p: Path) -> str | None:
    """Why a network file is not private to this user, or ``None`` when it is."""
    if os.name != "posix":
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (f"network file {p} is accessible to other users (mode {mode:04o}); it holds "
                f"the shared secret, so it must be private: run 'chmod 600 {p}'")
    if st.st_uid != _current_uid():
        return (f"network file {p} belongs to another user (uid {st.st_uid}), who could change "
                "its secret and servers: copy it to a file of your own and run "
                f"'chmod 600' on that")
    return None


def load_network(path: str | os.PathLike[str] | None = None, *,
                 allow_insecure: bool = False) -> list[dict[str, Any]]:
    """Read and validate a network file.

    Parameters
    ----------
    path
        The file (default: :func:`default_network_path`).
    allow_insecure
        Only warn (instead of refusing) when the file is accessible to other users.

    Raises
    ------
    NetworkConfigError
        For a missing, unreadable, insecure, non-JSON or invalid file.
    """
    p = Path(path).expanduser() if path is not None else default_network_path()
    try:
        # Look before opening: open() of a FIFO blocks until someone writes to it.
        if not stat.S_ISREG(os.stat(p).st_mode):
            raise NetworkConfigError(f"network file {p} is not a regular file")
        # O_NONBLOCK: should a FIFO replace the file between stat and open, open does not hang.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise NetworkConfigError(f"no network file at {p}; create one with saxsnetconf "
                                 "(or name one with --network FILE)") from None
    except OSError as exc:
        raise NetworkConfigError(f"cannot read network file {p}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NetworkConfigError(f"network file {p} is not a regular file")
        problem = _insecure(st, p)
        if problem:
            if not allow_insecure:
                raise NetworkConfigError(problem)
            warnings.warn(problem, stacklevel=2)
        raw = fh.read(_MAX_NETWORK_FILE + 1)
        if len(raw) > _MAX_NETWORK_FILE:
            raise NetworkConfigError(f"network file {p} is larger than {_MAX_NETWORK_FILE // 1024} KiB; "
                                     "it should be a short JSON list of servers")
    try:
        content = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NetworkConfigError(f"network file {p} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise NetworkConfigError(f"network file {p} is not valid JSON: {exc.msg} at line "
                                 f"{exc.lineno} column {exc.colno}") from None
    return validate_network(content, f"network file {p}")


def select_server(networks: Sequence[Mapping[str, Any]], serverno: int = 0) -> dict[str, Any]:
    """Entry number ``serverno`` of a loaded network list.

    Raises
    ------
    NetworkConfigError
        When there is no such entry (the message lists the entries there are).
    """
    if not isinstance(serverno, int) or isinstance(serverno, bool):
        raise NetworkConfigError(f"server number must be an integer, got {serverno!r}")
    if 0 <= serverno < len(networks):
        return dict(networks[serverno])
    listing = ", ".join(f"{i}: {e.get('Name', '?')!r} at {e.get('Server')}"
                        for i, e in enumerate(networks)) or "none"
    raise NetworkConfigError(f"there is no server number {serverno} in the network file "
                             f"(it lists {len(networks)}: {listing})")


def write_network(entries: Iterable[Mapping[str, Any]], path: str | os.PathLike[str] | None = None
                  ) -> Path:
    """Validate ``entries`` and write them as the network file, with mode 0600.

    The file is written under a temporary name created with mode 0600 and renamed over
    ``path``, so that it is never readable by others, not even for a moment.

    Returns
    -------
    Path
        The file written.
    """
    p = Path(path).expanduser() if path is not None else default_network_path()
    entries = validate_network(list(entries), "the network entries")
    text = json.dumps(entries, indent=2) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    from saxsdog.io.atomic import atomic_write_text

    atomic_write_text(p, text, mode=0o600, fsync=True)  # created 0600 before the secret is in
    return p


def add_network_entry(entry: Mapping[str, Any], path: str | os.PathLike[str] | None = None,
                      replace: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """Append ``entry`` to the network file (or replace its content when ``replace``).

    Returns
    -------
    (path, entries)
        The file written and its new content.
    """
    p = Path(path).expanduser() if path is not None else default_network_path()
    entries: list[dict[str, Any]] = []
    if not replace and p.exists():
        entries = load_network(p)
    entries.append(dict(entry))
    return write_network(entries, p), entries


def add_network_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--network FILE`` and ``-N/--serverno N`` to an argparse parser."""
    group = parser.add_argument_group("network")
    group.add_argument("--network", metavar="FILE", default=None,
                       help="network file (default: $SAXSDOG_NETWORK or ~/.saxsdognetwork)")
    group.add_argument("-N", "--serverno", metavar="N", type=int, default=0,
                       help="which server of the network file to use, by index (default: 0)")
    return parser


def server_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The network entry chosen by ``--network`` and ``-N`` of parsed arguments."""
    return select_server(load_network(getattr(args, "network", None)),
                         int(getattr(args, "serverno", 0) or 0))
