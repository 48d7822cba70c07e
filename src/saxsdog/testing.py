"""Helpers for tests and benchmarks (like ``numpy.testing``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def link_images(src: str | os.PathLike[str], folder: str | os.PathLike[str], n: int,
                prefix: str = "img") -> list[Path]:
    """Make ``n`` images named ``<prefix>_00000.tif`` … in ``folder`` from one file.

    One real copy is made, the rest are hard links to it: hundreds of Pilatus images
    cost the disk space (and page cache) of one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / f"{prefix}_00000.tif"
    shutil.copy(src, first)
    paths = [first]
    for i in range(1, n):
        p = folder / f"{prefix}_{i:05d}.tif"
        os.link(first, p)
        paths.append(p)
    return paths
