"""A leash client: signed requests to a saxsdog server over ZeroMQ REQ.

>>> with LeashClient("tcp://localhost:7777", secret) as leash:      # doctest: +SKIP
...     print(leash.request("stat")["data"]["stat"]["frames per sec"])

A request that gets no answer within ``timeout`` seconds raises :class:`TimeoutError`;
the socket is then closed and a fresh one is made for the next request (ZeroMQ's
"lazy pirate" pattern), because a REQ socket that missed its answer cannot send again.

A slow command (``new`` building its integration operators, ``close``, ``mergedata``,
...) is answered when it is done, with its own answer, as the original SAXSDOG server
did.  The client waits for it up to ``command_timeout`` seconds, as long as the server
keeps answering ``stat`` on a second connection every ``timeout`` seconds (so a server
that is gone is noticed as quickly as for any other command).

This module needs neither the calibration code nor the server: a calibration is checked
against the shipped JSON Schema only.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

try:
    import zmq
except ImportError:  # pyzmq is the [server] extra; the request builders below work without it
    zmq = None  # type: ignore[assignment]

from saxsdog.errors import SaxsdogError
from saxsdog.extras import import_optional

from .commands import find_command
from .messages import ERROR_RESULT, MAX_MESSAGE_BYTES, decode_response, encode_request, validate_response
from .signing import sign_request

__all__ = ["LeashClient", "ServerError", "raise_for_error", "directory_components",
           "build_new_request", "build_listdir_request", "build_mergedata_request",
           "build_validate_request", "build_convert_request", "build_maskpreview_request",
           "check_calibration"]


class ServerError(SaxsdogError):
    """The server answered with an error (``data.Error``)."""

    def __init__(self, message: str, response: Mapping[str, Any] | None = None):
        self.response = dict(response or {})
        super().__init__(message)


def raise_for_error(resp: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``resp``, or raise :class:`ServerError` if it reports an error.

    Any response with ``data.Error`` counts (the original server also used results such as
    ``"ValueError"`` or ``"IOError"``), as does ``result == "Error"``.
    """
    data = resp.get("data") if isinstance(resp, Mapping) else None
    if isinstance(data, Mapping) and "Error" in data:
        err = data["Error"]
        raise ServerError(err if isinstance(err, str) else str(err), resp)
    if isinstance(resp, Mapping) and resp.get("result") == ERROR_RESULT:
        raise ServerError("error without a message", resp)
    return resp


class LeashClient:
    """Signed request/response client for a saxsdog server.

    Parameters
    ----------
    server_url
        The server's command URL, e.g. ``tcp://localhost:7777``.
    secret
        The shared secret of the network file (never shown in ``repr`` or errors).
    timeout
        Seconds to wait for each answer (for a slow command: for each sign of life).
    context
        A ZeroMQ context (default: the process-wide instance).
    max_response_bytes
        Largest response accepted.
    command_timeout
        Longest wait for the answer of a command the server runs on a worker thread
        (``new``, ``close``, ``abort``, ``readdir``, ``mergedata``, ``listdir``,
        ``maskpreview``, ``convertponi``), seconds, while the server answers ``stat``.
    """

    def __init__(self, server_url: str, secret: str | bytes, timeout: float = 10.0,
                 context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 max_response_bytes: int = MAX_MESSAGE_BYTES, command_timeout: float = 600.0):
        if not isinstance(server_url, str) or "://" not in server_url:
            raise ValueError(f"server URL {server_url!r} is not a ZeroMQ URL like tcp://hostname:7777")
        if not secret:
            raise ValueError("the shared secret is empty; create a network file with saxsnetconf")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.server_url = server_url
        self.timeout = float(timeout)
        self.max_response_bytes = int(max_response_bytes)
        self.command_timeout = float(command_timeout)
        self.__secret = secret
        if zmq is None:
            import_optional("zmq", "server", "the leash client")
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = None

    def __repr__(self) -> str:
        return f"LeashClient(server_url={self.server_url!r}, timeout={self.timeout:g})"

    # -- socket handling ---------------------------------------------------------------
    def _connect(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_response_bytes)
            try:
                sock.connect(self.server_url)
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                raise ValueError(f"cannot connect to {self.server_url!r}: {exc}") from None
            self._socket = sock
        return self._socket

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        """Close the socket (the context is left alone)."""
        self._reset()

    def __enter__(self) -> "LeashClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------
    def request(self, command: str, argument: Any = None,
                attachments: Iterable[bytes] = ()) -> dict[str, Any]:
        """Send a signed request and return the validated response.

        Parameters
        ----------
        command
            A command of :data:`saxsdog.protocol.messages.COMMANDS`.
        argument
            Its argument (a JSON object) or ``None``.
        attachments
            Raw bytes sent as extra frames (e.g. a mask file).

        Returns
        -------
        dict
            The response, ``{"result": ..., "data": {...}}`` — possibly an error response;
            see :func:`raise_for_error`.

        Raises
        ------
        TimeoutError
            When the server does not answer within ``timeout`` seconds (for a command it
            runs on a worker thread: when it stops answering ``stat`` meanwhile, or the
            command is not done within ``command_timeout``).
        ProtocolError
            When the answer is not a valid response.
        """
        spec = find_command(command)
        slow = spec is not None and (spec.runs != "inline" or spec.name == "job")
        return self._exchange(command, argument, attachments, self.command_timeout if slow else None)

    def _exchange(self, command: str, argument: Any, attachments: Iterable[bytes],
                  patience: float | None = None) -> dict[str, Any]:
        """One signed request and its validated response.

        ``patience``: how long to wait for a command the server is still running, as long
        as it answers ``stat`` within ``timeout`` each time the answer is late.
        """
        attachments = [bytes(a) for a in attachments]
        envelope = sign_request(command, argument, secret=self.__secret, attachments=attachments)
        frames = encode_request(envelope, attachments)
        sock = self._connect()
        try:
            sock.send_multipart(frames, copy=len(frames[0]) < 65536)
            deadline = time.monotonic() + (patience or 0.0)
            while not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
                if patience is None or not self._server_alive():
                    self._reset()
                    raise TimeoutError(
                        f"no answer from the saxsdog server at {self.server_url} within "
                        f"{self.timeout:g} s (is saxsdogserver running there, and is the URL right?)")
                if time.monotonic() > deadline:
                    self._reset()
                    raise TimeoutError(
                        f"the saxsdog server at {self.server_url} has not finished {command!r} within "
                        f"{patience:g} s; 'saxsleash stat' shows when it is done")
            reply = sock.recv_multipart()
        except zmq.ZMQError as exc:
            self._reset()
            raise ConnectionError(f"talking to the saxsdog server at {self.server_url} failed: {exc}"
                                  ) from None
        resp = decode_response(reply, self.max_response_bytes)
        validate_response(resp)
        return resp

    def _server_alive(self) -> bool:
        """Whether the server answers ``stat`` within ``timeout`` on a connection of its own."""
        probe = self._context.socket(zmq.REQ)
        probe.setsockopt(zmq.LINGER, 0)
        probe.setsockopt(zmq.MAXMSGSIZE, self.max_response_bytes)
        try:
            probe.connect(self.server_url)
            probe.send_multipart(encode_request(sign_request("stat", None, secret=self.__secret)))
            if not probe.poll(int(self.timeout * 1000), zmq.POLLIN):
                return False
            probe.recv_multipart()
            return True
        except zmq.ZMQError:
            return False
        finally:
            probe.close(linger=0)

    def call(self, command: str, argument: Any = None,
             attachments: Iterable[bytes] = ()) -> dict[str, Any]:
        """Like :meth:`request`, but raise :class:`ServerError` for an error response."""
        return dict(raise_for_error(self.request(command, argument, attachments)))


# --------------------------------------------------------------------------- request builders

def directory_components(directory: str) -> list[str]:
    """A relative directory as the list of path components the protocol uses.

    ``"data/run42/"`` → ``["data", "run42"]``; ``""`` or ``"."`` → ``["."]``.

    Raises
    ------
    ValueError
        For an absolute path or one containing ``..`` (the server only serves what is
        below its base directory).
    """
    text = str(directory)
    if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text) or os.path.isabs(text):
        raise ValueError(f"directory {text!r} must be relative to the server's base directory")
    parts = [p for p in re.split(r"[\\/]+", text) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"directory {text!r} must not contain '..' (it is relative to the "
                         "server's base directory)")
    return parts or ["."]


def _read_json_object(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return obj


def build_new_request(calibration: str | Mapping[str, Any], mask: str | None, directory: str,
                      validate: bool = True) -> tuple[dict[str, Any], list[bytes]]:
    """The argument and attachments of a ``new`` request.

    Parameters
    ----------
    calibration
        A calibration file (JSON) or an already loaded calibration object.
    mask
        The mask file for the calibration's first ``Masks`` entry (``None``: use the
        entry's own ``MaskFile``).  Further masks are read from their ``MaskFile``,
        relative to the calibration file's folder; an empty ``MaskFile`` sends an empty
        frame (no mask).
    directory
        The image directory, relative to the server's base directory.
    validate
        Check the calibration against its schema first.

    Returns
    -------
    (argument, attachments)
        ``{"calibration", "directory", "filenames"}`` and one frame per mask.

    Raises
    ------
    FileNotFoundError, ValueError, saxsdog.errors.CalibrationError
    """
    if isinstance(calibration, Mapping):
        cal, base = dict(calibration), os.getcwd()
    else:
        cal = _read_json_object(str(calibration), "calibration file")
        base = os.path.dirname(os.path.abspath(str(calibration)))
    if validate:
        check_calibration(cal)
    masks = cal.get("Masks") or []
    names: list[str] = []
    frames: list[bytes] = []

    def _load(path: str) -> None:
        try:
            with open(path, "rb") as fh:
                frames.append(fh.read())
        except FileNotFoundError:
            raise FileNotFoundError(f"mask file {path} does not exist") from None
        names.append(os.path.basename(path))

    for i, entry in enumerate(masks if masks else ([{}] if mask else [])):
        if i == 0 and mask:
            _load(mask)
            continue
        name = entry.get("MaskFile", "") if isinstance(entry, Mapping) else ""
        if not name:
            frames.append(b"")
            names.append("")
        else:
            _load(name if os.path.isabs(name) else os.path.join(base, name))
    argument = {"calibration": cal, "directory": directory_components(directory),
                "filenames": names}
    return argument, frames


def build_mergedata_request(mergeconf: str | Mapping[str, Any]
                            ) -> tuple[dict[str, Any], list[bytes]]:
    """The argument and attachments of a ``mergedata`` request.

    Log files named by ``LocalPath`` in ``LogDataTables[*].Files[*]`` (relative to the
    configuration file's folder) are attached; ``filenames`` lists their ``LocalPath``.
    """
    if isinstance(mergeconf, Mapping):
        conf, base = dict(mergeconf), os.getcwd()
    else:
        conf = _read_json_object(str(mergeconf), "merge configuration")
        base = os.path.dirname(os.path.abspath(str(mergeconf)))
    names: list[str] = []
    frames: list[bytes] = []
    for table in conf.get("LogDataTables") or []:
        for desc in (table.get("Files") or []) if isinstance(table, Mapping) else []:
            local = desc.get("LocalPath") if isinstance(desc, Mapping) else None
            if not local:
                continue
            path = local if os.path.isabs(local) else os.path.join(base, local)
            try:
                with open(path, "rb") as fh:
                    frames.append(fh.read())
            except FileNotFoundError:
                raise FileNotFoundError(f"log file {path} (LocalPath) does not exist") from None
            names.append(local)
    return {"mergeconf": conf, "filenames": names}, frames


def check_calibration(calibration: Any) -> None:
    """Check a calibration against the shipped calibration schema (no server, no operators).

    Raises
    ------
    saxsdog.errors.CalibrationError
        For the most relevant problem, naming its JSON path, value and expectation.
    """
    import jsonschema

    from saxsdog.errors import CalibrationError
    from saxsdog.schemas import expected_text, json_path, validator

    if not isinstance(calibration, Mapping):
        raise CalibrationError("a calibration must be a JSON object", "$", calibration, "a JSON object")
    error = jsonschema.exceptions.best_match(validator("calibration.schema.json").iter_errors(dict(calibration)))
    if error is None:
        return
    parts = list(error.absolute_path)
    if error.validator == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), None)
        raise CalibrationError(f"missing required field {missing!r}", json_path(parts + [missing]), None,
                               expected_text(error))
    if error.validator in ("oneOf", "anyOf"):
        raise CalibrationError(error.schema.get("description", error.message), json_path(parts), None,
                               expected_text(error))
    raise CalibrationError(f"bad value {error.instance!r}", json_path(parts), error.instance, expected_text(error))


def build_listdir_request(directory: str = ".") -> tuple[dict[str, Any], list[bytes]]:
    """The argument of a ``listdir`` request (a directory relative to the server's base)."""
    return {"directory": directory_components(directory)}, []


def build_validate_request(calibration: str | Mapping[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The argument of a ``validate`` request: a calibration file (JSON) or object."""
    if isinstance(calibration, Mapping):
        return {"calibration": dict(calibration)}, []
    path = str(calibration)
    try:
        with open(path, "rb") as fh:
            cal = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration file {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"calibration file {path} is not valid JSON: {exc}") from None
    return {"calibration": cal}, []  # any JSON: the server reports what is wrong with it


def build_convert_request(text_file: str, template: str | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """The argument of a ``convertfit2d`` or ``convertponi`` request.

    Parameters
    ----------
    text_file
        The FIT2D geometry text or PONI file.
    template
        A calibration file whose other fields the result keeps (optional).
    """
    try:
        with open(text_file, encoding="utf-8", errors="replace") as fh:
            text = fh.read((1 << 20) + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"file {text_file} does not exist") from None
    if len(text) > 1 << 20:
        raise ValueError(f"{text_file} is larger than 1 MiB; that is no FIT2D or PONI text")
    argument: dict[str, Any] = {"text": text}
    if template:
        argument["template"] = _read_json_object(template, "calibration file")
    return argument, []


def build_maskpreview_request(calibration: str | Mapping[str, Any], mask: str | None = None,
                              image: str | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """The argument and attachment of a ``maskpreview`` request.

    Parameters
    ----------
    calibration
        A calibration file (JSON) or object.
    mask
        A local mask file to show (sent as the attachment); ``None``: the server looks
        for the calibration's own ``MaskFile`` in its base directory.
    image
        An image on the server, relative to its base directory (optional).
    """
    if isinstance(calibration, Mapping):
        cal = dict(calibration)
    else:
        cal = _read_json_object(str(calibration), "calibration file")
    argument: dict[str, Any] = {"calibration": cal}
    frames: list[bytes] = []
    if mask:
        try:
            with open(mask, "rb") as fh:
                frames.append(fh.read())
        except FileNotFoundError:
            raise FileNotFoundError(f"mask file {mask} does not exist") from None
        argument["filenames"] = [os.path.basename(mask)]
    if image:
        argument["image"] = "/".join(p for p in directory_components(image) if p != ".")
    return argument, frames
