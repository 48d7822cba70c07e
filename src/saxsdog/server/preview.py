"""The mask preview (the ``maskpreview`` command): find the files it names, then draw it with the other plots."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..config import calibration_image_size
from ..errors import CalibrationError
from .paths import PathOutsideBase, relative_to_base, resolve_inside

__all__ = ["render_mask_preview"]


def _image_shape(calibration: dict[str, Any]) -> tuple[int, int] | None:
    try:
        shape = calibration_image_size(calibration)
    except CalibrationError:
        return None
    return shape if shape and shape[0] > 0 and shape[1] > 0 else None


def render_mask_preview(basedir: str | os.PathLike[str], calibration: dict[str, Any],
                        mask: tuple[str, bytes] | None = None, image: str | None = None,
                        index: int = 0, max_pixels: int = 1400) -> bytes:
    """A PNG of an image (log scale) with a mask overlaid and the beam centre marked.

    Parameters
    ----------
    basedir
        The server's base directory: ``image`` and mask files named in the calibration
        resolve inside it.
    calibration
        The calibration being edited (image size, beam centre, masks, slices).
    mask
        ``(file name, content)`` of the mask file the user chose; otherwise
        ``Masks[index].MaskFile`` is looked up in the base directory, if present there.
    image
        An image file relative to the base directory (optional).
    index
        Which entry of ``Masks`` is shown.
    max_pixels
        Images larger than this along an axis are decimated for the picture.

    Returns
    -------
    bytes
        The PNG (drawn by :func:`saxsdog.pipeline.plots.mask_preview_png`).

    Raises
    ------
    SaxsdogError
        Unreadable mask or image, paths outside the base directory, wrong sizes.
    """
    from ..errors import SaxsdogError
    from ..io.images import read_image
    from ..io.masks import read_mask, read_mask_bytes
    from ..pipeline.plots import mask_preview_png

    shape = _image_shape(calibration)
    notes: list[str] = []
    data = None
    title = []
    if image:
        path = resolve_inside(basedir, image)
        if not path.is_file():
            raise SaxsdogError(f"{image!r} is not a file in the base directory")
        data = np.asarray(read_image(path, expected_shape=shape).data, dtype=np.float64)
        shape = shape or data.shape
        title.append(relative_to_base(basedir, path))
    masks: list[Any] = calibration["Masks"] if isinstance(calibration.get("Masks"), list) else []
    json_path = f"$.Masks[{index}].MaskFile"
    valid = None
    if mask is not None:
        valid = read_mask_bytes(mask[1], mask[0], shape, json_path)
        title.append(mask[0])
    elif 0 <= index < len(masks) and isinstance(masks[index], dict) and masks[index].get("MaskFile"):
        name = masks[index]["MaskFile"]
        try:
            p = resolve_inside(basedir, name)
        except PathOutsideBase:
            p = None
        if p is not None and p.is_file():
            valid = read_mask(p, shape, json_path)
            title.append(relative_to_base(basedir, p))
        else:
            notes.append(f"mask {name} not loaded: choose the file")
    if valid is not None:
        shape = shape or valid.shape
    if shape is None:
        raise SaxsdogError("no image size: set the calibration's image size, or choose an image or a mask")
    return mask_preview_png(calibration, shape, data, valid, " + ".join(title), notes, max_pixels)
