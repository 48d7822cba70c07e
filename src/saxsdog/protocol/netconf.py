"""The network file ``~/.saxsdognetwork``: which server and feeder to talk to, and the secret.

The file is a JSON list (seed 001 §3.1)::

    [{"Name": "Pilatus1M", "Server": "tcp://hostname:7777",
      "Feeder": "tcp://hostname:5555", "Secret": "<64 random characters>"}]

It is validated against ``saxsdog/schemas/network.schema.json``.  Because it holds the
shared secret it is written with mode 0600, and loading refuses a file that other users
can read or write (``chmod 600 FILE`` fixes that).  Every tool takes ``--network FILE``
(default: ``$SAXSDOG_NETWORK`` or ``~/.saxsdognetwork``) and ``-N/--serverno`` to choose
an entry; :func:`add_network_arguments` adds both to an argparse parser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from saxsdog.errors import SaxsdogError

__all__ = [
    "NetworkConfigError",
    "DEFAULT_SERVER_URL",
    "DEFAULT_FEEDER_URL",
    "default_network_path",
    "generate_secret",
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
_SCHEMA = "network.schema.json"
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
    if url.startswith("tcp://") and not 0 < int(_TCP_RE.match(url)["port"]) < 65536:
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


def validate_network(networks: Any, source: str = "network file") -> list[dict[str, Any]]:
    """Validate the parsed content of a network file; return it as a list of entries.

    A single object (instead of a list) is accepted as a one-entry list.

    Raises
    ------
    NetworkConfigError
        Naming ``source``, the JSON path and the problem (never the secret's value).
    """
    import jsonschema

    from .messages import _describe, _validator, json_path

    if isinstance(networks, dict):
        networks = [networks]
    error = jsonschema.exceptions.best_match(_validator(_SCHEMA).iter_errors(networks))
    if error is None:
        return [dict(e) for e in networks]
    parts = list(error.absolute_path)
    if error.validator == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), None)
        raise NetworkConfigError(f"{source}: invalid entry at {json_path(parts)}: missing "
                                 f"required field {missing!r} (each entry needs Server and Secret)")
    if "Secret" in parts:
        raise NetworkConfigError(f"{source}: invalid {json_path(parts)}: the secret must be a string "
                                 "of at least 16 characters (run saxsnetconf to make a strong one)")
    if error.validator == "minItems" and not parts:
        raise NetworkConfigError(f"{source}: the list of servers is empty (run saxsnetconf)")
    if error.validator == "type" and not parts:
        raise NetworkConfigError(f"{source}: expected a JSON list of servers "
                                 '[{"Name", "Server", "Feeder", "Secret"}]')
    raise NetworkConfigError(f"{source}: invalid value at {json_path(parts)}: {_describe(error)}")


def _insecure(st: os.stat_result) -> bool:
    return os.name == "posix" and bool(stat.S_IMODE(st.st_mode) & 0o077)


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
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise NetworkConfigError(f"no network file at {p}; create one with saxsnetconf "
                                 "(or name one with --network FILE)") from None
    except OSError as exc:
        raise NetworkConfigError(f"cannot read network file {p}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NetworkConfigError(f"network file {p} is not a regular file")
        if _insecure(st):
            mode = stat.S_IMODE(st.st_mode)
            msg = (f"network file {p} is accessible to other users (mode {mode:04o}); it holds "
                   f"the shared secret, so it must be private: run 'chmod 600 {p}'")
            if not allow_insecure:
                raise NetworkConfigError(msg)
            warnings.warn(msg, stacklevel=2)
        raw = fh.read()
    try:
        content = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NetworkConfigError(f"network file {p} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise NetworkConfigError(f"network file {p} is not valid JSON: {exc.msg} at line "
                                 f"{exc.lineno} column {exc.colno}") from None
    return validate_network(content, f"network file {p}")


def select_server(networks: list[Mapping[str, Any]], serverno: int = 0) -> dict[str, Any]:
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
