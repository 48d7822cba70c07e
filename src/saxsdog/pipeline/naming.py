"""Where an image's outputs go (the original's naming rules)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from ..io.images.registry import strip_image_suffix
from .options import QueueOptions


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image extension (``x.tif`` → ``x``, ``y_master.h5`` → ``y_master``)."""
    return strip_image_suffix(Path(path).name)  # the suffix table of saxsdog.io.images


def output_base(image: str | os.PathLike[str], root: str | os.PathLike[str], options: QueueOptions,
                frame: int | None = None, stem: str | None = None) -> Path:
    """Output path without suffix and extension.

    With ``out_dir`` every output goes there and the image's folder relative to ``root``
    is joined with ``_`` in front of its name; otherwise outputs go to
    ``<image folder>/<relpath>/``.  Frames of multi-frame files get ``_<frame:05d>``.

    ``stem`` replaces the whole file name (before the frame number): the queue gives it
    to an image whose usual name another image of the queue writes already
    (:func:`output_key`; the second one is named ``<name>~2``, the next ``~3``, ...).
    """
    image = Path(image)
    if stem is not None:
        base = output_base(image, root, options).parent / stem
        return base if frame is None else base.with_name(f"{stem}_{frame:05d}")
    stem = image_stem(image)
    if frame is not None:
        stem = f"{stem}_{frame:05d}"
    if options.out_dir is not None:
        parts = list(_relative_parts(str(image.parent), str(root)))
        return Path(options.out_dir) / "_".join(parts + [stem])
    return Path(os.path.normpath(image.parent / options.relpath)) / stem


def output_key(image: str | os.PathLike[str], root: str | os.PathLike[str], options: QueueOptions) -> str:
    """What two images must not share: their output path without suffix and extension.

    ``run/a/x.tif`` and ``run/b/x.tif`` (outputs in ``../work``), ``img.edf`` and
    ``img.cbf``, ``x.tif`` and ``x.tiff``, or with ``out_dir`` ``a_b/x.tif`` and
    ``a/b_x.tif`` all have the same key: every output of one would replace the other's.
    """
    return output_base(image, root, options).as_posix()


@functools.lru_cache(maxsize=4096)
def _relative_parts(folder: str, root: str) -> tuple[str, ...]:
    """The parts of ``folder`` relative to ``root`` (both resolved), ``()`` if outside.

    Cached: resolving costs a few system calls per path component, and every image of a
    folder (every frame of a stream) asks the same question.
    """
    try:
        rel = Path(folder).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return ()
    return tuple(p for p in rel.parts if p not in ("", "."))


def results_dir(root: str | os.PathLike[str], options: QueueOptions) -> Path:
    """Folder of the live file list and monitor plot."""
    if options.out_dir is not None:
        return Path(options.out_dir) / "results"
    return Path(os.path.normpath(Path(root) / options.relpath)) / "results"


def in_directories(image: str | os.PathLike[str], root: str | os.PathLike[str], directories: list[str]) -> bool:
    """Whether an image lies in one of the calibration's ``Directory`` entries."""
    if not directories:
        return True
    try:
        rel = Path(image).parent.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    for d in directories:
        d = os.path.normpath(d)
        if d in (".", ""):
            return True
        if rel == Path(d) or Path(d) in rel.parents:
            return True
    return False


def frame_name(image: str | os.PathLike[str], root: str | os.PathLike[str], index: int = 0,
               nframes: int = 1) -> str:
    """A frame's name in run files: the image path relative to ``root`` (POSIX separators),
    with ``#<index>`` for frames of multi-frame files.

    Images outside ``root`` are named by their file name alone.
    """
    image = Path(image)
    try:
        rel = image.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        rel = image.name
    return f"{rel}#{index}" if nframes > 1 else rel


def output_root(root: str | os.PathLike[str], options: QueueOptions) -> Path:
    """Folder of the run files: the ``-o`` folder, else the parent of :func:`results_dir`."""
    if options.out_dir is not None:
        return Path(options.out_dir)
    return results_dir(root, options).parent


def run_file_path(folder: str | os.PathLike[str], run_name: str, number: int = 0,
                  suffix: str = "") -> Path:
    """``<folder>/<run name>[_<NNN>]<suffix>.h5``: the run file of one integrator.

    ``number`` 0 is the first run file of that name; resumed runs count 1, 2, ...;
    ``suffix`` is the integrator's output suffix (``""`` for the first, ``_cR1`` ...).
    """
    stem = run_name if number == 0 else f"{run_name}_{number:03d}"
    return Path(folder) / f"{stem}{suffix}.h5"


def existing_run_files(folder: str | os.PathLike[str], run_name: str) -> dict[int, Path]:
    """The first integrator's run files of ``run_name`` in ``folder``, by number."""
    folder = Path(folder)
    found: dict[int, Path] = {}
    if not folder.is_dir():
        return found
    pattern = re.compile(re.escape(run_name) + r"(?:_(\d{3}))?\.h5")
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_file():
            found[int(m.group(1) or 0)] = p
    return found
