"""io.atomic: the one write-then-rename routine, and the writers that use it."""

from __future__ import annotations

import errno
import os
import secrets
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from saxsdog.io import atomic
from saxsdog.io.atomic import (
    PendingFile,
    atomic_copy,
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "saxsdog"


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_no_hand_rolled_write_then_rename_is_left():
    """Every rename-into-place in the package is io.atomic's (nxcansas uses its names)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in ("io/atomic.py", "io/nxcansas.py"):
            continue
        text = path.read_text()
        for pattern in (r"os\.replace\(", r"os\.rename\(", r"mkstemp\(", r"\.part\"\)"):
            if re.search(pattern, text):
                offenders.append(f"{rel}: {pattern}")
    assert offenders == []
    from saxsdog.io import chi

    assert "atomic_write_bytes" not in chi.__all__ and not hasattr(chi, "remove_stale_partials")


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    monkeypatch.setattr(atomic.os, "replace", _disk_full)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_disk_full_in_the_middle_of_the_content_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """The plain path of atomic_write_bytes (no mode, no fsync: every .chi file) writes with
    os.write: a full disk after part of the content keeps the old file and removes the part."""
    target = tmp_path / "out.chi"
    target.write_bytes(b"old")
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(str(target), b"new content " * 1000)
    assert len(calls) == 2  # the rest of a short write is written on
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.chi"]


def test_the_plain_path_renames_the_shared_temporary_name(tmp_path, monkeypatch):
    """The temporary file is the one temporary_name gives (stale-file cleanup knows it), a
    stale one of this writer is overwritten, and the content arrives whole."""
    target = tmp_path / "x.chi"
    atomic.temporary_name(target).write_text("stale and longer than the content")
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (renamed.append((a, b)), real_replace(a, b)))
    atomic_write_bytes(target, b"fresh")
    assert renamed == [(str(atomic.temporary_name(target)), str(target))]
    assert target.read_bytes() == b"fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["x.chi"]


def test_mode_is_set_before_content_is_written(tmp_path):
    old = os.umask(0)
    try:
        seen = {}
        with atomic_output(tmp_path / "secret", mode=0o600) as tmp:
            seen["mode"] = stat.S_IMODE(os.stat(tmp).st_mode)
            tmp.write_text("s3cret")
    finally:
        os.umask(old)
    assert seen["mode"] == 0o600
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    atomic_write_text(tmp_path / "t.txt", "é", mode=0o640, fsync=True)
    assert (tmp_path / "t.txt").read_text() == "é"
    assert stat.S_IMODE((tmp_path / "t.txt").stat().st_mode) == 0o640


def test_a_stale_temporary_of_the_same_writer_is_replaced(tmp_path):
    target = tmp_path / "x"
    atomic.temporary_name(target).write_text("stale")
    atomic_write_bytes(target, b"fresh", mode=0o600)
    assert target.read_bytes() == b"fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_pending_file_commit_and_discard(tmp_path):
    p = PendingFile(tmp_path / "a.h5")
    p.tmp.write_bytes(b"data")
    assert not (tmp_path / "a.h5").exists() and p.tmp.name.startswith(".")
    assert p.commit(fsync=True) == tmp_path / "a.h5"
    q = PendingFile(tmp_path / "b.h5")
    q.tmp.write_bytes(b"x")
    q.discard()
    q.discard()  # twice is fine
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.h5"]


def test_atomic_copy_creates_the_folder(tmp_path):
    (tmp_path / "src").write_bytes(b"abc")
    atomic_copy(tmp_path / "src", tmp_path / "d" / "e" / "copy")
    assert (tmp_path / "d" / "e" / "copy").read_bytes() == b"abc"


# --------------------------------------------------------------------------- #
# The writers that had their own routine
# --------------------------------------------------------------------------- #


def test_network_file_written_0600_without_leftovers(tmp_path, monkeypatch):
    from saxsdog.protocol.netconf import load_network, write_network

    entry = {"Server": "tcp://localhost:7777", "Secret": secrets.token_urlsafe(48)}  # a secret netconf accepts
    old = os.umask(0)
    try:
        p = write_network([entry], tmp_path / "net")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["net"]
    assert load_network(p)
    monkeypatch.setattr(atomic.os, "replace", _disk_full)
    with pytest.raises(OSError):
        write_network([entry], tmp_path / "net")
    assert [x.name for x in tmp_path.iterdir()] == ["net"]


def test_operator_cache_store_is_atomic(tmp_path, monkeypatch):
    from saxsdog.core.operator import BinningOperator
    from saxsdog.io.operator_cache import OperatorCache

    fields = dict(shape=(2, 2), n_bins=2, entries_per_pixel=np.ones(4, np.int32),
                  bins=np.zeros(4, np.int32), counts=np.ones(4, np.float32), subpixels=1,
                  x=np.arange(2.0), correction=None, kind="radial", x_label="q", meta={})
    try:
        op = BinningOperator(**fields)
    except TypeError:
        pytest.skip("BinningOperator signature changed")
    cache = OperatorCache(tmp_path)
    assert cache.store("k", op) == tmp_path / "k.npz"
    assert cache.load("k") is not None
    monkeypatch.setattr(atomic.os, "replace", _disk_full)
    assert cache.store("j", op) is None  # logged, not raised
    assert sorted(x.name for x in tmp_path.iterdir()) == ["k.npz"]


def test_feeder_copy_and_leash_figure_are_atomic(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from saxsdog.cli.leash import _save_figure
    from saxsdog.feeder import _copy_atomically

    (tmp_path / "img.tif").write_bytes(b"tiff")
    _copy_atomically(tmp_path / "img.tif", tmp_path / "copy" / "img.tif")
    assert (tmp_path / "copy" / "img.tif").read_bytes() == b"tiff"
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    _save_figure(fig, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setattr(atomic.os, "replace", _disk_full)
    with pytest.raises(OSError):
        _save_figure(fig, str(tmp_path / "p2.png"))
    with pytest.raises(OSError):
        _copy_atomically(tmp_path / "img.tif", tmp_path / "copy" / "again.tif")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["copy", "img.tif", "img.tif", "plot.png"]


def test_raw_frame_writer_renames_its_files_through_io_atomic(tmp_path, monkeypatch):
    from saxsdog.streams import raw

    committed = []
    real_commit = atomic.PendingFile.commit

    def spy(self, fsync=False):
        committed.append(self.final.name)
        return real_commit(self, fsync)

    monkeypatch.setattr(atomic.PendingFile, "commit", spy)

    class F:
        frame, shape, dtype, encoding = 1, (4, 3), "uint16", "<"
        data = np.arange(12, dtype="<u2").tobytes()

    w = raw.NexusRawWriter(tmp_path, "series_1", frames_per_file=10)
    w.add(F())
    files = w.close()
    assert w.error is None, w.error
    assert {p.name for p in files} == {"series_1_master.h5", "series_1_data_000001.h5"}
    assert set(committed) == {"series_1_master.h5", "series_1_data_000001.h5"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_set_aside_keeps_a_damaged_database_and_its_companions(tmp_path):
    db = tmp_path / "ledger.sqlite"
    for suffix, text in (("", "main"), ("-wal", "wal"), ("-shm", "shm")):
        (tmp_path / f"ledger.sqlite{suffix}").write_text(text)
    first = atomic.set_aside(db)
    db.write_text("again")
    second = atomic.set_aside(db)
    assert first != second and not db.exists()
    assert first.read_text() == "main" and first.with_name(first.name + "-wal").read_text() == "wal"
    assert first.with_name(first.name + "-shm").read_text() == "shm"
    assert second.read_text() == "again" and first.name.startswith("ledger.sqlite.corrupt-")
