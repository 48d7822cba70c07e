"""Where an image's outputs go (the original's naming rules)."""

from __future__ import annotations

import os
from pathlib import Path

from .options import QueueOptions


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image extension (``x.tif`` → ``x``, ``y_master.h5`` → ``y_master``)."""
    name = Path(path).name
    for ext in (".edf.gz", ".cbf.gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def output_base(image: str | os.PathLike[str], root: str | os.PathLike[str], options: QueueOptions,
                frame: int | None = None) -> Path:
    """Output path without suffix and extension.

    With ``out_dir`` every output goes there and the image's folder relative to ``root``
    is joined with ``_`` in front of its name; otherwise outputs go to
    ``<image folder>/<relpath>/``.  Frames of multi-frame files get ``_<frame:05d>``.
    """
    image = Path(image)
    stem = image_stem(image)
    if frame is not None:
        stem = f"{stem}_{frame:05d}"
    if options.out_dir is not None:
        try:
            rel = image.parent.resolve().relative_to(Path(root).resolve())
            parts = [p for p in rel.parts if p not in ("", ".")]
        except ValueError:
            parts = []
        return Path(options.out_dir) / "_".join(parts + [stem])
    return Path(os.path.normpath(image.parent / options.relpath)) / stem


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
