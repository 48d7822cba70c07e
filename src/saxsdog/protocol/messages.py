"""Leash requests and server responses: names, shapes, validation and the wire format.

Wire format (ZeroMQ REQ/REP, multipart)
---------------------------------------
Request
    frame 0: the request envelope (see :mod:`saxsdog.protocol.signing`) as UTF-8 JSON;
    frames 1..n: the raw bytes of the attachments (mask files, log tables), in the order of
    the envelope's ``"attachments"`` digests.
Response
    a single frame: the response object as UTF-8 JSON,
    ``{"result": STR, "data": {...}}``; errors are ``{"result": "Error", "data": {"Error": MSG}}``.

Only JSON is ever decoded (never pickle); NaN and Infinity are refused in both
directions, and a request (all frames together) may not exceed :data:`MAX_MESSAGE_BYTES`.

Commands
--------
The command names are those of the manual's request schema (seed 001 §3.6.1), which is
also what the original command-line leash sent:

============== ============================================== =========================
command        argument                                       result (``"result"``)
============== ============================================== =========================
new            ``{"calibration": {...}, "directory": [..],    ``new queue``
               "filenames": [..]}`` + one mask frame per
               calibration ``Masks`` entry (empty = no mask)
close          none                                           ``queue closed``
abort          none                                           ``queue stopped emptied and closed``
readdir        none                                           ``directory refilled queue``
stat           none                                           ``stat``
plot           none (latest curve: ``filename``, ``array``    ``plot data``
               = [q, I, err], ``graphs``, ``stat``)
plotdata       ``{"since": T}`` optional (the history of      ``plotdata``
               classifiers per image, updated after T)
get            ``{"since": T}`` optional                      ``cal`` (calibration, directory)
listdir        ``{"directory": [..]}`` optional               ``listdir``
fileslist      none                                           ``fileslist``
mergedata      ``{"mergeconf": {...}, "filenames": [..]}``    ``mergedata``
               + the attached log files
getmergedata   none                                           ``mergedata``
============== ============================================== =========================

The long names used in the manual's §3.5 examples (``"new queue"``, ``"close queue"``,
``"abort queue"``, ``"send plot"``), and ``"get plotdata"``, are accepted as aliases;
:func:`canonical_command` maps them to the names above.  Directories are lists of path
components relative to the server's base directory (``["."]`` is the base directory itself).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

from saxsdog.errors import SaxsdogError
from saxsdog.schemas import load_schema as _load_schema, validator

from .signing import canonical_json

__all__ = [
    "ProtocolError",
    "COMMANDS",
    "COMMAND_ALIASES",
    "RESULTS",
    "ERROR_RESULT",
    "EMPTY_RESULT",
    "STAT_KEYS",
    "MAX_MESSAGE_BYTES",
    "canonical_command",
    "validate_request",
    "validate_response",
    "error_response",
    "ok_response",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
    "load_schema",
    "json_path",
    "finite_or_none",
]

#: The commands a server understands (seed 001 §3.6.1).
COMMANDS: tuple[str, ...] = ("new", "close", "abort", "get", "plot", "plotdata", "readdir",
                             "stat", "listdir", "fileslist", "mergedata", "getmergedata")

#: Names of the manual's §3.5 examples, accepted as aliases of :data:`COMMANDS`.
COMMAND_ALIASES: dict[str, str] = {"new queue": "new", "close queue": "close",
                                   "abort queue": "abort", "send plot": "plot",
                                   "get plotdata": "plotdata"}

#: The ``"result"`` a server answers to each command on success.
RESULTS: dict[str, str] = {
    "new": "new queue",
    "close": "queue closed",
    "abort": "queue stopped emptied and closed",
    "readdir": "directory refilled queue",
    "stat": "stat",
    "plot": "plot data",
    "plotdata": "plotdata",
    "get": "cal",
    "listdir": "listdir",
    "fileslist": "fileslist",
    "mergedata": "mergedata",
    "getmergedata": "mergedata",
}

#: The ``"result"`` of an error response.
ERROR_RESULT = "Error"
#: A ``"result"`` a server may give to ``plot`` when no image has been processed yet
#: (the original's; a server may instead answer "plot data" with empty columns).
EMPTY_RESULT = "Empty"

#: Keys every ``data.stat`` object carries (those of the original server).
STAT_KEYS: tuple[str, ...] = ("time interval", "queue length", "frames per sec",
                              "images processed", "pics")

#: Default limit for one request, envelope and attachments together (64 MiB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ProtocolError(SaxsdogError, ValueError):
    """A message does not follow the protocol (bad JSON, wrong shape, too large, ...)."""


def canonical_command(name: str) -> str:
    """The canonical command for ``name`` (aliases resolved).

    Raises
    ------
    ProtocolError
        For an unknown command, naming it and listing the known ones.
    """
    if isinstance(name, str):
        if name in COMMANDS:
            return name
        if name in COMMAND_ALIASES:
            return COMMAND_ALIASES[name]
    raise ProtocolError(f"unknown command {name!r}; known commands: {', '.join(COMMANDS)}")


# --------------------------------------------------------------------------- schemas

load_schema = _load_schema
_validator = validator


def json_path(parts: Iterable[Any]) -> str:
    """``$.argument.directory[0]`` style path from jsonschema's path parts."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.isidentifier():
            out += f".{p}"
        else:
            out += f"[{json.dumps(p)}]"
    return out


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error) -> str:
    """A readable sentence for one jsonschema error."""
    v = error.validator
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    if v == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), None)
        return f"missing required field {missing!r}"
    if v == "additionalProperties":
        allowed = set((error.schema.get("properties") or {}).keys())
        extra = sorted(k for k in error.instance if k not in allowed)
        what = ", ".join(repr(k) for k in extra) or "unexpected fields"
        if allowed:
            return f"unexpected field(s) {what} (allowed: {', '.join(sorted(allowed))})"
        return f"unexpected field(s) {what} ({desc or 'no fields allowed'})"
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"expected {want}, got {_short(error.instance)}"
    if v == "enum":
        return (f"{_short(error.instance)} is not one of "
                f"{', '.join(json.dumps(x) for x in error.validator_value)}")
    if v in ("pattern", "format", "minLength", "maxLength", "anyOf", "oneOf") and desc:
        return f"bad value {_short(error.instance)}: expected {desc}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
             "maxItems", "const"):
        return f"bad value {_short(error.instance)}: {error.message}"
    return error.message


def _check(instance: Any, schema_name: str, what: str) -> None:
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(schema_name).iter_errors(instance))
    if error is None:
        return
    parts = list(error.absolute_path)
    if error.validator == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), None)
        raise ProtocolError(f"invalid {what} at {json_path(parts + [missing])}: "
                            f"missing required field {missing!r}")
    raise ProtocolError(f"invalid {what} at {json_path(parts)}: {_describe(error)}")


def validate_request(envelope: Any) -> None:
    """Check a request envelope against ``leash_request.schema.json``.

    Raises
    ------
    ProtocolError
        Naming the JSON path and the problem, e.g.
        ``invalid request at $.argument.directory[1]: bad value "..": expected one path
        component: not empty, not '..', without '/', '\\' or NUL``.
    """
    if not isinstance(envelope, Mapping):
        raise ProtocolError(f"invalid request at $: expected a JSON object, got {_short(envelope)}")
    if "command" not in envelope:
        raise ProtocolError("invalid request at $.command: missing required field 'command'")
    command = envelope["command"]
    if not isinstance(command, str):
        raise ProtocolError(f"invalid request at $.command: expected a string, got {_short(command)}")
    try:
        canonical_command(command)
    except ProtocolError as exc:
        raise ProtocolError(f"invalid request at $.command: {exc}") from None
    _check(dict(envelope), "leash_request.schema.json", "request")


def validate_response(resp: Any) -> None:
    """Check a response against ``leash_response.schema.json``.

    Raises
    ------
    ProtocolError
        Naming the JSON path and the problem.
    """
    if not isinstance(resp, Mapping):
        raise ProtocolError(f"invalid response at $: expected a JSON object, got {_short(resp)}")
    _check(dict(resp), "leash_response.schema.json", "response")


def error_response(message: str) -> dict[str, Any]:
    """``{"result": "Error", "data": {"Error": message}}``."""
    return {"result": ERROR_RESULT, "data": {"Error": str(message)}}


def ok_response(result: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"result": result, "data": data}``."""
    if not isinstance(result, str) or not result:
        raise ValueError("result must be a non-empty string")
    return {"result": result, "data": dict(data or {})}


# --------------------------------------------------------------------------- wire format

def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed in saxsdog messages (JSON has no NaN/Infinity)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ProtocolError(f"duplicate key {k!r} in JSON object")
        out[k] = v
    return out


def _loads(frame: bytes, what: str) -> dict[str, Any]:
    try:
        text = bytes(frame).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not UTF-8 text (invalid byte at position {exc.start}); "
                            "saxsdog messages are JSON") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(obj).__name__ if obj is not None else 'null'}")
    return obj


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return canonical_json(obj).encode("ascii")
    except ValueError as exc:
        raise ProtocolError(f"cannot encode {what}: {exc}") from None


def _frame_bytes(frame: Any) -> bytes:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame)
    buf = getattr(frame, "bytes", None)  # zmq.Frame
    if isinstance(buf, bytes):
        return buf
    raise ProtocolError(f"message frames must be bytes, got {type(frame).__name__}")


def _size(frame: Any) -> int:
    if isinstance(frame, memoryview):
        return frame.nbytes
    try:
        return len(frame)
    except TypeError:
        return len(_frame_bytes(frame))


def encode_request(envelope: Mapping[str, Any], attachments: Sequence[bytes] = ()) -> list[bytes]:
    """Frames of a request: the JSON envelope, then the attachments."""
    return [_dumps(dict(envelope), "request")] + [bytes(a) for a in attachments]


def decode_request(frames: Sequence[Any], max_bytes: int = MAX_MESSAGE_BYTES
                   ) -> tuple[dict[str, Any], list[bytes]]:
    """Split and parse the frames of a request.

    Returns
    -------
    (envelope, attachments)

    Raises
    ------
    ProtocolError
        For an empty or oversized message, non-UTF-8 or malformed JSON, JSON that is not an
        object, duplicate keys, NaN or Infinity.
    """
    if not frames:
        raise ProtocolError("empty message: expected a JSON request in frame 0")
    total = sum(_size(f) for f in frames)
    if total > max_bytes:
        raise ProtocolError(f"request too large: {total} bytes in {len(frames)} frame(s), "
                            f"the limit is {max_bytes} bytes")
    envelope = _loads(_frame_bytes(frames[0]), "request")
    return envelope, [_frame_bytes(f) for f in frames[1:]]


def encode_response(resp: Mapping[str, Any]) -> list[bytes]:
    """Frames of a response (one JSON frame)."""
    return [_dumps(dict(resp), "response")]


def decode_response(frames: Sequence[Any], max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse the frames of a response (see :func:`decode_request` for the errors)."""
    if not frames:
        raise ProtocolError("empty response: expected a JSON object in frame 0")
    total = sum(_size(f) for f in frames)
    if total > max_bytes:
        raise ProtocolError(f"response too large: {total} bytes, the limit is {max_bytes} bytes")
    if len(frames) > 1:
        raise ProtocolError(f"response has {len(frames)} frames, expected 1")
    return _loads(_frame_bytes(frames[0]), "response")


def finite_or_none(values: Iterable[float]) -> list[float | None]:
    """Numbers for JSON: NaN and ±Infinity become ``None`` (JSON ``null``)."""
    return [float(v) if math.isfinite(v) else None for v in values]
