"""ZeroMQ transport: the signed REP command service and the feeder subscription.

Every request is decoded (size limit, UTF-8 JSON object, no NaN), authenticated
(HMAC-SHA256, timestamp window, nonce replay cache, attachment digests), validated
against the request schema and only then executed.  Any failure is answered with an
error response; the loop never dies on bad input and never logs the secret.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Callable

import zmq

from ..errors import SaxsdogError
from ..protocol.messages import (MAX_MESSAGE_BYTES, ProtocolError, decode_request, encode_response,
                                 validate_request)
from ..protocol.signing import AuthError, ReplayCache, verify_request
from .handler import CommandHandler, error_response

log = logging.getLogger(__name__)


class CommandService:
    """Serve a :class:`CommandHandler` on a ZeroMQ REP socket.

    Parameters
    ----------
    handler
        The command handler.
    secret
        The shared secret of the network file.
    bind
        ZeroMQ endpoint, loopback by default.
    max_bytes
        Largest accepted request (all frames); larger ones are refused with an error.
    window
        Accepted clock difference for request timestamps, seconds.
    replay
        The replay cache (default: in memory; the server passes a
        :class:`~saxsdog.protocol.signing.PersistentReplayCache` so a request captured
        before a restart is refused after it too).
    """

    def __init__(self, handler: CommandHandler, secret: str, bind: str = "tcp://127.0.0.1:7777",
                 max_bytes: int = MAX_MESSAGE_BYTES, window: float = 900.0,
                 context: zmq.Context | None = None, replay: ReplayCache | None = None):
        self.handler = handler
        self._secret = secret
        self.max_bytes = max_bytes
        self.window = window
        self.replay = replay if replay is not None else ReplayCache(window)
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.REP)
        # A hard cap per frame well above the soft limit: larger frames make ZeroMQ drop
        # the peer before buffering them; up to the cap we answer with a clear error.
        self.socket.setsockopt(zmq.MAXMSGSIZE, max(4 * max_bytes, 1 << 20))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(bind)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self.requests = 0
        self.refused = 0

    def __repr__(self) -> str:  # never show the secret
        return f"<CommandService {self.endpoint}>"

    def respond(self, frames: list[bytes]) -> dict:
        """Turn one multipart request into a response (the whole safety chain)."""
        try:
            envelope, attachments = decode_request(frames, self.max_bytes)
            verify_request(envelope, self._secret, attachments, self.replay, window=self.window)
            validate_request(envelope)
        except (ProtocolError, AuthError) as exc:
            self.refused += 1
            log.warning("refused request: %s", exc)
            return error_response(str(exc))
        command = envelope.get("command")
        log.info("command %s", command)
        return self.handler.execute(command, envelope.get("argument"), attachments)

    def serve_forever(self, poll_ms: int = 200) -> None:
        """Answer requests until :meth:`stop`."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not dict(poller.poll(poll_ms)):
                continue
            try:
                frames = self.socket.recv_multipart()
            except zmq.ZMQError as exc:
                log.warning("receive failed: %s", exc)
                continue
            self.requests += 1
            try:
                response = self.respond(frames)
            except Exception as exc:  # last line of defence: keep serving
                log.exception("unexpected error while handling a request")
                response = error_response(f"internal error: {type(exc).__name__}")
            try:
                self.socket.send_multipart(encode_response(response))
            except (zmq.ZMQError, ValueError, TypeError) as exc:
                log.error("cannot send response: %s", exc)
                self.socket.send_multipart(encode_response(error_response("response could not be encoded")))
        self.socket.close(0)

    def stop(self) -> None:
        self._stop.set()


class FeederSubscriber:
    """Subscribe to one or more feeders and hand 'new file' events to a callback.

    Events are hints: malformed ones are logged and counted, never fatal.
    """

    def __init__(self, urls: list[str], on_path: Callable[[str], str | None],
                 context: zmq.Context | None = None):
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.socket.setsockopt(zmq.LINGER, 0)
        for url in urls:
            self.socket.connect(url)
        self.on_path = on_path
        self._stop = threading.Event()
        self.received = 0
        self.rejected = 0
        self.thread = threading.Thread(target=self._run, name="saxsdog-feeder", daemon=True)

    def start(self) -> "FeederSubscriber":
        self.thread.start()
        return self

    def handle(self, message: bytes) -> str | None:
        """Process one event; returns why it was rejected, or ``None``."""
        self.received += 1
        try:
            event = json.loads(message.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return self._reject(f"not JSON: {exc}")
        if not isinstance(event, dict) or event.get("command") != "new file":
            return self._reject("expected {\"command\": \"new file\", \"argument\": PATH}")
        path = event.get("argument")
        if not isinstance(path, str) or not path:
            return self._reject("the argument must be a file path")
        try:
            reason = self.on_path(path)
        except SaxsdogError as exc:
            reason = str(exc)
        if reason:
            return self._reject(reason)
        return None

    def _reject(self, reason: str) -> str:
        self.rejected += 1
        log.warning("feeder event ignored: %s", reason)
        return reason

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not dict(poller.poll(200)):
                continue
            try:
                frames = self.socket.recv_multipart()
            except zmq.ZMQError:
                continue
            self.handle(frames[0])
        self.socket.close(0)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2.0)
