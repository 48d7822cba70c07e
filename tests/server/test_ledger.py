"""The ledger: a damaged or lost file is refused and rebuilt, a full disk never breaks the connection."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from saxsdog.errors import LedgerError
from saxsdog.pipeline.tasks import ImageResult
from saxsdog.server.ledger import Ledger
from saxsdog.testing import fill_disk, link_images

from server_helpers import Server, start_queue, wait_done


def _rows(path: Path) -> list[tuple]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT path, state FROM images ORDER BY path").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-schema"])
def test_a_damaged_ledger_is_moved_aside_and_a_fresh_one_started(tmp_path, damage, caplog):
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path)
    for i in range(2000):
        led.mark_queued("q", f"/data/img_{i:05d}.tif", "1:2")
    led.close()
    if damage == "garbage":
        path.write_bytes(b"this is not SQLite at all" * 100)
    elif damage == "truncated":
        for side in ("-wal", "-shm"):
            Path(str(path) + side).unlink(missing_ok=True)
        data = path.read_bytes()
        path.write_bytes(data[:4096] + b"\x00\xff" * ((len(data) - 4096) // 2))  # pages overwritten
    else:
        path.unlink()
        db = sqlite3.connect(str(path))
        db.execute("CREATE TABLE images (x INTEGER)")
        db.commit()
        db.close()
    with caplog.at_level("ERROR"):
        led = Ledger(path)  # no sqlite3.DatabaseError
    try:
        assert led.fresh and led.recovered_from is not None and led.recovered_from.exists()
        assert led.recovered_from.name.startswith("ledger.sqlite.corrupt-")
        assert "not a readable SQLite ledger" in caplog.text and str(led.recovered_from) in caplog.text
        led.mark_queued("q", "/data/new.tif", None)
        led.commit()
        assert led.unfinished("q") == ["/data/new.tif"]
    finally:
        led.close()


def test_an_intact_ledger_is_not_fresh(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    assert led.fresh
    led.mark_queued("q", "/a", None)
    led.close()
    led = Ledger(tmp_path / "l.sqlite")
    assert not led.fresh and led.recovered_from is None and led.unfinished("q") == ["/a"]
    led.close()


def test_a_full_disk_gives_a_clear_error_keeps_the_connection_and_loses_no_write(small_tmpfs):
    path = small_tmpfs / "ledger.sqlite"
    led = Ledger(path, commit_interval=0.0)
    led.mark_queued("q", "/data/first.tif", None)
    filler = fill_disk(small_tmpfs)
    written, error = [], None
    for i in range(20000):
        p = f"/data/img_{i:05d}_{uuid.uuid4().hex}.tif"
        try:
            led.mark_result("q", ImageResult(p, 0, outputs=[p + ".chi"], processed_at=time.time()), "1:2")
        except LedgerError as exc:
            error = exc
            written.append(p)  # kept in memory, written with the next commit
            break
        written.append(p)
    assert error is not None, "the disk never filled up"
    assert str(path) in str(error) and "full" in str(error), str(error)
    assert led.pending_writes > 0
    # still usable: reads answer, and further writes fail with the same clear error (not "no transaction")
    assert led.state("q", "/data/first.tif") is not None
    with pytest.raises(LedgerError, match="full"):
        led.mark_queued("q", "/data/while_full.tif", None)
        led.commit()
    filler.unlink()  # space is back: the next commit writes everything
    led.commit()
    assert led.pending_writes == 0
    led.close()
    rows = dict(_rows(path))
    assert all(rows.get(p) == "done" for p in written)
    assert rows["/data/first.tif"] == "queued" and rows["/data/while_full.tif"] == "queued"


@pytest.fixture
def base(tmp_path):
    b = tmp_path / "base"
    (b / "run").mkdir(parents=True)
    return b


@pytest.mark.parametrize("loss", ["corrupt", "deleted"])
@pytest.mark.slow
def test_the_server_survives_a_lost_ledger_and_rebuilds_it_from_the_outputs(tmp_path, base, data_dir, loss):
    server = Server(tmp_path, base, ["--rescan", "0.5"]).start()
    try:
        start_queue(server, data_dir)
        link_images(data_dir / "buf1_00000.tif", base / "run", 20)
        wait_done(server, 20)
    finally:
        server.stop()
    outputs = sorted((base / "work").glob("*.chi"))
    assert len(outputs) == 20
    mtimes = [o.stat().st_mtime_ns for o in outputs]
    ledger = base / ".saxsdog" / "ledger.sqlite"
    if loss == "corrupt":
        ledger.write_bytes(os.urandom(50_000))
    else:
        ledger.unlink()
    for side in ("-wal", "-shm"):
        Path(str(ledger) + side).unlink(missing_ok=True)
    server.start()  # no uncaught sqlite3.DatabaseError
    try:
        with server.client() as c:
            assert c.request("stat")["result"] == "stat"
        time.sleep(1.5)  # a reconciliation scan or two
        rows = _rows(ledger)
        assert len(rows) == 20 and {s for _, s in rows} == {"done"}
        assert [o.stat().st_mtime_ns for o in outputs] == mtimes, "images with outputs were processed again"
        if loss == "corrupt":
            assert list(ledger.parent.glob("ledger.sqlite.corrupt-*"))
            assert "not a readable SQLite ledger" in (base.parent / "server.log").read_text()
    finally:
        server.stop()


def test_unknown_paths_are_found_in_chunks_without_loading_the_table(tmp_path, monkeypatch):
    led = Ledger(tmp_path / "ledger.sqlite")
    try:
        for i in range(0, 1200, 2):  # every even image is known to queue q
            led.mark_queued("q", f"/data/img_{i:05d}.tif", None)
        led.mark_queued("other", "/data/img_00001.tif", None)  # another queue's row does not count
        led.commit()
        asked: list[int] = []
        real = led._unknown_of

        def counting(queue, batch):
            asked.append(len(batch))
            return real(queue, batch)

        monkeypatch.setattr(led, "_unknown_of", counting)
        monkeypatch.setattr(led, "known", lambda *_: pytest.fail("the whole table was loaded"))
        paths = [f"/data/img_{i:05d}.tif" for i in range(1200)]
        assert list(led.unknown("q", iter(paths), chunk=500)) == paths[1::2]
        assert asked == [500, 500, 200]
        assert list(led.unknown("q", [])) == []
    finally:
        led.close()
