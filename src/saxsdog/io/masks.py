"""Mask files: FIT2D ``.msk`` (read here) and images (TIFF, EDF, CBF, NPY) through fabio / NumPy.

Masks are returned as *validity* maps in image orientation (row 0 at the top, as images
are read): ``True`` where a pixel is used.  In a mask image a non-zero value means
*masked*; in a FIT2D ``.msk`` a set bit means masked, and fabio returns it in FIT2D
orientation (bottom row first), so it is flipped vertically, as the original did.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..errors import MaskError

__all__ = ["read_mask", "read_mask_bytes", "MASK_SUFFIXES"]

MASK_SUFFIXES = (".msk", ".tif", ".tiff", ".edf", ".cbf", ".npy")


def _masked_to_valid(masked: np.ndarray) -> np.ndarray:
    return np.asarray(masked) == 0


def _read_fit2d_mask(path: Path) -> np.ndarray | None:
    """A plain FIT2D ``.msk`` as fabio reads it (1 = masked, FIT2D orientation), without
    importing fabio (a tenth of a second of the command's start-up); ``None`` for anything
    else (compressed, short, odd header): fabio reads those.

    The layout: a 1024-byte header starting ``M\\0\\0\\0A\\0\\0\\0S\\0\\0\\0K``, the width and
    height as little-endian int32 at bytes 16 and 20, then each row's bits packed into
    32-bit words, least significant bit first.
    """
    with open(path, "rb") as fh:
        header = fh.read(1024)
        if len(header) < 1024 or header[0:13:4] != b"MASK":
            return None
        width, height = struct.unpack_from("<ii", header, 16)
        if width <= 0 or height <= 0 or width * height > 1 << 28:
            return None
        row_bytes = (width + 31) // 32 * 4
        packed = fh.read(row_bytes * height)
    if len(packed) != row_bytes * height:
        return None
    rows = np.frombuffer(packed, dtype=np.uint8).reshape(height, row_bytes)
    return np.unpackbits(rows, axis=1, bitorder="little")[:, :width]


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int] | None = None,
              json_path: str = "$.Masks[0].MaskFile") -> np.ndarray:
    """Read a mask file as a boolean validity map.

    Parameters
    ----------
    path
        The mask file.
    shape
        Expected ``(rows, cols)``; a different shape is an error.
    json_path
        Where the file name came from, for error messages.

    Returns
    -------
    numpy.ndarray
        ``bool`` array, ``True`` = pixel used.

    Raises
    ------
    MaskError
        Missing, unreadable or wrongly sized mask.
    """
    path = Path(path)
    if not path.is_file():
        resolved = path.resolve()
        raise MaskError(f"mask file not found: {resolved}", json_path, str(resolved), "an existing mask file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            masked = np.load(path, allow_pickle=False)
            if masked.ndim != 2:
                raise ValueError(f"expected a 2-D array, got {masked.ndim} dimensions")
            valid = _masked_to_valid(masked)
        else:
            data = _read_fit2d_mask(path) if suffix == ".msk" else None
            if data is None:  # other formats, or a .msk this reader leaves to fabio
                import fabio

                data = fabio.open(str(path)).data
            if suffix == ".msk":
                data = np.flipud(data)
            valid = _masked_to_valid(data)
    except MaskError:
        raise
    except Exception as exc:  # fabio raises many different types for bad files
        raise MaskError(f"cannot read mask file: {exc}", json_path, str(path),
                        "a FIT2D .msk, TIFF, EDF, CBF or NPY mask") from None
    if shape is not None and valid.shape != tuple(shape):
        raise MaskError(f"mask shape {valid.shape[0]}x{valid.shape[1]} differs from the image size "
                        f"{shape[0]}x{shape[1]}", json_path, str(path), "a mask of the detector's size")
    return np.ascontiguousarray(valid)


def read_mask_bytes(content: bytes, name: str, shape: tuple[int, int] | None = None,
                    json_path: str = "$.Masks[0].MaskFile") -> np.ndarray:
    """Read a mask sent as bytes (e.g. a network attachment); ``name`` gives the format."""
    suffix = Path(name).suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise MaskError(f"unknown mask format {suffix!r}", json_path, name, " or ".join(MASK_SUFFIXES))
    with tempfile.TemporaryDirectory(prefix="saxsdog-mask-") as tmp:
        p = Path(tmp) / ("mask" + suffix)
        p.write_bytes(content)
        return read_mask(p, shape, json_path)
