"""Where image paths come from: a directory walk, a file-system watch, or pushes."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..io.images import is_image_file
from .naming import in_directories

log = logging.getLogger(__name__)


def _walk_one(top: str) -> tuple[list[str], int]:
    images: list[str] = []
    ignored = 0
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = os.path.join(folder, name)
            if is_image_file(p):
                images.append(p)
            elif not name.startswith("."):
                ignored += 1
    return images, ignored


def walk_images(root: str | os.PathLike[str], directories: list[str] | None = None,
                in_threads: bool = False) -> tuple[list[str], int]:
    """All image files below ``root`` (sorted), and how many other files were ignored.

    Parameters
    ----------
    root
        Folder to scan recursively.
    directories
        The calibration's ``Directory`` filter.
    in_threads
        Scan the top-level sub-folders in parallel threads (``-D``).
    """
    root = os.path.abspath(root)
    if not in_threads:
        images, ignored = _walk_one(root)
    else:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
        tops = [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]
        images, ignored = [], 0
        for e in entries:
            if e.is_file():
                if is_image_file(e.path):
                    images.append(e.path)
                elif not e.name.startswith("."):
                    ignored += 1
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(tops)))) as ex:
            for imgs, ign in ex.map(_walk_one, tops):
                images.extend(imgs)
                ignored += ign
    images = [p for p in images if in_directories(p, root, directories or [])]
    return images, ignored


class DirectoryWatcher:
    """Watch a folder recursively (watchdog) and call ``on_path`` for image files.

    Created, moved-in, modified and closed-after-write files are all reported; the
    queue de-duplicates, so a file written slowly in chunks is processed once, when
    complete.
    """

    def __init__(self, root: str | os.PathLike[str], on_path: Callable[[str], None]):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.root = os.path.abspath(root)
        callback = on_path

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
                if is_image_file(path):
                    callback(path)

        self._observer = Observer()
        self._observer.schedule(_Handler(), self.root, recursive=True)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(5.0)
