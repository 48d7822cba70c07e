"""io.atomic.atomic_write_linked: the worker's .chi writes, through an unnamed file linked in whole."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from saxsdog.io import atomic
from saxsdog.io.atomic import atomic_write_linked

pytestmark = pytest.mark.skipif(not getattr(os, "O_TMPFILE", 0), reason="no O_TMPFILE on this system")


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_new_file_is_linked_in_whole_without_a_temporary_name(tmp_path, monkeypatch):
    renamed = []
    monkeypatch.setattr(atomic.os, "replace", lambda *a: renamed.append(a))
    target = tmp_path / "a.chi"
    atomic_write_linked(target, [b"head\n", memoryview(b"body " * 1000)])
    assert target.read_bytes() == b"head\n" + b"body " * 1000
    assert renamed == []  # linked in, never renamed
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # what open(..., "wb") gives


def test_an_existing_output_is_replaced_by_a_rename_and_a_stale_temporary_is_reused(tmp_path):
    target = tmp_path / "a.chi"
    target.write_bytes(b"old and longer than the new content")
    atomic.temporary_name(target).write_bytes(b"left by a dead writer with our pid and thread id")
    atomic_write_linked(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]


def test_a_full_disk_in_the_middle_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    """A short write is written on; a full disk after it raises, the old file is untouched and
    no file (named or temporary) is left."""
    target = tmp_path / "a.chi"
    target.write_bytes(b"old")
    real_writev = os.writev
    calls = []

    def half_then_full(fd, buffers):
        calls.append(sum(len(b) for b in buffers))
        if len(calls) == 1:
            return real_writev(fd, [bytes(buffers[0])[: len(buffers[0]) // 2]])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "writev", half_then_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_linked(target, [b"x" * 5000, b"y" * 5000])
    assert len(calls) == 2 and calls[1] == 10000 - 2500  # the rest of the short write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]


def test_a_failed_rename_over_an_existing_output_leaves_it_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.chi"
    target.write_bytes(b"old")
    monkeypatch.setattr(atomic.os, "replace", _disk_full)
    with pytest.raises(OSError):
        atomic_write_linked(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]


def test_a_missing_folder_is_file_not_found(tmp_path):
    """The worker makes the folder again on FileNotFoundError (a folder removed meanwhile)."""
    with pytest.raises(FileNotFoundError):
        atomic_write_linked(tmp_path / "gone" / "a.chi", b"x")


def test_without_o_tmpfile_support_the_temporary_name_is_used(tmp_path, monkeypatch):
    """A file system that refuses O_TMPFILE (EOPNOTSUPP) gets the rename path, and is
    remembered: its next writes do not try again."""
    monkeypatch.setattr(atomic, "_NO_TMPFILE", set())
    real_open = os.open
    tried = []

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & atomic._O_TMPFILE == atomic._O_TMPFILE:
            tried.append(path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "open", no_tmpfile)
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (renamed.append(b), real_replace(a, b)))
    for name in ("a.chi", "b.chi"):
        atomic_write_linked(tmp_path / name, [b"head ", b"body"])
        assert (tmp_path / name).read_bytes() == b"head body"
    assert len(tried) == 1 and renamed == [str(tmp_path / "a.chi"), str(tmp_path / "b.chi")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.chi", "b.chi"]


def test_without_proc_the_content_is_written_under_the_temporary_name(tmp_path, monkeypatch):
    real_link = os.link

    def no_proc(src, dst, **kwargs):
        if str(src).startswith("/proc/self/fd/"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", src)
        return real_link(src, dst, **kwargs)

    monkeypatch.setattr(atomic.os, "link", no_proc)
    atomic_write_linked(tmp_path / "a.chi", [b"whole ", b"content"])
    assert (tmp_path / "a.chi").read_bytes() == b"whole content"
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]


CHILD = """
import os, sys, time
from saxsdog.io import atomic
real = os.writev
def slow(fd, buffers):
    n = real(fd, [bytes(buffers[0])[:10]])
    open(sys.argv[2], "w").close()  # half written: kill me now
    time.sleep(60)
    return n
atomic.os.writev = slow
atomic.atomic_write_linked(sys.argv[1], [b"x" * 100000])
"""


def test_a_writer_killed_half_way_leaves_nothing_behind(tmp_path):
    """kill -9 of a writer in the middle of its content: no output, no temporary file
    (the unnamed file goes with the process), an older output untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.chi").write_bytes(b"old")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out / "a.chi"), str(ready)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert sorted(p.name for p in out.iterdir()) == ["old.chi"]
    assert (out / "old.chi").read_bytes() == b"old"
