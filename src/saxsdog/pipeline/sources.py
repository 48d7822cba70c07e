"""Where image paths come from: a directory walk, a file-system watch, or pushes.

Both the walk and the watcher find files through the rules of
:func:`saxsdog.io.images.iter_images` (hidden names, regular files only, symbolic
links resolved at use); with ``confine_to`` (the server's base directory) anything
whose real path is outside it is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from ..io.images import is_image_file, iter_images
from ..io.images.discovery import check_confined
from .naming import in_directories

log = logging.getLogger(__name__)

PathArg = str | os.PathLike[str]


def _walk_one(top: str, confine_to: PathArg | None = None) -> tuple[list[str], int]:
    ignored = [0]

    def skipped(_path: str, _reason: str) -> None:
        ignored[0] += 1

    images = list(iter_images(top, confine_to=confine_to, on_skip=skipped))
    return images, ignored[0]


def walk_images(root: PathArg, directories: list[str] | None = None,
                in_threads: bool = False, confine_to: PathArg | None = None
                ) -> tuple[list[str], int]:
    """All image files below ``root`` (sorted), and how many other files were ignored.

    Parameters
    ----------
    root
        Folder to scan recursively.
    directories
        The calibration's ``Directory`` filter.
    in_threads
        Scan the top-level sub-folders in parallel threads (``-D``).
    confine_to
        Base directory (the server's): files and folders whose real path is outside it
        (symbolic links, a folder replaced by a link) are skipped with a warning.
    """
    root = os.path.abspath(root)
    if not in_threads:
        images, ignored = _walk_one(root, confine_to)
    elif confine_to is not None and not check_confined(root, confine_to):
        images, ignored = [], 0
    else:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
        tops = [e.path for e in entries
                if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        ignored_top = [0]

        def skipped(_path: str, _reason: str) -> None:
            ignored_top[0] += 1

        images = list(iter_images(root, recursive=False, confine_to=confine_to, on_skip=skipped))
        ignored = ignored_top[0]
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(tops)))) as ex:
            for imgs, ign in ex.map(lambda t: _walk_one(t, confine_to), tops):
                images.extend(imgs)
                ignored += ign
    images = [p for p in images if in_directories(p, root, directories or [])]
    return images, ignored


def stream_images(root: PathArg, directories: list[str] | None = None,
                  confine_to: PathArg | None = None) -> Iterator[str]:
    """The image files below ``root`` as :func:`walk_images` finds them, streamed in directory order.

    Nothing is listed whole: a folder's entries come one at a time from ``scandir``, so a
    walk of a folder of 10⁵ images holds a few entries, not the 10⁵ paths (and their sorted
    entries) that :func:`walk_images` returns.  The server's reconciliation scan walks the
    queue directory this way every 30 s; what it keeps (the images the ledger does not
    know) it sorts itself.
    """
    root = os.path.abspath(root)
    for path in iter_images(root, confine_to=confine_to, ordered=False):
        if in_directories(path, root, directories or []):
            yield path


class DirectoryWatcher:
    """Watch a folder recursively (watchdog) and call ``on_path`` for image files.

    Created, moved-in, modified and closed-after-write files are all reported; the
    queue de-duplicates, so a file written slowly in chunks is processed once, when
    complete. FIFOs, devices and sockets are never reported (a warning names them),
    and with ``confine_to`` neither is a path whose real path is outside it.
    """

    def __init__(self, root: PathArg, on_path: Callable[[str], None],
                 confine_to: PathArg | None = None):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.root = os.path.abspath(root)
        self.confine_to = confine_to
        callback = on_path
        accept = self.accepts

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory:
                    return
                kind = event.event_type
                if kind in ("created", "modified", "closed"):
                    path = event.src_path
                elif kind == "moved":
                    path = event.dest_path
                else:
                    return
                if isinstance(path, bytes):
                    path = os.fsdecode(path)
                if accept(path):
                    callback(path)

        self._observer = Observer()
        self._observer.schedule(_Handler(), self.root, recursive=True)

    def accepts(self, path: str) -> bool:
        """Whether an event's path is an image file to report (checked now, at use)."""
        if not is_image_file(path, check_file=True):
            return False
        return self.confine_to is None or check_confined(path, self.confine_to)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(5.0)
