"""The Saxsdog Feeder: announces finished image files to saxsdog servers over ZeroMQ.

Each announcement is one single-frame message, the UTF-8 JSON (the original SAXSDOG manual, §3.5.2)::

    {"command": "new file", "argument": "/path/to/image.tif"}

published on a PUB-type socket (an XPUB, which subscribers cannot tell from a PUB, so
that the feeder can see when a subscriber has connected).  A feeder only says *that* a
file is complete; servers treat the events as hints and keep their own ledger.

Use from a beamline transfer script
-----------------------------------
>>> from saxsdog.feeder import announce_file
>>> announce_file("/data/run42/img_00001.tif")              # doctest: +SKIP

The first call binds ``tcp://127.0.0.1:5555`` (pass ``url=`` for another address) and
waits up to ``wait`` seconds for a server to subscribe; later calls reuse the socket.
Write the file completely (or write it under a temporary name and rename it) *before*
announcing it.

Simulator
---------
:func:`simulate` replays the images of a directory at a given rate — announcing them
where they are, or copying them one by one into another directory (temporary name, then
rename) and announcing the copies.  ``saxsfeeder --simulate DIR`` runs it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import zmq

__all__ = [
    "DEFAULT_FEEDER_PORT",
    "DEFAULT_FEEDER_BIND",
    "Feeder",
    "announce_file",
    "close_feeders",
    "new_file_message",
    "list_images",
    "simulate",
    "bind_url",
    "announce_paths",
]

log = logging.getLogger(__name__)

DEFAULT_FEEDER_PORT = 5555
DEFAULT_FEEDER_BIND = f"tcp://127.0.0.1:{DEFAULT_FEEDER_PORT}"


def new_file_message(path: str | os.PathLike[str]) -> str:
    """The JSON text announcing ``path``."""
    return json.dumps({"command": "new file", "argument": os.fspath(path)}, ensure_ascii=False)


def bind_url(port: int = DEFAULT_FEEDER_PORT, public: bool = False) -> str:
    """``tcp://127.0.0.1:PORT``, or ``tcp://*:PORT`` (all interfaces) when ``public``."""
    return f"tcp://{'*' if public else '127.0.0.1'}:{int(port)}"


class Feeder:
    """A bound publisher of "new file" events.

    Parameters
    ----------
    bind
        Address to bind, e.g. ``tcp://127.0.0.1:5555`` (the default, loopback only),
        ``tcp://*:5555`` (every interface) or ``tcp://127.0.0.1:*`` (a free port; see
        :attr:`endpoint`).
    context
        A ZeroMQ context.  By default the feeder makes its own and terminates it in
        :meth:`close`, which is what makes queued announcements go out before a short-lived
        process exits.
    linger
        Seconds :meth:`close` waits for queued announcements to go out.
    """

    def __init__(self, bind: str = DEFAULT_FEEDER_BIND, context: zmq.Context | None = None,
                 linger: float = 1.0):
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        sock = self._context.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.LINGER, int(linger * 1000))
        sock.setsockopt(zmq.SNDHWM, 100_000)
        try:
            sock.bind(bind)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            if self._own_context:
                self._context.term()
            raise OSError(f"the feeder cannot bind {bind}: {exc.strerror}") from None
        self._socket: zmq.Socket | None = sock
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscriptions = 0
        self.announced = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Feeder(endpoint={self.endpoint!r}, announced={self.announced})"

    def __enter__(self) -> "Feeder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sock(self) -> zmq.Socket:
        if self._socket is None:
            raise RuntimeError("the feeder is closed")
        return self._socket

    def _drain(self) -> None:
        """Read pending (un)subscription messages so they never pile up."""
        sock = self._sock()
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscriptions += 1

    def wait_for_subscriber(self, timeout: float = 5.0) -> bool:
        """Wait until at least one subscriber has connected (at most ``timeout`` seconds).

        Messages published before any subscriber connected are lost (that is how PUB/SUB
        works), so a short-lived feeder should wait first.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            sock = self._sock()
            self._drain()
            while self.subscriptions == 0:
                left = deadline - time.monotonic()
                if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                    break
                self._drain()
            return self.subscriptions > 0

    def announce(self, path: str | os.PathLike[str]) -> str:
        """Publish ``{"command": "new file", "argument": PATH}``; return the JSON sent."""
        message = new_file_message(path)
        with self._lock:
            sock = self._sock()
            self._drain()
            sock.send(message.encode("utf-8"))
            self.announced += 1
        log.debug("announced %s", path)
        return message

    def close(self) -> None:
        """Close the socket; wait up to ``linger`` seconds for unsent announcements."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
                if self._own_context:
                    self._context.term()  # returns once queued messages are out (or linger ends)


_FEEDERS: dict[tuple[str, int], Feeder] = {}
_FEEDERS_LOCK = threading.Lock()


def announce_file(path: str | os.PathLike[str], url: str = DEFAULT_FEEDER_BIND,
                  context: zmq.Context | None = None, wait: float = 1.0) -> str:
    """Announce one finished file, for beamline transfer scripts.

    A feeder bound to ``url`` is created on the first call (waiting up to ``wait`` seconds
    for a subscriber) and reused by later calls in the same process; it is closed at exit,
    after the last announcements went out.

    Returns
    -------
    str
        The JSON message sent.
    """
    key = (url, id(context))
    with _FEEDERS_LOCK:
        feeder = _FEEDERS.get(key)
        if feeder is None:
            feeder = Feeder(url, context)
            _FEEDERS[key] = feeder
            if wait > 0 and not feeder.wait_for_subscriber(wait):
                log.warning("no subscriber on %s after %.1f s; announcements may be lost",
                            feeder.endpoint, wait)
    return feeder.announce(path)


@atexit.register
def close_feeders() -> None:
    """Close the feeders made by :func:`announce_file` (done automatically at exit)."""
    with _FEEDERS_LOCK:
        for feeder in _FEEDERS.values():
            feeder.close()
        _FEEDERS.clear()


def list_images(directory: str | os.PathLike[str]) -> list[Path]:
    """The image files below ``directory`` (recursively, sorted, hidden ones skipped)."""
    from saxsdog.io.images import iter_images

    top = Path(directory)
    if not top.is_dir():
        raise FileNotFoundError(f"{top} is not a directory")
    return [Path(p) for p in iter_images(top)]


def _copy_atomically(src: Path, dest: Path) -> None:
    from saxsdog.io.atomic import atomic_copy

    atomic_copy(src, dest)


def simulate(directory: str | os.PathLike[str], feeder: Feeder, rate: float = 10.0,
             copy_to: str | os.PathLike[str] | None = None, loop: bool = False,
             count: int | None = None, relative_to: str | os.PathLike[str] | None = None,
             stop: threading.Event | None = None,
             on_announce: Callable[[str], None] | None = None) -> int:
    """Replay the images of ``directory`` through ``feeder`` at ``rate`` files per second.

    Parameters
    ----------
    directory
        Where the images are (searched recursively).
    feeder
        The feeder to announce with.
    rate
        Announcements per second (``<= 0``: as fast as possible).
    copy_to
        If given, copy each image into this directory first (keeping sub-directories;
        written under a hidden temporary name, then renamed) and announce the copy.
    loop
        Start over after the last image (until ``stop`` is set or ``count`` is reached).
    count
        Stop after this many announcements.
    relative_to
        Announce paths relative to this directory (e.g. the server's base directory)
        instead of absolute paths.
    stop
        An event that ends the replay early.
    on_announce
        Called with each announced path.

    Returns
    -------
    int
        The number of announcements made.
    """
    src_top = Path(directory).resolve()
    images = list_images(src_top)
    if not images:
        raise FileNotFoundError(f"no image files in {src_top}")
    dest_top = Path(copy_to).resolve() if copy_to is not None else None
    if dest_top is not None and dest_top == src_top:
        raise ValueError("--copy-to must differ from the directory being replayed")
    base = Path(relative_to).resolve() if relative_to is not None else None
    stop = stop or threading.Event()
    period = 1.0 / rate if rate and rate > 0 else 0.0
    start = time.monotonic()
    done = 0
    while not stop.is_set():
        for src in images:
            if stop.is_set() or (count is not None and done >= count):
                return done
            if period:
                delay = start + done * period - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return done
            target = src
            if dest_top is not None:
                target = dest_top / src.relative_to(src_top)
                _copy_atomically(src, target)
            shown = os.path.relpath(target, base) if base is not None else str(target)
            feeder.announce(shown)
            done += 1
            if on_announce is not None:
                on_announce(shown)
        if not loop:
            break
    return done


def announce_paths(feeder: Feeder, paths: Iterable[str],
                   on_announce: Callable[[str], None] | None = None) -> int:
    """Announce each path of ``paths`` (blank lines skipped); return how many."""
    n = 0
    for p in paths:
        p = p.strip("\r\n")
        if not p.strip():
            continue
        feeder.announce(p)
        n += 1
        if on_announce is not None:
            on_announce(p)
    return n
