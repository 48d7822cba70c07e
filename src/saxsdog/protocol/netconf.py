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
import json
import math
import os
import re
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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


def secret_entropy_bits(secret: str) -> float:
    """An estimate of the entropy of a secret, in bits (an upper bound for random strings).

    The alphabet is the union of the character classes used (lower case 26, upper case 26,
    digits 10, ASCII punctuation and space 33, anything else 100; 16 for hex digits only).  It is scaled down by how
    many distinct symbols occur compared with a random string of that length over that
    alphabet, so ``"a" * 64`` or ``"ab" * 32`` count as the few symbols they are, and a
    string repeating a shorter one counts as that one.  The result is length × log2(alphabet):
    it knows no words, so it is generous to phrases, but it refuses short, repetitive and
    small-alphabet secrets.
    saxsnetconf's secrets (64 URL-safe characters, 384 bits) come out near 380-400 bits; a
    random 43-character URL-safe secret (256 bits) near 270.

    Examples
    --------
    >>> secret_entropy_bits("a" * 16) < 8
    True
    >>> secret_entropy_bits(generate_secret()) > 256
    True
    """
    if not secret:
        return 0.0
    if all(c in "0123456789abcdef" for c in secret) or all(c in "0123456789ABCDEF" for c in secret):
        pool = 16  # hex digits (e.g. openssl rand -hex 32)
    else:
        pool = sum(size for chars, size in _CHARACTER_CLASSES if any(c in chars for c in secret))
    if any(not (" " <= c <= "~") for c in secret):
        pool += _OTHER_CHARACTERS
    n = len(secret)
    # the shortest piece whose repetition (at least twice) makes up the secret
    period = next((p for p in range(1, n // 2 + 1) if all(secret[i] == secret[i % p] for i in range(n))), n)
    distinct = len(set(secret))
    expected_distinct = pool * (1.0 - (1.0 - 1.0 / pool) ** period)
    # A random string shows about expected_distinct symbols (a little fewer when its true
    # alphabet is smaller than the classes suggest); only clearly fewer reduce the alphabet.
    ratio = distinct / expected_distinct
    alphabet = float(pool) if ratio >= 0.75 else pool * ratio
    return period * math.log2(alphabet) if alphabet > 1 else 0.0


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
