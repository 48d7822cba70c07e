"""Helpers for tests and benchmarks (like ``numpy.testing``)."""

from __future__ import annotations

import os
import shutil
import socket
from datetime import datetime
from pathlib import Path

import numpy as np


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (for test servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


def write_pilatus_tiff(path: str | os.PathLike[str], data: np.ndarray, when: datetime,
                       exposure: float = 1.0) -> Path:
    """Write ``data`` as a TIFF whose description is a Pilatus header taken at ``when``.

    The header carries what the data merge reads from real Pilatus images: the acquisition
    time (naive local time, as the detector writes it) and the exposure time.
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Detector: PILATUS 1M, S/N 10-0120\r\n"
              f"# {when.isoformat(timespec='milliseconds')}\r\n"
              "# Pixel_size 172e-6 m x 172e-6 m\r\n"
              f"# Exposure_time {exposure:.7f} s\r\n"
              "# Wavelength 1.5400 A\r\n")
    tifffile.imwrite(path, data, description=header, metadata=None)
    return path
