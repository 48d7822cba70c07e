"""A synthetic data set with a known answer, for the no-setup demo and tests.

Images of Pilatus 1M size (1043 × 981, int32) are drawn from a Guinier law
``I(q) = A exp(−q²Rg²/3) + B`` with Poisson noise; ``Rg`` grows slowly over the series
so the history shows a trend.  The calibration is embedded (no mask file needed: the
detector gaps are given as a ``.npy`` mask written beside the images).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import config
from .core.geometry import Geometry

SHAPE = (1043, 981)

#: The demo's calibration in saxsdog's spellings; ``cal.json`` is written in the
#: original's (:meth:`saxsdog.config.Normalizer.for_file`), so the original reads it.
CALIBRATION: dict[str, Any] = {
    "Title": "saxsdog demo (synthetic Guinier scatterer)",
    "Geometry": {
        "Tilt": {"TiltRotDeg": 73.569, "TiltAngleDeg": -0.56},
        "DetectorDistanceMM": 1031.657,
        "BeamCenter": [808.37, 387.772],
        "ImageSize": list(SHAPE),
        "PixelSizeMicroM": [172.0, 172.0],
    },
    "Masks": [{"MaskFile": "gaps.npy", "Oversampling": 3, "PixelPerRadialElement": 1, "Name": "",
               "Phi-mode": False, "qStart": 0.1, "qStop": 2.0}],
    "Slices": [],
    "Wavelength": 1.54,
    "Directory": [],
    "Live-Filelisting": True,
    "OverwriteFiles": True,
    "Threads": 2,
    "GISAXSmode": False,
}


def guinier(q: np.ndarray, rg: float, amplitude: float = 2000.0, background: float = 2.0) -> np.ndarray:
    """The model curve in counts/pixel."""
    return amplitude * np.exp(-(q * rg) ** 2 / 3.0) + background


def gap_mask() -> np.ndarray:
    """Pilatus-like module gaps (non-zero = masked)."""
    m = np.zeros(SHAPE, np.uint8)
    for r in range(195, SHAPE[0], 212):
        m[r:r + 17] = 1
    for c in range(487, SHAPE[1], 494):
        m[:, c:c + 7] = 1
    return m


def rg_of(index: int, n: int) -> float:
    """Radius of gyration (nm) of image ``index`` of ``n``."""
    return 4.0 + 2.0 * index / max(n - 1, 1)


def make_dataset(folder: str | os.PathLike[str], n_images: int = 100, seed: int = 0,
                 progress=None) -> Path:
    """Write ``n_images`` TIFFs, the mask and ``cal.json`` into ``folder``.

    Returns
    -------
    Path
        The calibration file.
    """
    import tifffile

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    geo = CALIBRATION["Geometry"]
    g = Geometry(SHAPE, tuple(geo["BeamCenter"]), geo["DetectorDistanceMM"], tuple(geo["PixelSizeMicroM"]),
                 CALIBRATION["Wavelength"], geo["Tilt"]["TiltAngleDeg"], geo["Tilt"]["TiltRotDeg"])
    q = g.q()
    mask = gap_mask()
    np.save(folder / "gaps.npy", mask)
    (folder / "cal.json").write_text(json.dumps(config.CALIBRATION.for_file(CALIBRATION), indent=2))
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        img = rng.poisson(guinier(q, rg_of(i, n_images))).astype(np.int32)
        img[mask != 0] = -1
        desc = "# Pixel_size 172e-6 m x 172e-6 m\n# Exposure_time 1.0 s\n# Wavelength 1.54 A\n"
        tifffile.imwrite(folder / "images" / f"demo_{i:05d}.tif", img, description=desc)
        if progress:
            progress(i + 1)
    return folder / "cal.json"
