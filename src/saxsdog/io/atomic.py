"""Atomic file output: write under a temporary name, then rename into place.

Every file saxsdog writes goes through here. A reader, a directory scan or a crash
never sees a half-written output.  Temporary names are ``.<name>.<pid>.<thread>.part``:
hidden (scans ignore them), unique per writer, and recognisable as stale once their
process is gone (:func:`remove_stale_partials`).

* :func:`atomic_output` -- a context manager yielding the temporary path, for writers
  that want a file name (h5py, matplotlib, NumPy, ``shutil.copyfile``);
* :func:`atomic_write_bytes` / :func:`atomic_write_text` -- content in one call;
  :func:`atomic_write_bytes_at` relative to an open folder (confined outputs);
* :class:`PendingFile` -- a temporary file kept open across calls and committed later
  (the raw-frame writer's data files);
* ``mode=0o600`` creates the temporary file with those permissions before anything is
  written (secrets are never readable by others, not even for a moment); ``fsync=True``
  flushes it to disk before the rename.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "PendingFile",
    "atomic_copy",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_bytes_at",
    "atomic_write_text",
    "remove_stale_partials",
    "set_aside",
    "temporary_name",
]


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The temporary name this process and thread use while writing ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")


def _create(tmp: Path, mode: int) -> None:
    """Create ``tmp`` empty with ``mode`` (whatever the umask), replacing a stale one."""
    for _ in range(2):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            os.unlink(tmp)  # left by a dead writer with our pid and thread id
            continue
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return
    raise FileExistsError(f"cannot create the temporary file {tmp}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PendingFile:
    """A temporary file for ``path``, renamed into place by :meth:`commit`.

    For writers that keep the file open across calls; :meth:`discard` removes it.

    Parameters
    ----------
    path
        The final name.
    mode
        Permissions to create the temporary file with (``None``: the writer creates it).
    """

    def __init__(self, path: str | os.PathLike[str], mode: int | None = None):
        self.final = Path(path)
        self.tmp = temporary_name(self.final)
        if mode is not None:
            _create(self.tmp, mode)

    def commit(self, fsync: bool = False) -> Path:
        """Rename the temporary file to the final name (flushed to disk first with ``fsync``)."""
        if fsync:
            _fsync_file(self.tmp)
        os.replace(self.tmp, self.final)
        return self.final

    def discard(self) -> None:
        """Remove the temporary file; the final name is left as it was."""
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


@contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int | None = None,
                  fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    pending = PendingFile(path, mode)
    try:
        yield pending.tmp
        pending.commit(fsync)
    except BaseException:
        pending.discard()
        raise


#: Flags of the temporary file :func:`atomic_write_bytes` writes (``open(tmp, "wb")``'s).
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _write_all_and_close(fd: int, content: bytes) -> None:
    """Write every byte of ``content`` to ``fd`` (``os.write`` may take part of it), then close it."""
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _writev_all_and_close(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``parts`` (in order) to ``fd`` with ``os.writev``, then close it.

    ``os.writev`` may take only part of them (a full disk, a signal): the rest is written
    on, an error is raised as ``os.write``'s would be.
    """
    try:
        _writev_all(fd, parts)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], content: bytes | Sequence[bytes | memoryview],
                       mode: int | None = None, fsync: bool = False) -> None:
    """Write ``content`` to ``path`` atomically.

    ``content`` is bytes or a sequence of buffers written one after the other (a ``.chi``
    file's header lines and table: one ``os.writev``, no copy into one ``bytes`` first).

    Without ``mode`` and ``fsync`` (every ``.chi`` file) the temporary file is written with
    plain system calls on its name as text: the same steps as :func:`atomic_output` (the
    same temporary name, removed on any error, then one rename), without the
    :class:`~pathlib.Path` objects and the buffered file of the general path.
    """
    several = isinstance(content, (list, tuple))
    if mode is not None or fsync:
        with atomic_output(path, mode, fsync) as tmp, open(tmp, "wb") as fh:
            fh.write(b"".join(content) if several else content)  # type: ignore[arg-type]
        return
    final = os.fspath(path)
    folder, name = os.path.split(final)
    part = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.part")
    fd = os.open(part, _WRITE_FLAGS, 0o666)
    try:
        if several:
            _writev_all_and_close(fd, content)  # type: ignore[arg-type]
        else:
            _write_all_and_close(fd, content)  # type: ignore[arg-type]
        os.replace(part, final)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


def _writev_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``parts`` (in order) to ``fd`` with ``os.writev`` (a short write is
    written on; an error is raised as ``os.write``'s would be)."""
    views = [memoryview(p).cast("B") for p in parts]
    views = [v for v in views if v.nbytes]
    while views:
        written = os.writev(fd, views)
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def atomic_write_bytes_at(dir_fd: int, name: str, content: bytes) -> None:
    """Write ``content`` to ``name`` inside the open folder ``dir_fd`` atomically.

    Everything happens relative to that folder (a folder on its path swapped for a link
    meanwhile cannot redirect it); the temporary file is created with ``O_EXCL |
    O_NOFOLLOW`` (a link planted at its name is removed, never written through); a link at
    ``name`` itself is replaced by the new file.
    """
    tmp = temporary_name(name).name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
    except FileExistsError:  # left by a dead writer with our pid and thread id (or planted)
        os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
    try:
        _write_all_and_close(fd, content)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8",
                      mode: int | None = None, fsync: bool = False) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding), mode, fsync)


def atomic_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dest`` atomically (the folder of ``dest`` is created)."""
    import shutil

    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest) as tmp:
        shutil.copyfile(src, tmp)


def set_aside(path: str | os.PathLike[str], why: str = "corrupt",
              companions: tuple[str, ...] = ("-wal", "-shm")) -> Path:
    """Rename a damaged file (and its SQLite companions) to ``<name>.<why>-<time>``, unused.

    The file is kept for a person to look at, under a name that nothing opens again.

    Returns
    -------
    Path
        The new name of ``path``.

    Raises
    ------
    OSError
        It could not be renamed.
    """
    import time

    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
        n += 1
    if path.exists():
        os.replace(path, aside)
    for extra in companions:
        side = path.with_name(path.name + extra)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + extra))
    return aside


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
