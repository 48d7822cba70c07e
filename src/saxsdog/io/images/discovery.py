"""Finding image files: the one walker behind ``saxsdog``, the feeder's simulator and merge.

Rules, in one place:

* folders and files whose name starts with ``.`` are skipped (hidden; temporary
  outputs are hidden too), and so are names :func:`is_image_file` refuses;
* only regular files are yielded: a FIFO, device or socket is skipped with a
  warning naming it (opening a FIFO blocks);
* symbolic links to folders are not followed;
* with ``confine_to``, every path is resolved (symbolic links followed at the time of
  use) and skipped with a warning when its real path is outside that base folder;
  the top folder itself too, so a folder replaced by a link to an outside folder
  yields nothing.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator

from ._base import PathLike, file_kind
from .registry import is_image_file, warn_skipped

__all__ = ["Skip", "file_signature", "inside", "iter_images"]

#: ``on_skip(path, reason)``: a file that is not yielded (reason ``"not an image"``,
#: ``"not a regular file"`` or ``"outside the base directory"``).
Skip = Callable[[str, str], None]


def _real(path: str) -> str:
    return os.path.realpath(path)


def file_signature(path: PathLike) -> tuple[int, int] | None:
    """``(size, mtime in ns)`` of a file, to tell whether it changed; ``None`` if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def inside(path: PathLike, base: PathLike) -> bool:
    """Whether the real path of ``path`` (symbolic links resolved now) is ``base`` or below."""
    real, top = _real(os.fspath(path)), _real(os.fspath(base))
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def check_confined(path: str, confine_to: PathLike | None) -> bool:
    """``True`` if ``path`` may be used; warns and returns ``False`` when it leads outside."""
    if confine_to is None or inside(path, confine_to):
        return True
    warn_skipped(path, f"its real path {_real(path)} is outside the base directory "
                       f"{_real(os.fspath(confine_to))}")
    return False


def iter_images(top: PathLike, *, recursive: bool = True, pattern: str | None = None,
                confine_to: PathLike | None = None, on_skip: Skip | None = None,
                ordered: bool = True) -> Iterator[str]:
    """Yield the image files below ``top``, folder by folder, names sorted (unless not ``ordered``).

    Parameters
    ----------
    top
        Folder to scan.
    recursive
        Descend into sub-folders (not hidden ones, not symbolic links).
    pattern
        Keep only file names matching this ``fnmatch`` pattern (``"*"`` keeps all).
    confine_to
        Base directory: skip (with a warning) what resolves outside it, ``top`` included.
    on_skip
        Called for each visible file that is not yielded, with the reason.
    ordered
        Sort each folder's names.  ``False`` streams them in directory order, holding one
        entry at a time instead of the folder's whole listing (a folder of 10⁵ images is
        some 30 MB of entries: the server's reconciliation scan walks this way).

    Yields
    ------
    str
        Paths joined from ``top`` (not resolved).
    """
    top = os.fspath(top)
    if confine_to is not None and not check_confined(top, confine_to):
        return
    yield from _walk(top, recursive, pattern, confine_to, on_skip, ordered)


def _entries(folder: str, ordered: bool) -> Iterator[os.DirEntry[str]]:
    """The entries of ``folder``: sorted by name (a list), or streamed from ``scandir``."""
    try:
        it = os.scandir(folder)
    except OSError:
        return
    with it:
        if ordered:
            try:
                entries = sorted(it, key=lambda e: e.name)
            except OSError:
                return
            yield from entries
            return
        while True:
            try:
                e = next(it)
            except (StopIteration, OSError):
                return
            yield e


def _walk(folder: str, recursive: bool, pattern: str | None, confine_to: PathLike | None,
          on_skip: Skip | None, ordered: bool = True) -> Iterator[str]:
    subdirs = []
    for e in _entries(folder, ordered):
        if e.name.startswith("."):
            continue
        try:
            is_link = e.is_symlink()
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.path)
                continue
        except OSError:
            continue
        if not is_image_file(e.name) or (pattern is not None and not fnmatch.fnmatch(e.name, pattern)):
            # a link to a folder is not followed, and is not a skipped file either
            if on_skip is not None and not (is_link and os.path.isdir(e.path)):
                on_skip(e.path, "not an image")
            continue
        if confine_to is not None and is_link and not check_confined(e.path, confine_to):
            if on_skip is not None:
                on_skip(e.path, "outside the base directory")
            continue
        try:
            # d_type answers without a stat for plain entries; a link is followed
            regular = e.is_file() if not is_link else stat.S_ISREG(os.stat(e.path).st_mode)
        except OSError:
            continue  # vanished or a dangling link
        if not regular:
            try:
                kind = file_kind(os.stat(e.path).st_mode)
            except OSError:
                kind = "special file"
            warn_skipped(e.path, f"it is a {kind}, not a regular file")
            if on_skip is not None:
                on_skip(e.path, "not a regular file")
            continue
        yield e.path
    if recursive:
        for d in subdirs:
            yield from _walk(d, recursive, pattern, confine_to, on_skip, ordered)
