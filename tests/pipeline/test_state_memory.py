"""The queue's rules keep flat memory over a run of any length (issue 17: the coordinator's RSS
flat over 100,000 frames): finished images are forgotten beyond a bound, the ledger decides for
them, and who wrote which output is kept as two hashes (plain function calls, no files)."""

from __future__ import annotations

import gc
import tracemalloc

from saxsdog.pipeline.state import (
    Claim,
    HashedMap,
    Push,
    QueueState,
    Record,
    Report,
    SinkFailed,
    SinkRecovered,
    Submit,
    TaskDone,
    Tick,
)
from saxsdog.pipeline.tasks import ImageResult

ROOT = "/data/run"


def push(path, key=None, **kw):
    kw.setdefault("signature", (100, 0))
    return Push(path, ROOT, 0.0, output_key=key or f"/data/work/{path.rsplit('/', 1)[-1].split('.')[0]}", **kw)


def run(st: QueueState, *pushes: Push) -> list:
    """Push, submit and finish images; returns their tasks."""
    out = st.handle(*pushes, Tick(0.0, len(pushes)))
    tasks = [i.task for i in out if isinstance(i, Submit)]
    for t in tasks:
        st.handle(TaskDone(t, [ImageResult(t.path, outputs=[f"{t.path}.chi"])], 0.0, 0.0, (100, 0)))
    return tasks


def fill(st: QueueState, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        run(st, push(f"/data/run/img_{i:06d}.tif"))


def test_finished_images_beyond_the_bound_are_forgotten():
    st = QueueState(finished_remembered=10)
    fill(st, 100)
    assert len(st.images) == 10 and len(st.owners) == 10  # the latest only (the old code kept 100)
    assert len(st.owner_archive) == 90
    assert "/data/run/img_000099.tif" in st.images and "/data/run/img_000000.tif" not in st.images
    # a remembered one is still dropped without asking anyone
    assert st.handle(push("/data/run/img_000099.tif")) == []


def test_a_forgotten_image_is_decided_by_the_ledger_and_keeps_its_name():
    st = QueueState(finished_remembered=2)
    run(st, push("/data/run/a.tif"))
    fill(st, 5)
    assert "/data/run/a.tif" not in st.images
    assert st.handle(push("/data/run/a.tif", accepted=False)) == []  # the ledger: done, unchanged
    out = st.handle(push("/data/run/a.tif"), Tick(0.0, 1))  # the ledger: changed since
    assert [r.state for r in out if isinstance(r, Record)] == ["queued"]
    (task,) = [i.task for i in out if isinstance(i, Submit)]
    assert task.output_stem is None and st.renamed_outputs == 0  # its own output, not a collision


def test_an_output_of_a_forgotten_image_is_never_replaced_by_another_image():
    st = QueueState(finished_remembered=2)
    run(st, push("/data/run/a/x.tif", "/data/run/work/x"))
    fill(st, 5)
    assert "/data/run/a/x.tif" not in st.images
    out = st.handle(push("/data/run/b/x.tif", "/data/run/work/x"), Tick(0.0, 1))
    (task,) = [i.task for i in out if isinstance(i, Submit)]
    assert task.output_stem == "x~2" and st.renamed_outputs == 1
    (warning,) = [i for i in out if isinstance(i, Report)]
    assert "an image processed before" in warning.message and "x~2" in warning.message


def test_a_forgotten_renamed_image_keeps_its_renamed_output():
    st = QueueState(finished_remembered=2)
    run(st, push("/data/run/a/x.tif", "/data/run/work/x"), push("/data/run/b/x.tif", "/data/run/work/x"))
    fill(st, 5)
    assert st.renamed_outputs == 1 and not {"/data/run/a/x.tif", "/data/run/b/x.tif"} & set(st.images)
    out = st.handle(push("/data/run/b/x.tif", "/data/run/work/x", force=True), Tick(0.0, 1))
    (task,) = [i.task for i in out if isinstance(i, Submit)]
    assert task.output_stem == "x~2" and st.renamed_outputs == 1  # the same name again, no new warning
    out = st.handle(push("/data/run/c/x.tif", "/data/run/work/x"), Tick(0.0, 1))
    assert [i.task.output_stem for i in out if isinstance(i, Submit)] == ["x~3"]


def test_nothing_is_forgotten_while_a_sink_fails():
    """The ledger may not hold the records of the images finished while it fails: they stay remembered."""
    st = QueueState(finished_remembered=3)
    fill(st, 3)
    out = st.handle(*[push(f"/data/run/late_{i}.tif") for i in range(20)], Tick(0.0, 20))
    inflight = [i.task for i in out if isinstance(i, Submit)]
    st.handle(SinkFailed("ledger", "database or disk is full", 0.0))
    for t in inflight:
        st.handle(TaskDone(t, [ImageResult(t.path, outputs=[f"{t.path}.chi"])], 0.0, 0.0, (100, 0)))
    assert len(inflight) == 20 and len(st.images) == 23  # all remembered
    st.handle(SinkRecovered(1.0))
    assert len(st.images) == 3


def test_claims_of_a_restart_are_kept_compactly():
    st = QueueState()
    st.handle(*[Claim(f"/data/run/img_{i:06d}.tif", f"/data/work/img_{i:06d}") for i in range(1000)])
    assert not st.owners and len(st.owner_archive) == 1000
    out = st.handle(push("/data/run/other/img_000007.tif", "/data/work/img_000007"),
                    push("/data/run/img_000008.tif", "/data/work/img_000008", force=True), Tick(0.0, 2))
    assert {i.task.path: i.task.output_stem for i in out if isinstance(i, Submit)} == {
        "/data/run/other/img_000007.tif": "img_000007~2", "/data/run/img_000008.tif": None}


def test_memory_per_finished_image_is_a_few_dozen_bytes():
    """Traced memory grows by < 100 bytes an image once the bound is reached (the old code: ~500)."""
    st = QueueState(finished_remembered=200)
    fill(st, 1000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill(st, 4000, start=1000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(st.images) == 200
    assert grown / 4000 < 100, f"{grown / 4000:.0f} bytes an image"


def test_hashed_map_stores_ints_under_string_keys_and_grows():
    m = HashedMap(capacity=4)
    for i in range(1000):
        m[f"/data/run/img_{i}.tif"] = hash(f"line {i}")
    m["/data/run/img_7.tif"] = -5  # replaced, not added
    assert len(m) == 1000 and m.nbytes >= 1000 * 16
    assert m.get("/data/run/img_7.tif") == -5 and m.get("/data/run/img_8.tif") == hash("line 8")
    assert m.get("/data/run/nope.tif") is None and m.get("/data/run/nope.tif", 3) == 3
    assert "/data/run/img_999.tif" in m and "/data/run/img_1000.tif" not in m


def _malloc_bytes() -> int | None:
    """Bytes glibc's malloc hands out now (heap and its own mappings), or ``None`` without glibc."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    info = fn()
    return info.uordblks + info.hblkhd


def test_hashed_map_holds_16_bytes_an_entry_outside_the_malloc_heap():
    """No slack (a doubling table held up to 64 bytes an entry just after it grew), and the
    arrays, replaced as it grows, get mappings of their own: freed, they go back to the system
    whole instead of leaving holes in the heap that per-frame allocations fragment (measured in
    the server: the heap grew by about as much again as the tables)."""
    import pytest

    before = _malloc_bytes()
    if before is None:
        pytest.skip("no glibc")
    m = HashedMap()
    for i in range(150_000):
        m[f"/data/work/img_{i:06d}"] = i
    grown = _malloc_bytes() - before
    assert len(m) == 150_000 and m.nbytes < 150_000 * 16 + 200_000  # the arrays, and the recent entries' dict
    assert grown < 2**20, f"{grown / 2**20:.1f} MiB from malloc for {m.nbytes / 2**20:.1f} MiB of tables"
    assert m.get("/data/work/img_000123") == 123 and m.get("/data/work/img_150000") is None
    m["/data/work/img_000123"] = -1  # replaced in place, not added
    assert m.get("/data/work/img_000123") == -1 and len(m) == 150_000
