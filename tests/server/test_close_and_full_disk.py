"""The server's close, abort and full-disk rules end to end (handler in-process, real workers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from saxsdog.pipeline import QueueOptions
from saxsdog.server.handler import CommandHandler
from saxsdog.testing import fill_disk, wait_for

from server_helpers import add_images, new_request


def make_handler(base, **kw) -> CommandHandler:
    return CommandHandler(base, QueueOptions(workers=2), rescan_interval=0, **kw)


@pytest.mark.slow
def test_close_right_after_a_burst_finishes_every_queued_image(base, data_dir):
    """Part 2 item 2: close used to drop what was waiting (ledger rows stuck at 'queued',
    queue.json deleted, so nothing resumed).  Now the queue drains, new files are ignored,
    and the saved queue is forgotten once every image is done."""
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        s = h.session
        images = add_images(base, 150)
        for p in images:
            assert s.feeder_event(str(p)) is None
        r = h.execute("close")
        assert r["result"] == "queue closed"
        assert h.stat()["closing queue length"] > 0  # still working on them, and saying so
        late = base / "run" / "late.tif"
        os.link(base / "template.tif", late)
        assert s.feeder_event(str(late)) is not None  # ignored after close
        assert h.execute("stat")["result"] == "stat"  # the command service answers meanwhile
        assert s.wait_closed(180)
        assert h.stat()["closing queue length"] == 0
        assert h.ledger.counts(s.queue_id) == {"done": 150}
        assert len(list((base / "work").glob("*.chi"))) == 150
        assert not (h.state_dir / "queue.json").exists()
    finally:
        h.shutdown()


@pytest.mark.slow
def test_server_stopped_while_closing_resumes_and_finishes(base, data_dir):
    h = make_handler(base)
    h.execute("new", *new_request(data_dir))
    qid = h.session.queue_id
    for p in add_images(base, 60):
        h.session.feeder_event(str(p))
    h.execute("close")
    h.shutdown()  # before the queue drained: the rest stays queued and queue.json stays
    counts = make_counts(base, qid)
    if counts.get("queued", 0) == 0:
        pytest.skip("the queue drained before the shutdown")
    assert (base / ".saxsdog" / "queue.json").exists()
    h2 = make_handler(base)
    try:
        assert h2.restore() and h2.session.queue_id == qid
        assert h2.session.wait_closed(180)
        assert h2.ledger.counts(qid) == {"done": 60}
        assert not (base / ".saxsdog" / "queue.json").exists()
    finally:
        h2.shutdown()


def make_counts(base: Path, qid: str) -> dict[str, int]:
    from saxsdog.server.ledger import Ledger

    led = Ledger(base / ".saxsdog" / "ledger.sqlite")
    try:
        return led.counts(qid)
    finally:
        led.close()


def test_abort_records_the_waiting_images_as_dropped(base, data_dir):
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        qid = h.session.queue_id
        for p in add_images(base, 100):
            h.session.feeder_event(str(p))
        assert h.execute("abort")["result"] == "queue stopped emptied and closed"
        counts = h.ledger.counts(qid)
        assert "queued" not in counts, counts
        assert counts.get("dropped", 0) > 0 and sum(counts.values()) == 100, counts
    finally:
        h.shutdown()
    h2 = make_handler(base)
    assert not h2.restore()
    h2.shutdown()


@pytest.mark.slow
def test_full_ledger_disk_pauses_and_resumes(base, data_dir, small_tmpfs):
    """Part 2 item 3: SQLite's "database or disk is full" killed the dispatcher for good
    (every later stat: "cannot commit - no transaction is active").  Now stat keeps
    answering and reports it, and the queue resumes by itself once space is freed."""
    h = make_handler(base, state_dir=small_tmpfs / "state")
    try:
        h.execute("new", *new_request(data_dir))
        qid = h.session.queue_id
        filler = fill_disk(small_tmpfs)
        images = add_images(base, 40)
        for p in images:
            h.session.feeder_event(str(p))
        assert wait_for(lambda: h.execute("stat")["data"]["stat"]["sink errors"] > 0, 60)
        stat = h.execute("stat")
        assert stat["result"] == "stat", stat
        assert stat["data"]["stat"]["paused"] and "full" in stat["data"]["stat"]["last sink error"]
        filler.unlink()
        assert wait_for(lambda: h.execute("stat")["data"]["stat"]["images processed"] == 40, 120), h.stat()
        st = h.stat()
        assert st["paused"] is None and st["error"] is None
        assert h.ledger.counts(qid) == {"done": 40}
        # and the dispatcher still takes new work
        more = base / "run" / "more.tif"
        os.link(base / "template.tif", more)
        h.session.feeder_event(str(more))
        assert wait_for(lambda: h.stat()["images processed"] == 41, 60)
    finally:
        h.shutdown()


@pytest.mark.slow
def test_output_named_before_a_restart_is_not_overwritten(base, data_dir):
    """Part 2 item 7 across a restart: run/a/x.tif wrote run/work/x.chi; run/b/x.tif arriving
    after the restart must not replace it (nor be marked done with a's output)."""
    for sub in ("a", "b"):
        (base / "run" / sub).mkdir()
    a, b = base / "run" / "a" / "x.tif", base / "run" / "b" / "x.tif"
    os.link(base / "template.tif", a)
    h = make_handler(base)
    h.execute("new", *new_request(data_dir))
    h.session.feeder_event(str(a))
    assert wait_for(lambda: h.stat()["images processed"] == 1)
    h.shutdown()
    h2 = make_handler(base)
    try:
        assert h2.restore()
        os.link(base / "template.tif", b)
        h2.session.feeder_event(str(b))
        assert wait_for(lambda: h2.stat()["images processed"] == 2)
        rows = {r["path"]: r["outputs"] for r in h2.ledger.history(h2.session.queue_id)}
        assert Path(rows[str(a)][0]).name == "x.chi" and Path(rows[str(b)][0]).name == "x~2.chi"
        assert (base / "run" / "work" / "x~2.chi").is_file()
    finally:
        h2.shutdown()
