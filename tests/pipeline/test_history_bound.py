"""The queue's in-memory history keeps the latest records only: bounded over any run."""

from __future__ import annotations

from saxsdog.pipeline.history import History
from saxsdog.pipeline.tasks import ImageResult


def _result(k: int) -> ImageResult:
    return ImageResult(f"/run/img_{k:06d}.tif", outputs=[f"/work/img_{k:06d}.chi"],
                       parameters={"R0": {"I0": float(k)}}, processed_at=float(k))


def test_history_keeps_the_latest_records_and_counts_them_all():
    h = History(max_records=3)
    for k in range(10):
        h.add(_result(k))
    assert [r["path"] for r in h.records] == [f"/run/img_{k:06d}.tif" for k in (7, 8, 9)]
    assert [r["path"] for r in h.snapshot(1)] == ["/run/img_000008.tif", "/run/img_000009.tif"]
    assert h.processed == 10  # the statistics count every frame


def test_lowering_the_bound_keeps_the_newest():
    h = History()
    for k in range(6):
        h.add(_result(k))
    h.max_records = 2
    assert h.max_records == 2
    assert [r["parameters"]["R0"]["I0"] for r in h.records] == [4.0, 5.0]
    h.add(_result(6))
    assert [r["parameters"]["R0"]["I0"] for r in h.records] == [5.0, 6.0]


def test_no_records_kept_when_the_bound_is_zero():
    h = History(max_records=0)
    h.add(_result(0))
    assert not h.records and h.processed == 1 and h.snapshot() == []


def _failure(k: int, frame: int = 0) -> ImageResult:
    return ImageResult(f"/run/img_{k:06d}.tif", frame, error=f"cannot read frame {frame}", processed_at=float(k))


def test_failures_are_counted_all_and_listed_latest():
    """A run in which every image fails keeps the latest reasons only (the old code kept them all)."""
    h = History(max_failures=5)
    for k in range(20):
        h.add(_failure(k))
    assert h.failed == 20 and h.failures_not_listed == 15
    assert list(h.failures) == [f"/run/img_{k:06d}.tif" for k in range(15, 20)]
    assert len(h._failed_frame) == 5  # bounded with the listing


def test_a_retried_failure_clears_its_count_listed_or_not():
    h = History(max_failures=3)
    for k in range(6):
        h.add(_failure(k))
    h.add(_result(0))  # no longer listed, succeeded since: it fails no more
    h.add(_result(5))  # listed
    assert h.failed == 4 and "/run/img_000005.tif" not in h.failures
    h.add(_result(0))  # a second success changes nothing
    assert h.failed == 4
    h.add(_failure(1))  # failing again (not listed before): listed again, counted once
    assert h.failed == 4 and "/run/img_000001.tif" in h.failures
    assert h.failures_not_listed == 1


def test_a_success_of_another_frame_does_not_clear_a_failure():
    h = History(max_failures=1)
    h.add(_failure(0, frame=2))
    h.add(_failure(1, frame=3))  # pushes image 0 out of the listing
    h.add(ImageResult("/run/img_000000.tif", 0, outputs=["x.chi"]))  # frame 0, not the failed frame 2
    h.add(ImageResult("/run/img_000001.tif", 0, outputs=["x.chi"]))
    assert h.failed == 2
    h.add(ImageResult("/run/img_000000.tif", 2, outputs=["x.chi"]))
    h.add(ImageResult("/run/img_000001.tif", 3, outputs=["x.chi"]))
    assert h.failed == 0 and not h.failures


def test_the_rate_window_stays_bounded_when_nobody_asks_for_the_rate(monkeypatch):
    """The timestamps of the last ``window`` seconds only (the old code kept one per frame until a stat)."""
    from saxsdog.pipeline import history

    clock = [1000.0]
    monkeypatch.setattr(history.time, "time", lambda: clock[0])
    h = History(window=5.0)
    for k in range(1000):
        clock[0] += 0.1  # 10 frames/s: 50 in any 5 s
        h.add(_result(k))
    assert len(h._recent) <= 51
    assert abs(h.frames_per_second() - 10.0) < 0.5
