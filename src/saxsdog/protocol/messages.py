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
The commands, their aliases, results and argument schemas are those of the command table,
:mod:`saxsdog.protocol.commands`; :data:`COMMANDS`, :data:`COMMAND_ALIASES` and
:data:`RESULTS` here are views of it.  :func:`validate_request` checks the envelope against
``leash_request.schema.json`` and then the argument against the command's own schema
(:func:`validate_argument`), so that a transport without an envelope (the web leash)
checks arguments the same way.  Directories are lists of path components relative to the
server's base directory (``["."]`` is the base directory itself).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from saxsdog.errors import SaxsdogError
from saxsdog.schemas import load_schema as _load_schema, validator

from . import commands as _table
from .signing import canonical_json

if TYPE_CHECKING:  # jsonschema itself is imported only when a message is checked
    from jsonschema.exceptions import ValidationError

__all__ = [
    "ProtocolError",
    "COMMANDS",
    "COMMAND_ALIASES",
    "RESULTS",
    "ERROR_RESULT",
    "EMPTY_RESULT",
    "STAT_KEYS",
    "MAX_MESSAGE_BYTES",
    "PENDING_RESULT",
    "MAX_TEXT_ECHO",
    "canonical_command",
    "unknown_command",
    "shorten",
    "validate_request",
    "validate_envelope",
    "validate_argument",
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

#: The commands a server understands (the names of the command table).
COMMANDS: tuple[str, ...] = _table.command_names()

#: Other names accepted for commands (the long names of the original manual's examples).
COMMAND_ALIASES: dict[str, str] = dict(_table.ALIASES)

#: The ``"result"`` a server answers to each command on success.
RESULTS: dict[str, str] = {c.name: c.result for c in _table.COMMANDS}

#: The ``"result"`` of the answer to a command that is still running.
PENDING_RESULT = _table.PENDING_RESULT

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


#: Longest text of a request echoed in an error message or a log line.
MAX_TEXT_ECHO = 200

#: Largest integer accepted anywhere in a request (no field of the protocol needs more).
MAX_REQUEST_INT = 2**63 - 1


def shorten(value: Any, limit: int = MAX_TEXT_ECHO) -> str:
    """``repr``-like text of ``value`` for messages and logs, cut to about ``limit`` characters.

    A longer text keeps its first ``limit`` characters and says how long it was, so a
    request of half a million characters is never echoed back or logged whole:
    ``'xxxx…' (500000 characters)``.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} characters)"
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def unknown_command(name: Any, where: str = "") -> ProtocolError:
    """The error for an unknown command: the name (shortened) and the known ones."""
    prefix = f"invalid request at {where}: " if where else ""
    return ProtocolError(f"{prefix}unknown command {shorten(name)}; known commands: {', '.join(COMMANDS)}")


def canonical_command(name: str) -> str:
    """The canonical command for ``name`` (aliases resolved).

    Raises
    ------
    ProtocolError
        For an unknown command, naming it (shortened) and listing the known ones.
    """
    command = _table.find_command(name)
    if command is None:
        raise unknown_command(name)
    return command.name


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


def _describe(error: ValidationError) -> str:
    """A readable sentence for one jsonschema error."""
    v = error.validator
    # An error raised by a validator has all its fields set (the stubs' Unset is for hand-made ones).
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    instance: Any = error.instance
    expected: Any = error.validator_value
    desc = schema.get("description")
    if v == "required":
        missing = next((f for f in expected if f not in instance), None)
        return f"missing required field {missing!r}"
    if v == "additionalProperties":
        allowed = set((schema.get("properties") or {}).keys())
        extra = sorted(k for k in instance if k not in allowed)
        what = ", ".join(repr(k) for k in extra) or "unexpected fields"
        if allowed:
            return f"unexpected field(s) {what} (allowed: {', '.join(sorted(allowed))})"
        return f"unexpected field(s) {what} ({desc or 'no fields allowed'})"
    if v == "type":
        want = expected
        want = " or ".join(want) if isinstance(want, list) else want
        return f"expected {want}, got {_short(instance)}"
    if v == "enum":
        return (f"{_short(instance)} is not one of "
                f"{', '.join(json.dumps(x) for x in expected)}")
    if v in ("pattern", "format", "minLength", "maxLength", "anyOf", "oneOf") and desc:
        return f"bad value {_short(instance)}: expected {desc}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
             "maxItems", "const"):
        return f"bad value {_short(instance)}: {error.message}"
    return error.message


@cache
def _def_validator(schema_name: str, definition: str) -> Any:
    """A validator for one ``$defs`` entry of a shipped schema."""
    import jsonschema

    schema = load_schema(schema_name)
    sub = {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.validators.validator_for(schema)(sub)


def _check(instance: Any, schema_name: str, what: str, definition: str | None = None,
           prefix: Sequence[Any] = ()) -> None:
    import jsonschema

    v = _validator(schema_name) if definition is None else _def_validator(schema_name, definition)
    error = jsonschema.exceptions.best_match(v.iter_errors(instance))
    if error is None:
        return
    parts = list(prefix) + list(error.absolute_path)
    if error.validator == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), None)
        raise ProtocolError(f"invalid {what} at {json_path(parts + [missing])}: "
                            f"missing required field {missing!r}")
    raise ProtocolError(f"invalid {what} at {json_path(parts)}: {_describe(error)}")


def _check_numbers(value: Any, path: str, depth: int = 0) -> None:
    """Refuse integers beyond 64 bits anywhere in ``value`` (no field needs them, and a
    5000-digit number only ends in an overflow somewhere deep in the server)."""
    if depth > 200:
        raise ProtocolError(f"invalid request at {path}: nested too deeply")
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_REQUEST_INT:
            raise ProtocolError(f"invalid request at {path}: integer too large "
                                f"({len(str(abs(value)))} digits; at most {MAX_REQUEST_INT})")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_numbers(v, f"{path}.{k}" if isinstance(k, str) and k.isidentifier()
                           else f"{path}[{shorten(k, 40)}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_numbers(v, f"{path}[{i}]", depth + 1)


def validate_argument(command: str, argument: Any) -> Any:
    """Check a command's argument against its schema in the command table.

    Parameters
    ----------
    command
        A command name or alias.
    argument
        The argument (``None``: no argument).

    Returns
    -------
    dict
        The argument to carry out the command with (``{}`` for none).

    Raises
    ------
    ProtocolError
        For an unknown command, or naming the JSON path and the problem, e.g.
        ``invalid request at $.argument.directory[1]: bad value "..": expected one path
        component: not empty, not '..', without '/', '\\' or NUL``.
    """
    spec = _table.find_command(command)
    if spec is None:
        raise unknown_command(command, "$.command")
    if argument is None:
        if spec.argument_required:
            raise ProtocolError("invalid request at $.argument: missing required field 'argument' "
                                f"({spec.name!r} needs one)")
        return {}
    _check_numbers(argument, "$.argument")
    _check(argument, "leash_request.schema.json", "request", spec.argument, ["argument"])
    return argument


def validate_envelope(envelope: Any) -> None:
    """Check a request envelope (not its argument) against ``leash_request.schema.json``.

    Raises
    ------
    ProtocolError
        Naming the JSON path and the problem.
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
    _check_numbers({k: v for k, v in envelope.items() if k != "argument"}, "$")
    _check(dict(envelope), "leash_request.schema.json", "request")


def validate_request(envelope: Any) -> None:
    """Check a request: the envelope (:func:`validate_envelope`), then its argument
    (:func:`validate_argument`).

    Raises
    ------
    ProtocolError
        Naming the JSON path and the problem.
    """
    validate_envelope(envelope)
    validate_argument(envelope["command"], envelope.get("argument"))


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
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
        reason = (f"an integer has more than {limit} digits" if "integer string conversion" in str(exc)
                  else shorten(str(exc), 120))
        raise ProtocolError(f"{what} is not acceptable JSON: {reason}") from None
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
