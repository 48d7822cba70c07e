"""The queue's rules (QueueState) as plain function calls: no processes, no sleeps, no files."""

from __future__ import annotations

from saxsdog.pipeline.state import (
    MAX_WORKER_DEATHS,
    Abort,
    Close,
    Closed,
    CloseRun,
    FinishRun,
    Flush,
    Push,
    QueueState,
    Record,
    RetryAt,
    SinkFailed,
    SinkRecovered,
    Stop,
    Submit,
    SubmitRefused,
    TaskDone,
    Tick,
    WorkerLost,
    WorkerStalled,
    is_disk_full,
)
from saxsdog.pipeline.tasks import FramePayload, ImageResult

ROOT = "/data/run"


def push(path, now=0.0, **kw):
    kw.setdefault("signature", (100, 0))
    kw.setdefault("output_key", f"/data/work/{path.rsplit('/', 1)[-1].split('.')[0]}")
    return Push(path, ROOT, now, **kw)


def of(kind, instructions):
    return [i for i in instructions if isinstance(i, kind)]


def ok(path, frame=0):
    return ImageResult(path, frame, outputs=[f"{path}.chi"])


def truncated(path):
    return ImageResult(path, error="truncated file", retryable=True)


def submitted(instructions):
    return [i.task for i in of(Submit, instructions)]


def run_one(st: QueueState, path: str, now: float = 0.0):
    """Push an image, submit it, and return its task."""
    out = st.handle(push(path, now), Tick(now, 1))
    (task,) = submitted(out)
    return task


def test_push_records_queued_and_submits_up_to_capacity():
    st = QueueState()
    out = st.handle(push("/data/run/a.tif"), push("/data/run/b.tif"), push("/data/run/c.tif"), Tick(0.0, 2))
    assert [r.path for r in of(Record, out)] == ["/data/run/a.tif", "/data/run/b.tif", "/data/run/c.tif"]
    assert {r.state for r in of(Record, out)} == {"queued"}
    assert [t.path for t in submitted(out)] == ["/data/run/a.tif", "/data/run/b.tif"]
    assert st.active == 3 and st.busy
    out = st.handle(SubmitRefused(submitted(out)[1]), Tick(0.0, 1))
    assert [t.path for t in submitted(out)] == ["/data/run/b.tif"]  # refused ones go first again


def test_duplicates_are_merged_and_unchanged_files_not_redone():
    st = QueueState()
    task = run_one(st, "/data/run/a.tif")
    assert st.handle(push("/data/run/a.tif")) == []  # in flight
    out = st.handle(TaskDone(task, [ok(task.path)], 1.0, 1.0, (100, 0)))
    assert of(Record, out)[0].state == "done" and not st.busy
    assert st.handle(push("/data/run/a.tif", signature=(100, 0))) == []  # same content
    assert of(Record, st.handle(push("/data/run/a.tif", signature=(200, 5))))  # changed: again
    st2 = QueueState()
    t2 = run_one(st2, "/data/run/a.tif")
    st2.handle(TaskDone(t2, [ok(t2.path)], 1.0, 1.0, (100, 0)))
    assert of(Record, st2.handle(push("/data/run/a.tif", force=True)))  # readdir


def test_out_of_scope_or_known_to_the_ledger_is_not_queued():
    st = QueueState()
    assert st.handle(push("/data/run/x.tif", in_scope=False), push("/data/run/y.tif", accepted=False)) == []
    assert st.active == 0


def test_incomplete_file_is_retried_with_back_off_then_reported():
    st = QueueState(retry_timeout=1.0, retry_initial=0.1)
    task = run_one(st, "/data/run/a.tif")
    out = st.handle(TaskDone(task, [truncated(task.path)], 0.0, 1000.0, (50, int(999.9e9))))
    assert of(RetryAt, out)[0].when == 0.1 and not of(Record, out) and st.active == 1
    assert submitted(st.handle(Tick(0.05, 1))) == []  # not due yet
    (again,) = submitted(st.handle(Tick(0.1, 1)))
    assert again.attempt == 1
    out = st.handle(TaskDone(again, [truncated(task.path)], 0.5, 1000.5, (60, int(1000.4e9))))
    assert of(RetryAt, out)[0].when == 0.5 + 0.2  # doubled
    (again,) = submitted(st.handle(Tick(0.7, 1)))
    out = st.handle(TaskDone(again, [truncated(task.path)], 1.2, 1001.2, (60, int(1000.4e9))))
    (rec,) = of(Record, out)
    assert rec.state == "failed" and "still incomplete after 1.2 s" in rec.results[0].error
    assert not st.busy


def test_truncated_file_older_than_the_retry_timeout_is_final_at_once():
    """Part 2 item 6: a file unchanged for longer than --retry-timeout is not waited for."""
    st = QueueState(retry_timeout=10.0)
    task = run_one(st, "/data/run/old.tif")
    wall = 1_000_000.0
    out = st.handle(TaskDone(task, [truncated(task.path)], 0.01, wall, (50, int((wall - 3600) * 1e9))))
    (rec,) = of(Record, out)
    assert rec.state == "failed"
    assert "still incomplete and unchanged for 3600.0 s, longer than the retry timeout (10 s)" in rec.results[0].error
    assert not of(RetryAt, out) and not st.busy


def test_successful_frames_of_a_retried_file_are_recorded_partially():
    st = QueueState()
    task = run_one(st, "/data/run/m.h5")
    out = st.handle(TaskDone(task, [ok(task.path, 0), truncated(task.path)], 0.0, 10.0, (5, int(10e9))))
    (rec,) = of(Record, out)
    assert rec.state == "partial" and len(rec.results) == 1


def test_lost_or_stalled_worker_requeues_then_gives_up():
    st = QueueState()
    task = run_one(st, "/data/run/a.tif")
    assert st.handle(WorkerLost(task)) == [] and st.active == 1
    (task,) = submitted(st.handle(Tick(0.0, 1)))
    st.handle(WorkerStalled(task))
    for _ in range(MAX_WORKER_DEATHS - 3):
        (task,) = submitted(st.handle(Tick(0.0, 1)))
        st.handle(WorkerLost(task))
    (task,) = submitted(st.handle(Tick(0.0, 1)))
    (rec,) = of(Record, st.handle(WorkerStalled(task)))
    assert rec.state == "failed" and f"{MAX_WORKER_DEATHS} times" in rec.results[0].error


def test_close_finishes_what_is_queued_and_ignores_new_images():
    """Part 2 item 2: close drains the queue (the original's manual), then says Closed once."""
    st = QueueState()
    st.handle(*[push(f"/data/run/{i}.tif") for i in range(5)])
    assert st.handle(Close()) == []
    assert st.handle(push("/data/run/late.tif")) == [] and st.ignored_after_close == 1
    closed = []
    while st.busy:
        out = st.handle(Tick(0.0, 2))
        closed += of(Closed, out)
        for t in submitted(out):
            closed += of(Closed, st.handle(TaskDone(t, [ok(t.path)], 0.0, 0.0, (100, 0))))
    assert len(closed) == 1
    assert {p: i.state for p, i in st.images.items()} == {f"/data/run/{i}.tif": "done" for i in range(5)}


def test_close_of_an_idle_queue_is_closed_at_once():
    assert of(Closed, QueueState().handle(Close()))


def test_abort_records_every_unfinished_image_as_dropped():
    st = QueueState(retry_initial=1.0)
    task = run_one(st, "/data/run/r.tif")
    st.handle(TaskDone(task, [truncated(task.path)], 0.0, 5.0, (1, int(5e9))))  # retrying
    st.handle(push("/data/run/a.tif"), push("/data/run/b.tif"), Tick(0.0, 1))  # a in flight, b waiting
    out = st.handle(Abort())
    assert sorted(r.path for r in of(Record, out) if r.state == "dropped") == [
        "/data/run/a.tif", "/data/run/b.tif", "/data/run/r.tif"]
    assert st.finished and st.active == 0


def test_stop_leaves_waiting_images_unrecorded_for_a_restart():
    st = QueueState()
    st.handle(push("/data/run/a.tif"), push("/data/run/b.tif"), Tick(0.0, 1))
    assert st.handle(Stop()) == []  # b stays 'queued' in the ledger
    assert not st.finished  # a is in flight
    (a,) = list(st.inflight.values())
    st.handle(TaskDone(a, [ok(a.path)], 0.0, 0.0, (100, 0)))
    assert st.finished and st.images["/data/run/b.tif"].state == "stopped"


def test_output_collisions_get_a_unique_name():
    """Part 2 item 7: the second image whose outputs would replace the first's is renamed."""
    st = QueueState()
    out = st.handle(push("/data/run/a/x.tif", output_key="/data/run/work/x"),
                    push("/data/run/b/x.tif", output_key="/data/run/work/x"),
                    push("/data/run/img.edf", output_key="/data/run/work/img"),
                    push("/data/run/img.cbf", output_key="/data/run/work/img"),
                    push("/data/run/c/x.tiff", output_key="/data/run/work/x"), Tick(0.0, 10))
    stems = {t.path: t.output_stem for t in submitted(out)}
    assert stems == {"/data/run/a/x.tif": None, "/data/run/b/x.tif": "x~2", "/data/run/img.edf": None,
                     "/data/run/img.cbf": "img~2", "/data/run/c/x.tiff": "x~3"}
    assert st.renamed_outputs == 3
    # the same image again (readdir) keeps its name
    for t in submitted(out):
        st.handle(TaskDone(t, [ok(t.path)], 0.0, 0.0, (100, 0)))
    (again,) = submitted(st.handle(push("/data/run/b/x.tif", output_key="/data/run/work/x", force=True),
                                   Tick(0.0, 1)))
    assert again.output_stem == "x~2"


def test_disk_full_pauses_holds_the_images_and_resumes_when_space_is_back():
    """Part 2 item 3: an image failing with ENOSPC is not failed; it is retried once space is back."""
    st = QueueState()
    st.handle(*[push(f"/data/run/{i}.tif") for i in range(4)])
    a, b = submitted(st.handle(Tick(0.0, 2)))
    full = ImageResult(a.path, error="OSError: [Errno 28] No space left on device: '/data/work/0.chi'")
    out = st.handle(TaskDone(a, [full], 1.0, 1.0, (100, 0)))
    assert not of(Record, out) and st.paused and "disk is full" in st.paused
    assert st.images[a.path].state == "space" and st.active == 4
    assert submitted(st.handle(Tick(1.1, 5))) == []  # paused: nothing new is started
    out = st.handle(TaskDone(b, [ImageResult(b.path, error="[Errno 28] No space left")], 1.2, 1.2, None))
    (probe,) = submitted(st.handle(Tick(1.0 + 0.5, 5)))  # one probe after the back-off
    out = st.handle(TaskDone(probe, [ImageResult(probe.path, error="No space left on device")], 1.6, 1.6))
    assert st.paused and of(RetryAt, out)[0].when > 1.6 + 0.5  # the back-off grows
    (probe,) = submitted(st.handle(Tick(100.0, 5)))
    out = st.handle(TaskDone(probe, [ok(probe.path)], 100.1, 100.1, (100, 0)))
    assert st.paused is None and of(Record, out)[0].state == "done"
    rest = submitted(st.handle(Tick(100.2, 5)))
    assert sorted(t.path for t in rest) == sorted({f"/data/run/{i}.tif" for i in range(4)} - {probe.path})


def test_failing_sink_pauses_and_flushes_with_back_off():
    st = QueueState()
    st.handle(push("/data/run/a.tif"), push("/data/run/b.tif"))
    out = st.handle(SinkFailed("ledger", "database or disk is full", 1.0))
    assert st.paused and st.sink_errors == 1 and st.busy and of(RetryAt, out)[0].when == 1.5
    st.handle(SinkFailed("ledger", "database or disk is full", 1.1))  # later records: no new schedule
    assert st.next_wakeup() == 1.5
    assert submitted(st.handle(Tick(1.2, 5))) == [] and not of(Flush, st.handle(Tick(1.2, 5)))
    assert of(Flush, st.handle(Tick(1.5, 5)))
    st.handle(SinkFailed("ledger", "database or disk is full", 1.5))
    assert st.next_wakeup() == 2.5  # doubled
    out = st.handle(Tick(2.5, 5))
    assert of(Flush, out)
    st.handle(SinkRecovered(2.6))
    assert st.paused is None and len(submitted(st.handle(Tick(2.6, 5)))) == 2


def test_runs_close_when_their_frames_are_done():
    st = QueueState()
    payload = FramePayload(b"", "uint32", (1, 1), "")
    out = st.handle(push("/data/run/s_000001", payload=payload, run="series_1", signature=None),
                    FinishRun("series_1"), Tick(0.0, 1))
    assert not of(CloseRun, out)
    (t,) = submitted(out)
    assert st.handle(push("/data/run/s_000001", payload=payload, run="series_1")) == []  # same frame
    assert of(CloseRun, st.handle(TaskDone(t, [ok(t.path)]))) == [CloseRun("series_1")]


def test_disk_full_messages():
    assert is_disk_full("OSError: [Errno 28] No space left on device")
    assert is_disk_full("database or disk is full")
    assert not is_disk_full("truncated file") and not is_disk_full(None)


def test_outputs_claimed_before_a_restart_stay_theirs():
    from saxsdog.pipeline.state import Claim

    st = QueueState()
    st.handle(Claim("/data/run/a/x.tif", "/data/run/work/x"), Claim("/data/run/b/x.tif", "/data/run/work/x~2"))
    out = st.handle(push("/data/run/c/x.tif", output_key="/data/run/work/x"),
                    push("/data/run/b/x.tif", output_key="/data/run/work/x", force=True), Tick(0.0, 5))
    assert {t.path: t.output_stem for t in submitted(out)} == {"/data/run/c/x.tif": "x~3",
                                                             "/data/run/b/x.tif": "x~2"}


def test_a_sink_error_that_is_no_full_disk_does_not_pause():
    st = QueueState()
    st.handle(push("/data/run/a.tif"))
    st.handle(SinkFailed("file list", "[Errno 13] Permission denied: 'filelist.txt'", 1.0))
    assert st.paused is None and st.sink_errors == 1 and "Permission denied" in st.last_sink_error
    assert len(submitted(st.handle(Tick(1.0, 5)))) == 1
