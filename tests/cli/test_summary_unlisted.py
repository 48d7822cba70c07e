"""The command's summary counts failures whose reasons the history no longer keeps."""

from __future__ import annotations

import io
from types import SimpleNamespace

from saxsdog.cli.saxsdog import EXIT_FAILED, EXIT_OK, _summary
from saxsdog.pipeline.history import History
from saxsdog.pipeline.tasks import ImageResult


def _result(k: int) -> ImageResult:
    return ImageResult(f"/run/img_{k:06d}.tif", outputs=[f"/work/img_{k:06d}.chi"], processed_at=float(k))


def _failure(k: int) -> ImageResult:
    return ImageResult(f"/run/img_{k:06d}.tif", 0, error="cannot read frame 0", processed_at=float(k))


def _queue(h: History) -> SimpleNamespace:
    st = {"images_processed": 0, "images_skipped": 0, "images_failed": h.failed,
          "overall_frames_per_second": 0.0, "worker_restarts": 0}
    return SimpleNamespace(stats=lambda: st, history=h, ignored_files=0, run_files=[], calibration=None,
                           error=None)


def _run(h: History) -> tuple[int, str]:
    out = io.StringIO()
    args = SimpleNamespace(profile=False, stream=False, demo=None)
    rc = _summary(_queue(h), False, args, out, None)
    return rc, out.getvalue()


def test_failures_beyond_the_listed_ones_are_counted_in_the_summary() -> None:
    h = History(max_failures=3)
    for k in range(8):
        h.add(_failure(k))
    rc, text = _run(h)
    assert rc == EXIT_FAILED
    assert "FAILED 5 more image(s): their reasons are not kept (the latest 3 are listed above)" in text


def test_an_unlisted_failure_alone_still_fails_the_run() -> None:
    h = History(max_failures=2)
    for k in range(3):
        h.add(_failure(k))  # image 0 is no longer listed
    h.add(_result(1))
    h.add(_result(2))  # the listed ones succeeded when retried
    assert not h.failures and h.failed == 1
    rc, text = _run(h)
    assert rc == EXIT_FAILED and "FAILED 1 more image(s)" in text


def test_a_run_without_failures_says_nothing_of_them() -> None:
    h = History()
    h.add(_result(0))
    rc, text = _run(h)
    assert rc == EXIT_OK and "FAILED" not in text
