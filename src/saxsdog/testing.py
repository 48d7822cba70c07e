"""Helpers for tests and benchmarks (like ``numpy.testing``)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

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


def fill_disk(folder: str | os.PathLike[str], leave: int = 0) -> Path:
    """Write ``folder/filler`` until its file system is full, then give ``leave`` bytes back.

    Blocks of 64 KiB, then 512 bytes, then single bytes, so the disk is full to the last
    byte.  Delete the returned file to free the space again.
    """
    filler = Path(folder) / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler


@contextmanager
def mounted_tmpfs(folder: str | os.PathLike[str], size_mb: float = 3) -> Iterator[Path]:
    """Mount a small tmpfs on ``folder`` (created) for a real full disk; unmounted on exit.

    Raises
    ------
    OSError
        It cannot be mounted (not root, or no ``mount``): the message says why.
    """
    import subprocess

    mnt = Path(folder)
    mnt.mkdir(parents=True, exist_ok=True)
    size = f"{int(size_mb * 1024)}k"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise OSError(f"cannot mount a tmpfs on {mnt}: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def wait_for(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds have passed; whether it became true."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def run_queue(calibration: Any, root: str | os.PathLike[str], timeout: float = 120.0, **options: Any) -> Any:
    """Process every image below ``root`` with an :class:`~saxsdog.pipeline.queue.ImageQueue`
    of ``QueueOptions(**options)``, wait until it is idle and stop it; returns the queue."""
    from .pipeline import QueueOptions
    from .pipeline.queue import ImageQueue

    queue = ImageQueue(calibration, root, QueueOptions(**options)).start()
    queue.fill_from_directory()
    if not queue.wait_until_idle(timeout):
        queue.stop()
        raise TimeoutError(f"the queue on {root} was not idle after {timeout:g} s")
    queue.stop()
    return queue


def run_queue_through_full_disk(calibration: Any, root: str | os.PathLike[str], images: list[Path],
                                disk: str | os.PathLike[str], timeout: float = 60.0,
                                **options: Any) -> Any:
    """Push ``images`` into a queue of ``QueueOptions(**options)`` (its outputs on the small
    filesystem ``disk``) after filling ``disk``: wait until the queue pauses with no image
    failed, free the space, wait until it is idle and stop it; returns the (stopped) queue.

    Raises
    ------
    AssertionError
        The queue did not pause, failed an image while the disk was full, or did not finish.
    """
    from .pipeline import QueueOptions
    from .pipeline.queue import ImageQueue

    queue = ImageQueue(calibration, root, QueueOptions(**options)).start()
    try:
        filler = fill_disk(disk)
        for path in images:
            queue.push(path)
        assert wait_for(lambda: queue.stats()["paused"] is not None, timeout), queue.stats()
        assert queue.stats()["images_failed"] == 0, queue.stats()
        filler.unlink()
        assert queue.wait_until_idle(timeout), queue.stats()
    finally:
        queue.stop()
    return queue


def small_calibration(**fields: Any) -> dict[str, Any]:
    """A valid calibration of a 64 × 48 detector (tilted, no mask file), in the original's
    spellings; ``fields`` replace its top-level fields.  Quick to build: for unit tests."""
    from .config import CALIBRATION

    calibration: dict[str, Any] = {
        "Geometry": {"Tilt": {"TiltRotDeg": 20.0, "TiltAngleDeg": 1.0}, "BeamCenter": [40.0, 30.0],
                     "DetectorDistanceMM": 300.0, "PixelSizeMicroM": [172.0], "ImageSize": [64, 48]},
        "Masks": [{"MaskFile": "", "Oversampling": 2, "PixelPerRadialElement": 1, "qStart": 0.1, "qStop": 1.0}],
        "Wavelength": 1.54,
    }
    calibration = CALIBRATION.for_file(calibration)  # as a file of the original's holds it
    calibration.update(fields)
    return calibration
