"""Holding the detector back when the queue is full: woken by results, never a polling sleep."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from saxsdog.streams import dectris
from saxsdog.streams.dectris import DectrisStreamSource
from saxsdog.streams.messages import StreamFrame


class FullQueue:
    """The queue interface a stream source uses, with a backlog the test sets."""

    def __init__(self, backlog: int):
        self.backlog = backlog
        self.root = "/stream"
        self.options = SimpleNamespace(run_name=None)
        self.callbacks: list = []
        self.pushed: list = []

    def add_callback(self, fn) -> None:
        self.callbacks.append(fn)

    def push_task(self, task) -> None:
        self.pushed.append(task)

    def finish_run(self, run: str) -> None:
        pass

    def result(self) -> None:
        """One frame done: the backlog shrinks, then the queue calls its callbacks (as it does)."""
        self.backlog -= 1
        for fn in self.callbacks:
            fn(SimpleNamespace(path="/stream/1_000000"))


def _frame(k: int) -> StreamFrame:
    return StreamFrame(1, k, (4, 4), "uint32", "<", bytes(64))


def _pause() -> None:
    """The test's own short wait (``time.sleep`` itself is refused while the fixture is on)."""
    threading.Event().wait(0.001)


def _source(queue: FullQueue) -> DectrisStreamSource:
    src = DectrisStreamSource("tcp://127.0.0.1:1", queue, max_backlog=2)
    # what start() does besides connecting: the result callback
    queue.add_callback(src._result_arrived)
    return src


@pytest.fixture
def no_sleep(monkeypatch):
    """Any ``time.sleep`` fails the test (the old hold-back slept 1 ms in a loop)."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"polling sleep of {seconds} s while holding the detector back")

    monkeypatch.setattr(dectris.time, "sleep", refuse)


def test_a_full_backlog_holds_the_frame_until_a_result_makes_room(no_sleep):
    queue = FullQueue(backlog=2)
    src = _source(queue)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            src._on_message(_frame(0))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t = threading.Thread(target=receive)
    t.start()
    deadline = time.monotonic() + 5
    while not src._holding and time.monotonic() < deadline:
        _pause()
    assert src._holding and not queue.pushed, "the frame went through a full backlog"
    woken = time.monotonic()
    queue.result()
    t.join(5)
    assert not t.is_alive() and not errors, errors
    # woken by the result itself, well before the hold-back's safety timeout (0.25 s)
    assert time.monotonic() - woken < 0.2
    assert [task.path for task in queue.pushed] == ["/stream/1_000000"]


def test_stop_releases_a_held_frame_at_once(no_sleep):
    queue = FullQueue(backlog=5)
    src = _source(queue)
    t = threading.Thread(target=src._on_message, args=(_frame(0),))
    t.start()
    deadline = time.monotonic() + 5
    while not src._holding and time.monotonic() < deadline:
        _pause()
    assert src._holding
    stopped = time.monotonic()
    src._stopping.set()
    src._wake()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - stopped < 0.2


def test_results_without_a_held_frame_cost_no_wake_up(monkeypatch):
    queue = FullQueue(backlog=0)
    src = _source(queue)
    woken: list[int] = []
    monkeypatch.setattr(src, "_wake", lambda: woken.append(1))
    for k in range(5):
        src._on_message(_frame(k))
        queue.backlog += 1
        queue.result()
    assert len(queue.pushed) == 5 and not woken


def test_the_held_receiver_is_woken_once_a_quarter_of_the_backlog_is_done(no_sleep, monkeypatch):
    """One wake-up per run of results, not per result: the dispatcher pays for each."""
    queue = FullQueue(backlog=8)
    src = DectrisStreamSource("tcp://127.0.0.1:1", queue, max_backlog=8)
    queue.add_callback(src._result_arrived)
    woken: list[int] = []
    monkeypatch.setattr(src, "_wake", lambda: woken.append(queue.backlog))
    src._holding = True  # as while _on_message waits
    queue.result()  # 7 left
    assert not woken
    queue.result()  # 6 left: three quarters of 8
    assert woken == [6]


def test_a_stream_v2_frame_is_a_view_so_it_travels_in_shared_memory():
    """Bytes payloads are pickled through the worker's pipe; views are copied into the arena."""
    from saxsdog.streams import stream2

    msg = stream2.encode_image(1, 0, bytes(64), (4, 4), "uint32", "<")
    frame = stream2.parse_message_v2(msg)
    assert isinstance(frame.data, memoryview) and frame.data.nbytes == 64


class NeverDone(FullQueue):
    """Frames go in, no result ever comes back: the backlog is every frame pushed."""

    def __init__(self):
        super().__init__(0)

    @property
    def backlog(self) -> int:
        return len(self.pushed)

    @backlog.setter
    def backlog(self, value: int) -> None:
        pass


@pytest.mark.slow
def test_a_detector_faster_than_the_workers_waits_in_the_detector_not_in_the_coordinator():
    """A stalled queue takes ``MAX_BACKLOG`` frames and ZeroMQ ``RECEIVE_BUFFER`` more; then the
    detector's sends block.  With the old bounds (256 queued, 1000 in ZeroMQ) all 200 frames of
    a megabyte went into the coordinator's memory (a gigabyte for a long series)."""
    zmq = pytest.importorskip("zmq")
    from saxsdog.streams.dectris import MAX_BACKLOG, RECEIVE_BUFFER, DectrisSender

    assert MAX_BACKLOG <= 64 and RECEIVE_BUFFER <= 64
    queue = NeverDone()
    blob = bytes(1 << 20)
    with DectrisSender(sndhwm=1) as snd:
        src = DectrisStreamSource(snd.endpoint, queue).start()
        assert (src.max_backlog, src.receiver.rcvhwm) == (MAX_BACKLOG, RECEIVE_BUFFER)
        try:
            sent = 0
            with pytest.raises(zmq.Again):
                for k in range(200):
                    snd.send_frame(1, k, blob, (1024, 256), "uint32", "<", timeout=1.0)
                    sent += 1
            deadline = time.monotonic() + 10
            while len(queue.pushed) < MAX_BACKLOG and time.monotonic() < deadline:
                threading.Event().wait(0.01)
            assert len(queue.pushed) == MAX_BACKLOG  # the receiver holds the next one back
            # the rest waits in ZeroMQ's buffers (bounded) and the kernel's socket buffers
            assert sent < MAX_BACKLOG + RECEIVE_BUFFER + 40
        finally:
            src.stop()


@pytest.mark.slow
def test_a_source_for_run_files_loads_the_hdf5_library_before_the_first_frame():
    """The series' first result opens its run file in the dispatcher: h5py is loaded at start,
    not then (about 0.1 s in front of that frame and every frame queued behind it)."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from types import SimpleNamespace\n"
              "from saxsdog.streams.dectris import DectrisStreamSource\n"
              "class Q:\n"
              "    root = '/s'; backlog = 0\n"
              "    options = SimpleNamespace(run_name=None, output_format=sys.argv[1])\n"
              "    def add_callback(self, fn): pass\n"
              "assert 'h5py' not in sys.modules\n"
              "src = DectrisStreamSource('tcp://127.0.0.1:1', Q()).start()\n"
              "src.stop()\n"
              "print('h5py' in sys.modules, 'saxsdog.io.nxcansas' in sys.modules)\n")
    for fmt, loaded in (("nxcansas-run", "True True"), ("chi", "False False")):
        run = subprocess.run([sys.executable, "-c", script, fmt], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[-2] == loaded
