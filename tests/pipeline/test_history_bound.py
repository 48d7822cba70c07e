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
