"""Cake maps I(radial, χ) as HDF5 NXdata files (one file per frame: ``<stem>_cake.h5``).

A mask entry with ``Cake: {"RadialBins": R, "AzimuthBins": M}`` gives, per frame, a 2-D map
of ``M`` azimuth bins × ``R`` radial bins.  It is written beside the frame's other outputs as
``<stem>_cake.h5`` (``<stem>_c<kind><n>_cake.h5`` when the cake is not the calibration's first
integrator, as the other outputs of further masks are named)::

    /                       @NX_class=NXroot  @default=entry  @creator="saxsdog"
    /entry                  @NX_class=NXentry @default=cake
        title               frame name
        cake                @NX_class=NXdata @signal="I" @axes=["chi", <radial>]
                            @chi_indices=0 @<radial>_indices=1
            I      (M, R)   mean intensity per bin, @units (counts/pixel ...) @uncertainties="Idev"
            Idev   (M, R)   its error
            area   (M, R)   effective area of each bin in pixels (0: no data)
            <radial> (R)    radial bin centres: q, two_theta or r, @units "1/nm", "1/angstrom",
                            "degree" or "mm", @long_name
            chi    (M)      azimuth bin centres in degrees, @long_name (the convention)
            <radial>_edges (R+1), chi_edges (M+1)   bin edges
        metadata            @NX_class=NXcollection: the frame's scalar header values

χ is measured clockwise from 3 o'clock on the image as read (pyFAI's χ), in degrees.
Read back with :func:`read_cake`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes

__all__ = ["cake_bytes", "write_cake", "read_cake", "azimuthal_profile", "cake_preview", "RADIAL_NAMES",
           "CHI_LONG_NAME"]

#: Name of the radial axis dataset per unit.
RADIAL_NAMES = {"q_nm^-1": "q", "q_A^-1": "q", "2th_deg": "two_theta", "r_mm": "r"}
#: How the azimuth axis is labelled in the file.
CHI_LONG_NAME = "azimuth chi [deg], clockwise from 3 o'clock on the image as read (pyFAI's chi)"


def _str_attr(obj: Any, name: str, value: str) -> None:
    import h5py

    obj.attrs.create(name, value, dtype=h5py.string_dtype())


def _fill(f: Any, integrator: Any, curve: Any, title: str, metadata: Mapping[str, Any] | None) -> None:
    import h5py

    from ..core.binning import UNITS

    unit = integrator.unit
    radial = RADIAL_NAMES.get(unit, "q")
    _str_attr(f, "NX_class", "NXroot")
    _str_attr(f, "default", "entry")
    _str_attr(f, "creator", "saxsdog")
    entry = f.create_group("entry")
    _str_attr(entry, "NX_class", "NXentry")
    _str_attr(entry, "default", "cake")
    entry.create_dataset("title", data=title, dtype=h5py.string_dtype())
    data = entry.create_group("cake")
    _str_attr(data, "NX_class", "NXdata")
    _str_attr(data, "signal", "I")
    data.attrs.create("axes", ["chi", radial], dtype=h5py.string_dtype())
    data.attrs["chi_indices"] = 0
    data.attrs[f"{radial}_indices"] = 1
    i = data.create_dataset("I", data=integrator.as_map(np.asarray(curve.intensity, dtype=np.float64)))
    _str_attr(i, "units", str(getattr(curve, "unit", "counts/pixel")))
    _str_attr(i, "uncertainties", "Idev")
    e = data.create_dataset("Idev", data=integrator.as_map(np.asarray(curve.poisson, dtype=np.float64)))
    _str_attr(e, "units", str(getattr(curve, "unit", "counts/pixel")))
    a = data.create_dataset("area", data=integrator.as_map(integrator.area))
    _str_attr(a, "units", "pixels")
    info = UNITS[unit]
    r = data.create_dataset(radial, data=np.asarray(integrator.x, dtype=np.float64))
    _str_attr(r, "units", info.nx_unit)
    _str_attr(r, "long_name", info.label)
    re_ = data.create_dataset(f"{radial}_edges", data=integrator.radial_edges)
    _str_attr(re_, "units", info.nx_unit)
    c = data.create_dataset("chi", data=integrator.azimuth)
    _str_attr(c, "units", "degree")
    _str_attr(c, "long_name", CHI_LONG_NAME)
    ce = data.create_dataset("chi_edges", data=integrator.azimuth_edges)
    _str_attr(ce, "units", "degree")
    meta = entry.create_group("metadata")
    _str_attr(meta, "NX_class", "NXcollection")
    for key, value in (metadata or {}).items():
        if isinstance(value, (bool, int, float)):
            meta.create_dataset(str(key).replace("/", "_"), data=value)
        elif isinstance(value, str):
            meta.create_dataset(str(key).replace("/", "_"), data=value, dtype=h5py.string_dtype())


def cake_bytes(integrator: Any, curve: Any, title: str = "",
               metadata: Mapping[str, Any] | None = None) -> bytes:
    """The ``_cake.h5`` file of one frame, built in memory.

    Parameters
    ----------
    integrator
        The :class:`~saxsdog.core.integrators.CakeIntegrator` (axes, map shape, areas).
    curve
        Its curve of this frame (flat ``M·R`` intensity and error).
    title
        Frame name stored in ``/entry/title``.
    metadata
        Scalar header values stored in ``/entry/metadata``.
    """
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        _fill(f, integrator, curve, title, metadata)
    return buf.getvalue()


def write_cake(path: str | os.PathLike[str], integrator: Any, curve: Any, title: str = "",
               metadata: Mapping[str, Any] | None = None) -> None:
    """Write one frame's cake map to ``path`` atomically (see :func:`cake_bytes`)."""
    atomic_write_bytes(path, cake_bytes(integrator, curve, title, metadata))


def read_cake(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a cake file back.

    Returns
    -------
    dict
        ``I``, ``Idev``, ``area`` (M × R), ``radial`` (R), ``radial_name``, ``radial_units``,
        ``chi`` (M), ``radial_edges``, ``chi_edges``, ``units`` (of I), ``title``, ``metadata``.
    """
    import h5py

    with h5py.File(path, "r") as f:
        data = f["entry/cake"]
        axes = [a.decode() if isinstance(a, bytes) else str(a) for a in data.attrs["axes"]]
        radial = axes[1]

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        meta = {}
        for key, ds in f["entry/metadata"].items():
            v = ds[()]
            meta[key] = text(v) if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)
        return {
            "I": data["I"][()], "Idev": data["Idev"][()], "area": data["area"][()],
            "radial": data[radial][()], "radial_name": radial,
            "radial_units": text(data[radial].attrs["units"]), "chi": data["chi"][()],
            "radial_edges": data[f"{radial}_edges"][()], "chi_edges": data["chi_edges"][()],
            "units": text(data["I"].attrs["units"]), "title": text(f["entry/title"][()]), "metadata": meta,
        }


def azimuthal_profile(integrator: Any, curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """The cake summed over azimuth: the mean intensity and its error per radial bin.

    Each azimuth bin weighs with its sub-pixel count, so this is the radial curve of the
    cake's sector (for plots that show a cake as a curve too).
    """
    counts = integrator.as_map(integrator.operator.bin_counts)
    total = counts.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    intensity = np.where(total > 0, (integrator.as_map(curve.intensity) * counts).sum(axis=0) / safe, 0.0)
    error = np.where(total > 0, np.sqrt(((integrator.as_map(curve.poisson) * counts) ** 2).sum(axis=0)) / safe, 0.0)
    return intensity, error


def cake_preview(integrator: Any, curve: Any, max_shape: tuple[int, int] = (90, 250)) -> dict[str, Any]:
    """A small version of the map for live display: bins averaged in blocks (count-weighted).

    Returns
    -------
    dict
        ``shape`` (M, R) of the full map, ``chi`` and ``radial`` block centres, ``z`` the
        block means (rows: χ, columns: radial; ``None`` where a block holds no data),
        ``unit`` of the radial axis.
    """
    m, r = integrator.map_shape
    fm, fr = -(-m // max_shape[0]), -(-r // max_shape[1])  # block sizes (ceil)
    pm, pr = -(-m // fm) * fm, -(-r // fr) * fr
    counts = np.zeros((pm, pr))
    weighted = np.zeros((pm, pr))
    c = integrator.as_map(integrator.operator.bin_counts)
    counts[:m, :r] = c
    weighted[:m, :r] = integrator.as_map(curve.intensity) * c
    cs = counts.reshape(pm // fm, fm, pr // fr, fr).sum(axis=(1, 3))
    ws = weighted.reshape(pm // fm, fm, pr // fr, fr).sum(axis=(1, 3))
    z = np.where(cs > 0, ws / np.where(cs > 0, cs, 1.0), np.nan)

    def centres(values: np.ndarray, factor: int) -> list[float]:
        padded = np.full(-(-values.size // factor) * factor, np.nan)
        padded[:values.size] = values
        return [float(v) for v in np.nanmean(padded.reshape(-1, factor), axis=1)]

    edges = integrator.azimuth_edges  # monotonic (a wrap-around sector runs past 180°): average, then wrap
    chi = [c - 360.0 if c > 180.0 else c for c in centres(0.5 * (edges[:-1] + edges[1:]), fm)]
    return {"shape": [m, r], "chi": chi, "radial": centres(integrator.x, fr),
            "z": [[None if not np.isfinite(v) else float(v) for v in row] for row in z],
            "unit": integrator.unit}
