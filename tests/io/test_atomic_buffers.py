"""io.atomic.atomic_write_bytes with a sequence of buffers (a worker's .chi file: one os.writev)."""

from __future__ import annotations

import errno
import os

import pytest

from saxsdog.io import atomic
from saxsdog.io.atomic import atomic_write_bytes


def test_buffers_are_written_whole_under_the_temporary_name_then_renamed(tmp_path, monkeypatch):
    target = tmp_path / "a.chi"
    atomic.temporary_name(target).write_bytes(b"stale, of a dead writer with our pid and thread id, and long")
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (renamed.append((a, b)), real_replace(a, b)))
    atomic_write_bytes(target, [b"head\n", memoryview(b"body " * 1000), b"", bytearray(b"end")])
    assert target.read_bytes() == b"head\n" + b"body " * 1000 + b"end"
    assert renamed == [(str(atomic.temporary_name(target)), str(target))]
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]


def test_a_short_writev_is_written_on_and_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    """os.writev may take part of the buffers: the rest is written on; a full disk after it
    raises, the old file stays and the temporary file is removed."""
    target = tmp_path / "a.chi"
    target.write_bytes(b"old")
    real_writev = os.writev
    calls = []

    def short_then_full(fd, buffers):
        calls.append([bytes(b) for b in buffers])
        if len(calls) == 1:
            return real_writev(fd, [bytes(buffers[0])[:3000]])  # inside the first buffer
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "writev", short_then_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(str(target), [b"x" * 5000, b"y" * 5000])
    assert calls[1] == [b"x" * 2000, b"y" * 5000]  # the rest of the short write, in order
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.chi"]


def test_short_writes_across_buffer_boundaries_give_the_whole_content(tmp_path, monkeypatch):
    real_writev = os.writev

    def a_few_bytes_at_a_time(fd, buffers):
        data = b"".join(bytes(b) for b in buffers)
        return real_writev(fd, [data[:7]])

    monkeypatch.setattr(atomic.os, "writev", a_few_bytes_at_a_time)
    parts = [b"abc", b"defghij", b"k" * 20, memoryview(b"lmnop")]
    atomic_write_bytes(tmp_path / "b.chi", parts)
    assert (tmp_path / "b.chi").read_bytes() == b"".join(bytes(p) for p in parts)


def test_buffers_with_mode_or_fsync_take_the_general_path(tmp_path):
    target = tmp_path / "secret"
    atomic_write_bytes(target, [b"a", b"b"], mode=0o600, fsync=True)
    assert target.read_bytes() == b"ab" and target.stat().st_mode & 0o777 == 0o600
