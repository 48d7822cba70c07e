"""Atomic file output: write under a temporary name, then rename into place.

A reader, a directory scan or a crash never sees a half-written output.  Temporary names
are ``.<name>.<pid>.<thread>.part``: hidden (scans ignore them), unique per writer, and
recognisable as stale once their process is gone (:func:`remove_stale_partials`).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["temporary_name", "atomic_output", "atomic_write_bytes", "remove_stale_partials"]


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The temporary name this process and thread use while writing ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike[str], content: bytes) -> None:
    """Write ``content`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(content)


def _pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed, unreaped writer is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def remove_stale_partials(folder: str | os.PathLike[str]) -> int:
    """Delete temporary files left below ``folder`` by writers that were killed.

    A temporary file whose process no longer exists will never be renamed; files of live
    processes are left alone.  Returns how many were removed.
    """
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if not (name.startswith(".") and name.endswith(".part")):
                continue
            parts = name[:-5].rsplit(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            if not _pid_alive(int(parts[1])):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed
