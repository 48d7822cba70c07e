"""The page's detector tools: raw frame pixels, mask files both ways, calibrant rings, the fit.

The web page draws the detector itself (colour scale, zoom, mask, cursor readout), so the
server sends pixels rather than a picture: :func:`frame_pixels` returns a frame as
little-endian float32 (binned down when it is larger than the page asked for).  Masks travel
as one byte per pixel (1 = masked, 0 = used), row 0 at the top as images are read, in
saxsdog's orientation; :func:`encode_mask` and :func:`decode_mask` turn them into and out of
the mask files saxsdog reads (FIT2D ``.msk`` through fabio, TIFF, EDF, NPY), so a mask
saved from the page reads back with :func:`saxsdog.io.masks.read_mask` as drawn.
:func:`calibrate` runs the fit of ``saxsdog calibrate`` on a server image or an upload.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MaskError, SaxsdogError
from .paths import relative_to_base, resolve_inside

__all__ = ["frame_pixels", "encode_mask", "decode_mask", "mask_from_bytes", "calibrant_rings", "calibrate",
           "MASK_FORMATS", "MAX_FRAME_SIDE"]

#: Mask file formats the page can save, by suffix.
MASK_FORMATS = ("msk", "tif", "edf", "npy")
#: Largest side of a frame sent to the page (larger frames are binned by an integer factor).
MAX_FRAME_SIDE = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bin_frame(data: np.ndarray, factor: int) -> np.ndarray:
    """``data`` binned by ``factor`` along both axes: the largest value of each block.

    The maximum keeps narrow rings and hot spots visible; a block is negative (a gap or
    dead pixel) only when all its pixels are.  Edge blocks may be smaller.
    """
    if factor <= 1:
        return data
    rows, cols = data.shape
    pr, pc = (-rows) % factor, (-cols) % factor
    padded = np.pad(data, ((0, pr), (0, pc)), mode="edge")
    out: np.ndarray = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).max(axis=(1, 3))
    return out


def frame_pixels(basedir: str | os.PathLike[str], image: str, frame: int = 0, max_side: int = 2048,
                 shown_as: str | None = None) -> dict[str, Any]:
    """One frame's pixels for the page.

    Parameters
    ----------
    basedir
        The server's base directory (``image`` resolves inside it).
    image
        The image file, relative to the base directory (or absolute inside it).
    frame
        Frame of a multi-frame file.
    max_side
        Frames with a side longer than this are binned by the smallest integer factor that
        brings both sides within it (block maximum, see :func:`bin_frame`).
    shown_as
        The name the page shows (default: the path relative to the base directory).

    Returns
    -------
    dict
        ``path``, ``frame``, ``shape`` (full ``[rows, cols]``), ``binning`` (factor),
        ``data_shape`` (of the data sent), ``dtype`` (``"float32"``, little-endian),
        ``data`` (base64), ``min``/``max`` of the frame's non-negative pixels, ``negative``
        (how many pixels are < 0) and ``metadata`` (wavelength, exposure time, ... when known).
    """
    from ..io.images import read_image

    path = resolve_inside(basedir, image)
    if not path.is_file():
        raise SaxsdogError(f"{image!r} is not a file in the base directory")
    fr = read_image(path, frame)
    data = np.asarray(fr.data)
    if data.ndim != 2:
        raise SaxsdogError(f"{image!r} frame {frame} is not a 2-D image (shape {data.shape})")
    max_side = max(16, min(int(max_side), MAX_FRAME_SIDE))
    factor = max(1, -(-max(data.shape) // max_side))
    floats = data.astype(np.float32, copy=False)
    sent = np.ascontiguousarray(bin_frame(floats, factor), dtype="<f4")
    good = floats[floats >= 0]
    meta = {k: v for k, v in dict(fr.metadata).items() if isinstance(v, (int, float, str)) and k != "header"}
    return {"path": shown_as or relative_to_base(basedir, path), "frame": int(fr.index), "nframes": int(fr.nframes),
            "shape": [int(data.shape[0]), int(data.shape[1])], "binning": factor,
            "data_shape": [int(sent.shape[0]), int(sent.shape[1])], "dtype": "float32",
            "data": _b64(sent.tobytes()), "min": float(good.min()) if good.size else 0.0,
            "max": float(good.max()) if good.size else 0.0, "negative": int((floats < 0).sum()),
            "metadata": meta}


def mask_from_bytes(raw: bytes, shape: tuple[int, int] | list[int]) -> np.ndarray:
    """The page's mask (one byte per pixel, non-zero = masked) as a ``uint8`` array of ``shape``."""
    rows, cols = int(shape[0]), int(shape[1])
    if rows <= 0 or cols <= 0:
        raise MaskError(f"bad mask shape {rows}x{cols}", "shape", [rows, cols], "positive rows and columns")
    if len(raw) != rows * cols:
        raise MaskError(f"the mask has {len(raw)} bytes, {rows}x{cols} pixels need {rows * cols}", "shape",
                        [rows, cols], "one byte per pixel")
    return (np.frombuffer(raw, dtype=np.uint8).reshape(rows, cols) != 0).astype(np.uint8)


def encode_mask(masked: np.ndarray, fmt: str) -> bytes:
    """A mask file of ``masked`` (``uint8``, 1 = masked, image orientation) in format ``fmt``.

    ``msk`` is FIT2D's bit mask written by fabio, bottom row first as FIT2D stores it (so
    :func:`saxsdog.io.masks.read_mask` flips it back); ``tif`` and ``edf`` are 8-bit images
    and ``npy`` a NumPy array in image orientation, non-zero = masked.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt == "tiff":
        fmt = "tif"
    if fmt not in MASK_FORMATS:
        raise MaskError(f"unknown mask format {fmt!r}", "format", fmt, " or ".join(MASK_FORMATS))
    masked = np.ascontiguousarray(np.asarray(masked) != 0, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="saxsdog-mask-") as tmp:
        out = Path(tmp) / ("mask." + fmt)
        if fmt == "npy":
            np.save(out, masked, allow_pickle=False)
        else:
            import fabio.edfimage
            import fabio.fit2dmaskimage
            import fabio.tifimage

            if fmt == "msk":
                img = fabio.fit2dmaskimage.Fit2dMaskImage(data=np.ascontiguousarray(np.flipud(masked)))
            elif fmt == "tif":
                img = fabio.tifimage.TifImage(data=masked)
            else:
                img = fabio.edfimage.EdfImage(data=masked)
            img.write(str(out))
        return out.read_bytes()


def decode_mask(content: bytes, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as ``uint8`` (1 = masked) in image orientation, as saxsdog reads it."""
    from ..io.masks import read_mask_bytes

    valid = read_mask_bytes(content, os.path.basename(name) or "mask", shape, "$.argument.filenames[0]")
    return (~valid).astype(np.uint8)


def calibrant_rings(name: str) -> dict[str, Any]:
    """pyFAI's name and d-spacings (Å, descending) of calibrant ``name``."""
    from ..calibrate import d_spacings

    resolved, d = d_spacings(name)
    return {"calibrant": resolved, "d_spacings": [float(x) for x in d]}


def calibrate(image: np.ndarray, *, calibrant: str, wavelength_A: float, pixel_size_um: tuple[float, float],
              template: dict[str, Any] | None = None, mask: np.ndarray | None = None,
              distance_guess_mm: float | None = None, refine_wavelength: bool = False,
              max_rms_px: float = 1.0, image_name: str = "", max_points: int = 3000,
              header_wavelength_A: float | None = None) -> dict[str, Any]:
    """The fit of ``saxsdog calibrate`` on ``image``, as the page shows it.

    As the command does, it warns when ``wavelength_A`` is not the image header's
    (``header_wavelength_A``), and when the mask given hides more than a quarter of the
    rings (used all the same: the page's mask is the user's choice).

    Returns
    -------
    dict
        ``calibration`` (the template with the fitted geometry, as written to a file),
        ``geometry`` (the fitted numbers), ``rings`` (per ring: ``line``, ``d_spacing``,
        ``two_theta_deg``, ``points``, ``rms_px``, ``mean_px``), ``points`` (control points
        ``row``, ``col``, ``line``, at most ``max_points``), ``rms_px``, ``uncertainties``,
        ``warnings``, ``report`` (the text ``saxsdog calibrate`` writes) and ``elapsed_s``.
    """
    from .. import calibrate as fit_module

    name, d = fit_module.d_spacings(calibrant)
    fit = fit_module.fit_calibrant(image, d, wavelength_A, pixel_size_um, calibrant=name,
                                   mask=None if mask is None else mask == 0,
                                   distance_guess_mm=distance_guess_mm, refine_wavelength=refine_wavelength,
                                   max_rms_px=max_rms_px)
    mismatch = fit_module.wavelength_mismatch(wavelength_A, header_wavelength_A)
    if mismatch:
        fit.warnings.append(mismatch)
    # the rings fix distance times wavelength: the page's distance guess tells a wrong wavelength
    distance_note = fit_module.distance_mismatch(fit.geometry.distance_mm, distance_guess_mm, "the distance guess",
                                                 wavelength_A)
    if distance_note:
        fit.warnings.append(distance_note)
    if mask is not None:
        from ..calibrate.fit import MAX_HIDDEN_RING_FRACTION

        hidden = fit_module.hidden_ring_fraction(image, mask == 0)
        if hidden > MAX_HIDDEN_RING_FRACTION:
            fit.warnings.append(f"the mask hides {hidden:.0%} of the rings on the image (drawn for another beamstop "
                                "position?): fitted on the rest, centre, distance and tilt trade off; fit without it "
                                "or redraw it")
    calibration = fit_module.calibration_from_fit(fit, template, title=f"{name} calibration from {image_name}")
    g = fit.geometry
    n = len(fit.points_row)
    take = np.arange(n) if n <= max_points else np.linspace(0, n - 1, max_points).astype(int)
    rings = [{"line": int(r.line), "d_spacing": float(fit.d_spacings[r.line]), "two_theta_deg": float(r.two_theta_deg),
              "points": int(r.points), "rms_px": float(r.rms_px), "mean_px": float(r.mean_px)} for r in fit.rings]
    return {
        "calibration": calibration,
        "calibrant": name,
        "geometry": {"BeamCenter": [float(g.beam_center[0]), float(g.beam_center[1])],
                     "DetectorDistanceMM": float(g.distance_mm), "TiltAngleDeg": float(g.tilt_deg),
                     "TiltRotDeg": float(g.tilt_rotation_deg), "Wavelength": float(g.wavelength_A),
                     "PixelSizeMicroM": [float(g.pixel_size_um[0]), float(g.pixel_size_um[1])],
                     "ImageSize": [int(g.shape[0]), int(g.shape[1])]},
        "rings": rings,
        "points": {"row": [float(v) for v in fit.points_row[take]], "col": [float(v) for v in fit.points_col[take]],
                   "line": [int(v) for v in fit.points_line[take]]},
        "rms_px": float(fit.rms_px),
        "uncertainties": {k: float(v) for k, v in fit.uncertainties.items()},
        "warnings": list(fit.warnings),
        "report": fit_module.report_text(fit, image_name),
        "elapsed_s": float(fit.elapsed_s),
    }
