"""ZeroMQ transport: the signed command service (REP semantics) and the feeder subscription.

Every request is decoded (size limit, UTF-8 JSON object, no NaN), authenticated
(HMAC-SHA256, timestamp window, nonce replay cache, attachment digests), validated
against the request schema and only then executed.  Any failure is answered with an
error response; the loop never dies on bad input and never logs the secret.

A command that runs on one of the handler's worker threads (``new`` building its
operators, ``close``, ``mergedata``, ...) keeps its client's reply pending while the
service goes on serving everyone else; the reply is the command's own final answer (as
the original SAXSDOG leash expects: ``new`` answers ``"new queue"``), sent when it is done.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from ..errors import SaxsdogError
from ..protocol.messages import (MAX_MESSAGE_BYTES, ProtocolError, decode_request, encode_response,
                                 validate_request)
from ..protocol.signing import AuthError, ReplayCache, verify_request
from .handler import CommandHandler, Job, error_response

log = logging.getLogger(__name__)


#: Most frames in one request (envelope + attachments; the protocol needs a handful).
MAX_REQUEST_FRAMES = 64

#: Most client connections held at once (each one costs a file descriptor).
MAX_CONNECTIONS = 256

#: A connection that is mid-request (or mid-handshake) without progress this long is closed.
IDLE_TIMEOUT = 30.0

#: Longest wait for a command running on a worker thread; its client then gets an error.
REPLY_WITHIN = 600.0

#: Requests a client may send behind one still running (a DEALER peer; REQ sends one).
MAX_BACKLOG = 8

#: At shutdown, how long the replies still pending may take before they are answered
#: with an error.
SHUTDOWN_GRACE = 1.0

_GREETING_BYTES = 64


def _zmtp_greeting() -> bytes:
    """Our ZMTP 3.0 greeting: signature, version 3.0, mechanism NULL, as-server 0, filler."""
    return b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31


def _zmtp_frame(body: bytes, more: bool = False, command: bool = False) -> bytes:
    flags = (0x01 if more else 0) | (0x04 if command else 0)
    if len(body) > 255:
        return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def _zmtp_ready(socket_type: bytes) -> bytes:
    prop = b"\x0bSocket-Type" + len(socket_type).to_bytes(4, "big") + socket_type
    return _zmtp_frame(b"\x05READY" + prop, command=True)


def _ready_properties(body: bytes) -> dict[str, bytes] | None:
    """The properties of a READY command body, or ``None`` if it is not one."""
    if not body.startswith(b"\x05READY"):
        return None
    props, i = {}, 6
    while i < len(body):
        n = body[i]
        name = body[i + 1:i + 1 + n]
        i += 1 + n
        if i + 4 > len(body):
            return None
        size = int.from_bytes(body[i:i + 4], "big")
        props[name.decode("ascii", "replace").lower()] = body[i + 4:i + 4 + size]
        i += 4 + size
    return props


class _Budget:
    """Request bytes held across all connections (so many clients cannot add up either)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0


class _Connection:
    """One client on the command port: a ZMTP 3 peer (REQ or DEALER) parsed as it arrives.

    The limits are checked on each frame's *header*, before its bytes are kept: a request
    with too many frames or too many bytes is read to its end but its contents are dropped
    at once, and then answered with an error; one that declares more than four times the
    limit is not read on: its connection is closed.  Memory per connection is bounded by the
    request limit, and all connections together by the shared :class:`_Budget`.
    """

    def __init__(self, budget: _Budget, max_bytes: int, max_frames: int):
        #: A refused request is read to its end (to answer it) only up to this many bytes.
        self.drain_limit = 4 * max_bytes
        self.buf = bytearray()
        self.state = "greeting"
        self.budget = budget
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self.last_activity = time.monotonic()
        #: The request whose command still runs (its reply is sent when it is done).
        self.pending: _Pending | None = None
        #: Requests that came in behind it, answered in order: (routing, frames, bytes).
        self.backlog: deque[tuple[list[bytes], list[bytes], int]] = deque()
        self._reset_message()

    def _reset_message(self) -> None:
        self.frames: list[bytes] = []       # request frames after the delimiter
        self.routing: list[bytes] = []      # frames up to the empty delimiter, echoed back
        self.delimited = False
        self.held = 0                       # bytes counted against the budget
        self.count = 0
        self.refusal: str | None = None
        self.dropped = 0                    # bytes of a refused request read and thrown away
        self.frame_left = 0                 # payload bytes of the current frame still to come
        self.frame_more = False
        self.frame_command = False
        self.frame_keep = False
        self.frame_data = bytearray()
        self.in_frame = False

    @property
    def busy(self) -> bool:
        """Mid-handshake or mid-request (a connection idle between requests is not)."""
        return self.state != "traffic" or self.in_frame or self.count > 0 or bool(self.buf)

    def release(self) -> None:
        self.budget.used -= self.held
        self.held = 0

    def drop_backlog(self) -> None:
        while self.backlog:
            self.budget.used -= self.backlog.popleft()[2]

    def feed(self, data: bytes) -> tuple[list[tuple[str, Any]], str | None]:
        """Bytes from the peer; returns (events, close reason or ``None``).

        Events: ``("send", bytes)``, ``("request", (routing, frames))``,
        ``("refused", (routing, reason))``.
        """
        self.last_activity = time.monotonic()
        events: list[tuple[str, Any]] = []
        self.buf += data
        while True:
            if self.state == "greeting":
                if len(self.buf) < _GREETING_BYTES:
                    if self.buf and self.buf[0] != 0xFF:
                        return events, "not a ZeroMQ (ZMTP 3) peer"
                    return events, None
                greeting = bytes(self.buf[:_GREETING_BYTES])
                del self.buf[:_GREETING_BYTES]
                if greeting[0] != 0xFF or not greeting[9] & 0x01 or greeting[10] < 3:
                    return events, "not a ZeroMQ 4 (ZMTP 3) peer"
                if greeting[12:32].rstrip(b"\0") != b"NULL":
                    return events, "only the NULL security mechanism is spoken here"
                events.append(("send", _zmtp_ready(b"REP")))
                self.state = "handshake"
                continue
            if not self.in_frame:
                if not self.buf:
                    return events, None
                flags = self.buf[0]
                if flags & 0x02:
                    if len(self.buf) < 9:
                        return events, None
                    size = int.from_bytes(self.buf[1:9], "big")
                    del self.buf[:9]
                else:
                    if len(self.buf) < 2:
                        return events, None
                    size = self.buf[1]
                    del self.buf[:2]
                self.in_frame = True
                self.frame_left = size
                self.frame_more = bool(flags & 0x01)
                self.frame_command = bool(flags & 0x04)
                self.frame_data = bytearray()
                if self.frame_command or self.state == "handshake":
                    if size > 65536:
                        return events, "oversized ZMTP command"
                    self.frame_keep = True
                else:
                    self.count += 1
                    self.frame_keep = self._admit(size)
                    if not self.frame_keep:
                        self.dropped += size
                        if self.dropped > self.drain_limit:  # not worth reading to the end
                            return events, f"{self.refusal}; closed instead of reading it to its end"
            if self.frame_left:
                take = min(self.frame_left, len(self.buf))
                if not take:
                    return events, None
                if self.frame_keep:
                    self.frame_data += self.buf[:take]
                del self.buf[:take]  # dropped frames are never held
                self.frame_left -= take
                if self.frame_left:
                    return events, None
            self.in_frame = False
            body = bytes(self.frame_data)
            self.frame_data = bytearray()
            if self.frame_command or self.state == "handshake":
                reason = self._command(body, events)
                if reason:
                    return events, reason
                continue
            self._data_frame(body, events)

    def _admit(self, size: int) -> bool:
        """Check a data frame's header against the limits; ``False``: drop its bytes."""
        if self.refusal is not None:
            return False
        if self.count > self.max_frames:
            self.refusal = f"request refused: more than {self.max_frames} frames"
        elif self.held + size > self.max_bytes:
            self.refusal = (f"request too large: more than {self.max_bytes} bytes "
                            f"(a frame of {size} bytes after {self.held})")
        elif self.budget.used + size > self.budget.limit:
            self.refusal = "request refused: the server holds too much request data now; try again"
        if self.refusal is not None:
            self.release()
            self.frames = []
            return False
        self.held += size
        self.budget.used += size
        return True

    def _command(self, body: bytes, events: list) -> str | None:
        if self.state == "handshake":
            props = _ready_properties(body)
            if props is None:
                return "expected a ZMTP READY command"
            if props.get("socket-type", b"") not in (b"REQ", b"DEALER"):
                return f"a {props.get('socket-type', b'?').decode('ascii', 'replace')} socket cannot talk to REP"
            self.state = "traffic"
            return None
        if body.startswith(b"\x04PING") and len(body) >= 7:  # heartbeat: answer with its context
            events.append(("send", _zmtp_frame(b"\x04PONG" + body[7:], command=True)))
        return None

    def _data_frame(self, body: bytes, events: list) -> None:
        if not self.delimited and self.refusal is None:
            if body == b"":
                self.delimited = True
            else:
                self.routing.append(body)  # e.g. a REQ_CORRELATE request id
        elif self.refusal is None:
            self.frames.append(body)
        if not self.frame_more:
            routing = self.routing
            if self.refusal is not None:
                events.append(("refused", (routing, self.refusal)))
            elif not self.delimited:
                events.append(("refused", (routing, "malformed request: no empty delimiter frame")))
            else:
                events.append(("request", (routing, self.frames)))
            self.release()
            self._reset_message()


class _Pending:
    """A request whose command runs on a worker thread: who gets the answer, and until when."""

    def __init__(self, peer: bytes, routing: list[bytes], job: Job, deadline: float):
        self.peer = peer
        self.routing = routing
        self.job = job
        self.deadline = deadline


def _reply_bytes(routing: list[bytes], frames: list[bytes]) -> bytes:
    parts = [_zmtp_frame(r, more=True) for r in routing] + [_zmtp_frame(b"", more=True)]
    parts += [_zmtp_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames)]
    return b"".join(parts)


def _release_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


class CommandService:
    """Serve a :class:`CommandHandler` to ZeroMQ REQ clients (the leash).

    The socket is a ZeroMQ ``STREAM`` socket speaking ZMTP 3 itself, so the request limits
    hold *while receiving*: a plain REP socket only hands over a multipart message once all
    of it is in memory (16 frames of 250 MiB made the server 4.3 GB before the size check
    could refuse it).  Each frame header is checked against ``max_bytes`` (all frames of a
    request together) and ``max_frames`` before its bytes are kept; a refused request is
    read to its end without keeping anything and answered with an error (or, when it
    declares more than four times the limit, its connection is closed).  At most
    ``max_bytes`` (plus 1 MiB) of request data is held for all clients together.  Clients are
    plain ``zmq.REQ`` sockets, unchanged.

    Every request is answered with its command's final answer, never "accepted": a
    command that runs on a worker thread keeps its connection's reply pending (a REQ
    client waits for it anyway) while the other connections are served; the reply goes out
    when the command is done, or as an error after ``reply_within`` seconds.  Requests a
    DEALER peer sends behind a pending one wait their turn (at most :data:`MAX_BACKLOG`).
    A client that disconnects meanwhile is forgotten; its command still finishes.

    Parameters
    ----------
    handler
        The command handler (one without ``start`` is called through ``execute``).
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
    max_frames
        Most frames in one request.
    max_connections
        Most clients connected at once (further ones are closed at once).
    reply_within
        Longest wait for a command running on a worker thread, seconds; its client then
        gets an error (the command goes on; ``stat`` shows its outcome).
    shutdown_grace
        At :meth:`stop`, how long pending replies may still take; the rest are answered
        with an error saying the server is shutting down.
    """

    def __init__(self, handler: CommandHandler, secret: str, bind: str = "tcp://127.0.0.1:7777",
                 max_bytes: int = MAX_MESSAGE_BYTES, window: float = 900.0,
                 context: zmq.Context | None = None, replay: ReplayCache | None = None,
                 max_frames: int = MAX_REQUEST_FRAMES, max_connections: int = MAX_CONNECTIONS,
                 reply_within: float = REPLY_WITHIN, shutdown_grace: float = SHUTDOWN_GRACE):
        self.handler = handler
        self._secret = secret
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self.max_connections = max_connections
        self.window = window
        self.reply_within = reply_within
        self.shutdown_grace = shutdown_grace
        self.replay = replay if replay is not None else ReplayCache(window)
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.STREAM)
        self.socket.setsockopt(zmq.LINGER, 0)
        # libzmq reads at most this many chunks ahead per client before TCP pushes back
        self.socket.setsockopt(zmq.RCVHWM, 256)
        self.socket.bind(bind)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._budget = _Budget(max_bytes + (1 << 20))
        self._conns: dict[bytes, _Connection] = {}
        self._stop = threading.Event()
        # Worker threads report finished commands here and wake the loop through the pipe
        # (a ZeroMQ socket must not be used from their threads).
        self._done: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.requests = 0
        self.refused = 0

    def __repr__(self) -> str:  # never show the secret
        return f"<CommandService {self.endpoint}>"

    @property
    def pending_replies(self) -> int:
        """Connections waiting for the answer of a command that still runs."""
        return sum(1 for c in list(self._conns.values()) if c.pending is not None)

    def _begin(self, frames: list[bytes]) -> dict | Job:
        """Check one multipart request and start its command: a response, or its job."""
        try:
            envelope, attachments = decode_request(frames, self.max_bytes)
            verify_request(envelope, self._secret, attachments, self.replay, window=self.window)
            validate_request(envelope)
        except (ProtocolError, AuthError) as exc:
            self.refused += 1
            log.warning("refused request: %s", exc)
            return error_response(str(exc))
        command = str(envelope.get("command"))  # validate_request made sure it is a string
        log.info("command %s", command)
        start = getattr(self.handler, "start", None)
        if start is None:
            return self.handler.execute(command, envelope.get("argument"), attachments)
        return start(command, envelope.get("argument"), attachments)

    def respond(self, frames: list[bytes]) -> dict:
        """Turn one multipart request into its final response (the whole safety chain; waits
        up to ``reply_within`` for a command running on a worker thread)."""
        outcome = self._begin(frames)
        if isinstance(outcome, Job):
            return self._job_response(outcome, self.reply_within)
        return outcome

    def _job_response(self, job: Job, wait: float) -> dict:
        try:
            response = job.response(wait)
        except Exception as exc:  # the job itself failed outside the handler's safety net
            log.error("command %s failed: %s", job.command, exc)
            return error_response(f"internal error in {job.command}: {type(exc).__name__}")
        if response is None:
            return error_response(f"{job.command!r} is still running after {self.reply_within:g} s; "
                                  "'stat' shows when it is done (stat.job)")
        return response

    @staticmethod
    def _encode(response: dict) -> list[bytes]:
        try:
            return encode_response(response)
        except (ValueError, TypeError) as exc:
            log.error("cannot encode the response: %s", exc)
            return encode_response(error_response("response could not be encoded"))

    def _serve_request(self, peer: bytes, conn: _Connection, routing: list[bytes], frames: list[bytes]) -> None:
        """Answer a request now, or keep its reply pending while its command runs."""
        self.requests += 1
        try:
            outcome = self._begin(frames)
        except Exception as exc:  # last line of defence: keep serving
            log.exception("unexpected error while handling a request")
            outcome = error_response(f"internal error: {type(exc).__name__}")
        if isinstance(outcome, Job):
            pending = _Pending(peer, routing, outcome, time.monotonic() + self.reply_within)
            conn.pending = pending
            # may run at once, here, when the job is already done: it only queues a wake-up
            outcome.future.add_done_callback(lambda _future: self._job_done(pending))
            return
        self._send(peer, _reply_bytes(routing, self._encode(outcome)))

    def _job_done(self, pending: _Pending) -> None:
        """Called on the worker thread that finished the job."""
        self._done.put(pending)
        with self._wake_lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except OSError:  # the pipe is full: a wake-up is pending anyway
                    pass

    def _deliver_done(self) -> None:
        """Send the replies of the jobs finished since the last call."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:  # empty (BlockingIOError)
            pass
        while True:
            try:
                pending = self._done.get_nowait()
            except queue.Empty:
                return
            conn = self._conns.get(pending.peer)
            if conn is None or conn.pending is not pending:
                continue  # the client left, or was answered with a timeout error
            self._reply_pending(pending.peer, conn, self._job_response(pending.job, 0))

    def _reply_pending(self, peer: bytes, conn: _Connection, response: dict) -> None:
        pending, conn.pending = conn.pending, None
        if pending is None:
            return
        self._send(peer, _reply_bytes(pending.routing, self._encode(response)))
        while conn.pending is None and conn.backlog:  # the requests that waited behind it, in order
            routing, frames, size = conn.backlog.popleft()
            self._budget.used -= size
            if self._stop.is_set():
                self._send(peer, _reply_bytes(routing, self._encode(
                    error_response("the server is shutting down; the request was not carried out"))))
            else:
                self._serve_request(peer, conn, routing, frames)

    def _hold(self, peer: bytes, conn: _Connection, routing: list[bytes], frames: list[bytes]) -> None:
        """A request behind one still running on the same connection (a DEALER peer)."""
        size = sum(len(f) for f in frames)
        if len(conn.backlog) >= MAX_BACKLOG or self._budget.used + size > self._budget.limit:
            self.refused += 1
            why = (f"request refused: {len(conn.backlog) + 1} requests already wait for "
                   f"{conn.pending.job.command if conn.pending else 'a command'!r} on this connection")
            log.warning("%s", why)
            self._send(peer, _reply_bytes(routing, encode_response(error_response(why))))
            return
        self._budget.used += size
        conn.backlog.append((routing, frames, size))

    def _forget(self, conn: _Connection) -> None:
        if conn.pending is not None:
            log.info("a client left while %r ran; its answer is dropped", conn.pending.job.command)
            conn.pending = None
        conn.drop_backlog()

    def _send(self, peer: bytes, data: bytes) -> None:
        try:
            self.socket.send_multipart([peer, data], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer is gone or not reading
            log.warning("cannot answer a client: %s", exc)

    def _close(self, peer: bytes, reason: str | None = None) -> None:
        conn = self._conns.pop(peer, None)
        if conn is not None:
            held = conn.held or conn.dropped or len(conn.frame_data)
            conn.release()
            self._forget(conn)
            conn.frame_data = bytearray()
            conn.frames = []
            if held:
                _release_memory()
        if reason:
            log.warning("closed a command connection: %s", reason)
        try:
            self.socket.send_multipart([peer, b""], flags=zmq.NOBLOCK)  # a STREAM socket's close
        except zmq.ZMQError:
            pass

    def _on_data(self, peer: bytes, data: bytes) -> None:
        conn = self._conns.get(peer)
        if conn is None:
            if data:  # bytes from a connection already closed
                return
            if len(self._conns) >= self.max_connections:
                self._close(peer, f"more than {self.max_connections} clients connected")
                return
            self._conns[peer] = _Connection(self._budget, self.max_bytes, self.max_frames)
            self._send(peer, _zmtp_greeting())
            return
        if not data:  # the peer disconnected
            self._conns.pop(peer, None)
            conn.release()
            self._forget(conn)
            return
        events, reason = conn.feed(data)
        for kind, value in events:
            if kind == "send":
                self._send(peer, value)
            elif kind == "request":
                routing, frames = value
                if conn.pending is not None:
                    self._hold(peer, conn, routing, frames)
                else:
                    self._serve_request(peer, conn, routing, frames)
                del frames
            else:
                routing, why = value
                self.refused += 1
                log.warning("refused request: %s", why)
                self._send(peer, _reply_bytes(routing, encode_response(error_response(why))))
                _release_memory()
        if reason:
            self._close(peer, reason)

    def _expire(self) -> None:
        now = time.monotonic()
        for peer, conn in list(self._conns.items()):
            pending = conn.pending
            if pending is not None and now > pending.deadline:
                log.error("%r still runs after %g s; its client gets an error", pending.job.command,
                          self.reply_within)
                self._reply_pending(peer, conn, self._job_response(pending.job, 0))
            if conn.busy and now - conn.last_activity > IDLE_TIMEOUT:
                self._close(peer, f"no progress for {IDLE_TIMEOUT:g} s in the middle of a request")

    def _finish_pending(self) -> bool:
        """At shutdown: the pending replies, as answers when their commands end within the
        grace time, else as errors.  Returns whether any reply went out."""
        waiting = [(peer, conn) for peer, conn in self._conns.items() if conn.pending is not None]
        if not waiting:
            return False
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        deadline = time.monotonic() + self.shutdown_grace
        while any(conn.pending is not None for _, conn in waiting):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            poller.poll(int(left * 1000) + 1)
            self._deliver_done()
        for peer, conn in waiting:
            if conn.pending is not None:
                command = conn.pending.job.command
                self._reply_pending(peer, conn, error_response(
                    f"the server is shutting down while {command!r} runs; ask 'stat' after it is "
                    "back (a queue is resumed at the next start)"))
        return True

    def serve_forever(self, poll_ms: int = 200) -> None:
        """Answer requests until :meth:`stop`."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        last_check = time.monotonic()
        replied = False
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(poll_ms))
                if self.socket in ready:
                    # a bounded batch, so the idle check and stop() are never starved
                    for _ in range(1000):
                        try:
                            peer, data = self.socket.recv_multipart(flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        except (zmq.ZMQError, ValueError) as exc:
                            log.warning("receive failed: %s", exc)
                            break
                        self._on_data(peer, data)
                if self._wake_r in ready or not self._done.empty():
                    self._deliver_done()
                if time.monotonic() - last_check > 1.0:
                    last_check = time.monotonic()
                    self._expire()
            replied = self._finish_pending()
        finally:
            with self._wake_lock:
                os.close(self._wake_w)
                self._wake_w = -1
            os.close(self._wake_r)
            # the last replies still have to leave: libzmq sends them after close, given time
            self.socket.close(linger=1000 if replied else 0)

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
