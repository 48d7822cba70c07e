"""NXcanSAS 1.1 files (NeXus application definition for reduced SAS data).

One file holds one image (one frame) or a whole run (every frame of a directory or of an
HDF5 stack).  Both are written by :class:`NXcanSASRunWriter`; :func:`write_nxcansas` is the
one-call form and :func:`read_nxcansas` reads any of our files back (and plain NXcanSAS
files from elsewhere, including multi-frame ``I(Time, Q)`` data).

Layout
------
Every frame is one ``SASentry`` with one ``SASdata`` holding a 1-D curve::

    /                               @NX_class=NXroot  @default=sasentry01  @creator ...
    /sasentry01                     @NX_class=NXentry @canSAS_class=SASentry @version="1.1"
                                    @default=sasdata01
        definition = "NXcanSAS"
        title      = frame name ("buf1_00000.tif", "scan.h5#12")
        run        = run title
        sasdata01                   @NX_class=NXdata @canSAS_class=SASdata @signal="I"
                                    @I_axes="Q" @Q_indices=[0] @timestamp=ISO-8601 (if known)
            Q    (nQ)   @units="1/nm" ("1/angstrom" for a calibration entry in q_A^-1)
            I    (nQ)   @units="arbitrary" | "1/cm" | "1/m"  @uncertainties="Idev"
                        @saxsdog_unit="counts/pixel" (the curve's own unit, see below)
            Idev (nQ)   @units as I (the error column of the calibration's error model)
        sasinstrument               NXinstrument/SASinstrument
            sasdetector             NXdetector/SASdetector: name, SDD, distance (mm),
                                    beam_center_x/_y (mm), x/y_pixel_size (mm),
                                    tilt_angle, tilt_rotation (deg)
            sassource               NXsource/SASsource: radiation, incident_wavelength (Å)
            monochromator           NXmonochromator: wavelength (Å)
        sasprocess                  NXprocess/SASprocess: name, date, description,
                                    program, version, calibration (the calibration JSON),
                                    term01, term02 ... (one line per correction applied)
            <correction>            NXnote/SASprocessnote, one per correction applied, in
                                    the order applied: name, description, sequence_index,
                                    data (its parameters as JSON), file (its file, if any)
        image                       NXcollection/SASnote: header metadata of the frame
                                    (date, timestamp, exposure_time, ...), file, frame
        parameters                  NXcollection/SASnote: integral parameters
                                    (I0, I1, I2, invariant, correlation_length)
    /sasentry02 ...                 the next frame (run files)

``Q``, ``sasinstrument`` and ``sasprocess`` are stored once (in the first entry) and
hard-linked into every further entry; a frame whose q grid differs gets its own ``Q``.
Likewise an ``image`` or ``parameters`` group holding exactly the values (bit for bit, of
the same types) of the one stored last is that group, hard-linked: readers see every
entry's values in the entry, the file stores a run's repeated values once.

Empty bins
----------
Bins without pixels (behind the beam stop, in a detector gap, outside the mask, or whose
pixels were all dummies in this frame) are *omitted*: ``Q`` keeps only the bins with data
and stays increasing.  Writing them as ``I = 0, Idev = 0`` trips SasView's fits (a zero
uncertainty is an infinite weight).  So a frame may have fewer points than the grid, and
its ``Q`` may differ from the first frame's: it is then stored in its own entry (and
hard-linked again into the next frames with the same bins).  A frame without any bin with
data (every pixel a dummy) is written whole: an empty ``SASdata`` would make SasView's
loader refuse the whole file.

Units
-----
``I@units`` is what NXcanSAS allows for intensities: ``1/cm`` (or ``1/m``) for a curve on
absolute scale (saxsdog's ``1/cm``, ``1/cm/sr``: a differential scattering cross-section per
unit volume), else ``arbitrary``; the attribute ``saxsdog_unit`` keeps saxsdog's own unit
(``counts/pixel``, ``counts/pixel/s`` ...), see :func:`nx_intensity_units`.

Provenance
----------
``sasprocess`` is a NeXus ``NXprocess`` in the style of DAWN's and ESRF's processing
pipelines: program and version, the date, the full calibration as JSON, and one ``NXnote``
per correction applied (solid angle, dark, flat field, polarization, mask, dummy pixels,
sigma clipping, error model, normalization, absolute scale, background), each with its
parameters and files (:func:`process_notes`).  SasView lists the ``termNN`` lines as the
process's terms.

Why not one ``SASdata`` with ``I`` of shape (frames, Q)?  NXcanSAS allows it
(``@I_axes="Time,Q"``) and :func:`read_nxcansas` reads such files, but SasView's loader
(``sasdata`` 0.11, ``cansas_reader_HDF5``) returns *every* frame of such a group with the
intensities of the *last* frame (it appends one plottable object once per frame and
overwrites its ``y``).  One ``SASentry`` per frame is the NXcanSAS structure it reads
correctly (each entry becomes one ``Data1D``), and it keeps every frame's metadata next to
its curve.

Writing speed
-------------
The coordinator appends up to a few hundred frames per second, on the cores the workers
need.  :meth:`append` keeps the frame; every ``write_every`` frames (8) their entries are
written (into HDF5's metadata cache and page buffer: memory, mostly), and every
``flush_every`` frames (64, or ``flush_interval`` seconds) the file is flushed to disk.
Writing a few frames in a row costs less than one at a time (HDF5's code and caches stay
warm), yet a group is short enough (a few milliseconds) that the workers, who hold two tasks
each, do not run dry while the coordinator writes it.  Each entry is cloned
with one ``H5Ocopy`` from a prepared template kept in an in-memory HDF5 file (so its groups,
attributes and datasets are created in C, not one by one from Python), then its values are
written with low-level calls, with memory types made once, and only the values that differ
from the frame before written into the template.  The templates are in the run file's format
(object header version 2, links in the header: no symbol table per group to copy), and the
run file's metadata cache is small and fixed (see ``_METADATA_CACHE_BYTES``).  Creating a
dataset with low-level calls costs several times its share of an ``H5Ocopy``, and a hard link
costs more than copying a small dataset, so only whole groups are linked.  The entry's own
strings (``definition``, ``title``, ``run``) are fixed-length UTF-8 of exactly their bytes (one
template per title length): a variable-length string is an object in the file's global heap,
which every ``H5Ocopy`` converts and copies and every title write allocates and frees, and
h5py reads both kinds of string dataset as bytes.  Attributes stay variable-length (h5py
reads those as ``str``, fixed-length ones as bytes).  The entry's scalar datasets (its
strings, the ``image`` and ``parameters`` values) are compact: their values live in their
object headers, so a clone allocates and writes no raw-data block for each (measured with
``benchmarks/bench_runfile.py --sink-only``, interleaved with the contiguous layout: about
7 % less CPU per frame with its own header values, 4 % per frame of one image).  Most of the rest of an entry's cost is
HDF5's per object (its header, the root group's two indexes, about 5 µs a link and 3 µs a
string attribute); the fileobj driver's Python calls are a few per frame (the page buffer
gathers the writes) and cost about what the system calls they make cost.

Atomicity
---------
The file is written under a hidden temporary name in the target folder and renamed onto the
final name by :meth:`NXcanSASRunWriter.close`; a crashed or aborted run never leaves a file
under the final name, and a reader never sees a half-written one.  The temporary name carries
the writer's process id, so ``saxsdog -r`` removes the one a killed run left behind
(:func:`saxsdog.io.atomic.remove_stale_partials`) and writes the run again.

A full disk
-----------
HDF5 does not survive a failed write: after ``ENOSPC`` its cache and the file on disk no
longer agree, and the file cannot be completed.  So HDF5 never sees one.  The file is written
through :class:`_HeldWritesFile` (h5py's ``fileobj`` driver): a write the disk refuses
(``ENOSPC``, ``EDQUOT``) is kept in memory, with every later one, in order, and reads see
them.  :meth:`NXcanSASRunWriter.flush` and :meth:`~NXcanSASRunWriter.close` write them
through once there is space again and raise ``OSError`` (``ENOSPC``) while there is not,
keeping everything: no frame is lost, none is written twice, and a later ``flush`` or
``close`` completes the file and renames it into place.
"""

from __future__ import annotations

import copy
import errno
import functools
import io
import json
import math
import numbers
import os
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..config import calibration_in_saxsdog_spellings
from .atomic import temporary_name

__all__ = [
    "NXCANSAS_VERSION",
    "Q_UNITS",
    "I_UNITS",
    "NXcanSASRunWriter",
    "write_nxcansas",
    "read_nxcansas",
    "geometry_fields",
    "nx_intensity_units",
    "process_notes",
]

#: The NXcanSAS version written to ``SASentry/@version``.
NXCANSAS_VERSION = "1.1"
#: Units of the Q axis (saxsdog computes q in inverse nanometres).
Q_UNITS = "1/nm"
#: Units of I and Idev of a curve not on absolute scale (mean detector counts per pixel).
I_UNITS = "arbitrary"
#: saxsdog's unit of a curve without normalization (:attr:`saxsdog.core.integrators.Curve.unit`).
DEFAULT_UNIT = "counts/pixel"

_ENTRY_PREFIX = "sasentry"
_DATA_NAME = "sasdata01"
_PathLike = str | os.PathLike

# Units of well-known per-frame values (header metadata and integral parameters).
_META_UNITS = {"exposure_time": "s", "timestamp": "s", "wavelength": "angstrom",
               "image_time": "s"}
_PARAM_UNITS = {"correlation_length": "nm"}


def _version() -> str:
    try:
        from saxsdog import __version__
        return str(__version__)
    except Exception:  # noqa: BLE001 - never fail a write for a version string
        return "unknown"


def _now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- #
# Geometry of the calibration in NeXus terms
# --------------------------------------------------------------------------- #


def geometry_fields(calibration: Mapping[str, Any] | None) -> dict[str, dict[str, tuple[Any, str | None]]]:
    """Map a saxsdog calibration onto NXcanSAS instrument fields.

    Parameters
    ----------
    calibration
        The calibration dict, in the file's form (the original's spellings) or loaded
        (:attr:`saxsdog.calibration.Calibration.config`).

    Returns
    -------
    dict
        ``{"detector": {...}, "source": {...}}``, each ``{field: (value, units)}``.
        Lengths in mm, angles in degrees, wavelength in Å.  Missing calibration values are
        left out.  The beam centre is converted from pixels (FIT2D ``[Y, X]``, Y counted
        from the bottom edge) to a length by the pixel size.
    """
    det: dict[str, tuple[Any, str | None]] = {}
    src: dict[str, tuple[Any, str | None]] = {}
    if not calibration:
        return {"detector": det, "source": src}
    # read in saxsdog's spellings: saxsdog.config alone knows the original's
    geo = calibration_in_saxsdog_spellings(calibration).get("Geometry") or {}
    dist = geo.get("DetectorDistanceMM")
    if isinstance(dist, numbers.Real):
        det["SDD"] = (float(dist), "mm")
        det["distance"] = (float(dist), "mm")
    px = geo.get("PixelSizeMicroM")
    pixel_um: tuple[float, float] | None = None  # (vertical, horizontal)
    if isinstance(px, numbers.Real):
        pixel_um = (float(px), float(px))
    elif isinstance(px, Sequence) and len(px) >= 1 and all(isinstance(p, numbers.Real) for p in px):
        pixel_um = (float(px[0]), float(px[-1]))
    if pixel_um is not None:
        px_v, px_h = pixel_um
        det["x_pixel_size"] = (px_h / 1000.0, "mm")
        det["y_pixel_size"] = (px_v / 1000.0, "mm")
    bc = geo.get("BeamCenter")
    if isinstance(bc, Sequence) and len(bc) == 2 and all(isinstance(b, numbers.Real) for b in bc):
        if pixel_um is not None:
            det["beam_center_x"] = (float(bc[1]) * pixel_um[1] / 1000.0, "mm")
            det["beam_center_y"] = (float(bc[0]) * pixel_um[0] / 1000.0, "mm")
    tilt = geo.get("Tilt") or {}
    if isinstance(tilt.get("TiltAngleDeg"), numbers.Real):
        det["tilt_angle"] = (float(tilt["TiltAngleDeg"]), "degree")
    if isinstance(tilt.get("TiltRotDeg"), numbers.Real):
        det["tilt_rotation"] = (float(tilt["TiltRotDeg"]), "degree")
    size = geo.get("ImageSize")
    if isinstance(size, Sequence) and len(size) == 2:
        det["y_pixels"] = (int(size[0]), None)
        det["x_pixels"] = (int(size[1]), None)
    wl = calibration.get("Wavelength")
    if isinstance(wl, numbers.Real):
        src["incident_wavelength"] = (float(wl), "angstrom")
    return {"detector": det, "source": src}


# --------------------------------------------------------------------------- #
# Units and provenance
# --------------------------------------------------------------------------- #

#: saxsdog's absolute units (after dropping the solid angle, which is dimensionless) and the
#: NXcanSAS unit string for each.
_ABSOLUTE_UNITS = {"1/cm": "1/cm", "cm^-1": "1/cm", "cm-1": "1/cm", "1/m": "1/m", "m^-1": "1/m",
                   "m-1": "1/m", "cm2/g": "cm2/g", "cm^2/g": "cm2/g", "m2/g": "m2/g", "m^2/g": "m2/g"}


def nx_intensity_units(unit: str | None) -> str:
    """The NXcanSAS ``I@units`` of a saxsdog intensity unit.

    NXcanSAS knows absolute intensities (``1/cm``, ``1/m``, ``cm2/g``, ``m2/g``) and
    ``arbitrary``.  A differential cross-section per solid angle (``1/cm/sr``) is written
    ``1/cm`` (the steradian is dimensionless, as SasView reads it); detector units
    (``counts/pixel``, ``counts/pixel/s``, ``counts/pixel/monitor``) are ``arbitrary``.

    >>> nx_intensity_units("1/cm/sr"), nx_intensity_units("counts/pixel/s")
    ('1/cm', 'arbitrary')
    """
    if not unit:
        return I_UNITS
    u = " ".join(unit.lower().replace("·", " ").replace("*", " ").split()).replace(" / ", "/")
    if u.startswith("1/(") and u.endswith(")"):  # 1/(cm sr)
        u = "1/" + u[3:-1]
    u = u.replace(" ", "/") if u.startswith("1/") else u.replace(" ", "")
    for per_sr in ("/sr", "sr^-1", "sr-1"):
        if u.endswith(per_sr):
            u = u[: -len(per_sr)].rstrip("/")
    return _ABSOLUTE_UNITS.get(u, I_UNITS)


def _present(value: Any) -> bool:
    return value is not None and value is not False and value != "" and value != {} and value != []


@functools.lru_cache(maxsize=16)
def _loaded_json(text: str) -> dict[str, Any]:
    from ..config import CALIBRATION

    return CALIBRATION.load(json.loads(text))


def _loaded(calibration: Mapping[str, Any]) -> dict[str, Any]:
    """The calibration as saxsdog runs it (migrated, defaults filled in: the corrections a
    version-1 file gets), or as written (saxsdog's spellings) when it does not load."""
    try:
        return copy.deepcopy(_loaded_json(json.dumps(calibration, sort_keys=True, default=str)))
    except Exception:  # noqa: BLE001 - a calibration from elsewhere: list what it says
        return calibration_in_saxsdog_spellings(calibration)


def process_notes(calibration: Mapping[str, Any] | None,
                  loaded: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The corrections a calibration applies, in the order saxsdog applies them.

    Read from the calibration's ``Corrections``, ``Normalization`` and ``Background`` blocks
    (schema version 2) as loaded (migrated, with defaults); a calibration without them (version
    1 where saxsdog has no such blocks) lists what it does anyway: its masks, the
    polarization correction when it has one, and the error model.

    Parameters
    ----------
    calibration
        The calibration dict (either spelling).
    loaded
        The same calibration as saxsdog loaded it (:attr:`saxsdog.calibration.Calibration.config`),
        when the caller has it: it is read instead of loading ``calibration`` again (a
        check against the schema, whose package alone takes tens of milliseconds to import,
        on the thread that appends the run's first frame).

    Returns
    -------
    list of dict
        Each ``{"name", "description", "parameters": dict, "files": list[str]}``; ``name``
        is also the note's group name in the file.
    """
    if not calibration:
        return []
    cal = _loaded(calibration) if loaded is None else loaded
    corr: Mapping[str, Any] | None = cal["Corrections"] if isinstance(cal.get("Corrections"), Mapping) else None
    norm: Mapping[str, Any] = cal["Normalization"] if isinstance(cal.get("Normalization"), Mapping) else {}
    back: Mapping[str, Any] = cal["Background"] if isinstance(cal.get("Background"), Mapping) else {}
    c: Mapping[str, Any] = corr or {}
    notes: list[dict[str, Any]] = []

    def add(name: str, description: str, parameters: Mapping[str, Any] | None = None,
            files: Sequence[str] = ()) -> None:
        notes.append({"name": name, "description": description,
                      "parameters": {k: v for k, v in (parameters or {}).items() if v is not None},
                      "files": [str(f) for f in files if f]})

    if _present(c.get("DarkFile")):
        add("dark", "dark image subtracted per pixel (scaled by the ratio of exposure times when "
                    "the dark's header gives its own)", {"DarkFile": c["DarkFile"]}, [c["DarkFile"]])
    if _present(c.get("FlatFile")):
        add("flat_field", "per-pixel flat field divided", {"FlatFile": c["FlatFile"]}, [c["FlatFile"]])
    masks = [m for m in (cal.get("Masks") or []) if isinstance(m, Mapping)]
    mask_files = [str(m.get("MaskFile")) for m in masks if m.get("MaskFile")]
    add("mask", "pixels of the mask file(s) excluded" if mask_files else "no mask file: every pixel used",
        {"MaskFile": mask_files[0] if len(mask_files) == 1 else mask_files} if mask_files else {},
        mask_files)
    if corr is not None and c.get("MaskNegative", True):
        dummy = c.get("DummyValue")
        add("dummy_pixels", "pixels < 0" + (f" and pixels equal to {dummy}" if dummy is not None else "")
            + " excluded per frame (detector gaps, dead pixels) and counted",
            {"MaskNegative": True, "DummyValue": dummy})
    if c.get("SolidAngle"):
        add("solid_angle", "divided by the pixel's solid angle relative to a pixel at normal incidence "
                           "(pyFAI's solidAngleArray convention)", {"SolidAngle": True})
    pol = cal.get("PolarizationCorrection")
    if isinstance(pol, Mapping):
        add("polarization", "divided by the polarization factor (saxsdog's Fraction F and Angle A; "
                            "pyFAI's polarization_factor is 2F-1, its axis offset -A)",
            {"Fraction": pol.get("Fraction"), "Angle": pol.get("Angle")})
    clip = c.get("SigmaClip")
    if isinstance(clip, Mapping) and clip:
        add("sigma_clip", "robust bin mean: pixels further than Sigma standard deviations from the bin "
                          "mean rejected, Cycles times", dict(clip))
    model = str(c.get("ErrorModel") or "poisson")
    add("error_model", {
        "poisson": "Idev: Poisson counting error propagated exactly through the pixel splitting and "
                   "every correction",
        "azimuthal": "Idev: error of the mean from the azimuthal spread of the corrected pixel values",
        "legacy": "Idev: the original SAXSDOG's estimate sqrt(I*A)/A (A: the bin's pixel area)",
    }.get(model, f"Idev: error model {model!r}"), {"ErrorModel": model})
    norm_keys = ("ExposureTime", "Monitor", "Transmission", "ThicknessMM")
    used = {k: norm.get(k) for k in norm_keys if _present(norm.get(k))}
    if used:
        names = {"ExposureTime": ("t", "exposure time"), "Monitor": ("M", "monitor"),
                 "Transmission": ("T", "transmission"), "ThicknessMM": ("d", "thickness in cm, ThicknessMM / 10")}
        from_header = any(isinstance(v, (str, Mapping)) for v in used.values())
        add("normalization", "divided by " + " * ".join(names[k][0] for k in used) + " ("
            + ", ".join(f"{names[k][0]}: {names[k][1]}" for k in used)
            + ("; 'header' and {'Header': KEY} values are read from each image's header" if from_header else "")
            + ")", used)
    if _present(norm.get("AbsoluteScale")):
        add("absolute_scale", "multiplied by the factor derived from a standard (absolute intensity)",
            {"AbsoluteScale": norm.get("AbsoluteScale")})
    if _present(back.get("File")):
        add("background", "background curve subtracted (errors added in quadrature, sigma^2 = "
                          "sigma_s^2 + k^2 sigma_b^2); written beside the unsubtracted curve",
            dict(back), [back["File"]])
    return notes


# --------------------------------------------------------------------------- #
# Small HDF5 helpers
# --------------------------------------------------------------------------- #


def _h5():
    import h5py

    return h5py


def _set_attr(obj, name: str, value: Any) -> None:
    """Write an attribute; strings as variable-length UTF-8 (readable everywhere)."""
    h5py = _h5()
    if isinstance(value, str):
        obj.attrs.create(name, value, dtype=h5py.string_dtype())
    else:
        obj.attrs[name] = value


def _compact_scalar(group, name: str, dtype: np.dtype, data: Any = None):
    """A scalar dataset stored in its object header (compact layout); returns it (h5py).

    An entry's scalars are copied with it by every ``H5Ocopy``: kept in the header, a value
    needs no raw-data block of its own to allocate and write in the run file.  Readers see no
    difference (the layout is not part of a dataset's type, shape or value).  Made with
    low-level calls: h5py ignores creation properties given for a scalar dataset.
    """
    from h5py import h5d, h5p, h5s, h5t

    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_layout(h5d.COMPACT)
    dcpl.set_obj_track_times(False)  # as h5py creates datasets: no times in the header
    tid = h5t.py_create(dtype, logical=True)
    dsid = h5d.create(group.id, name.encode(), tid, h5s.create(h5s.SCALAR), dcpl=dcpl)
    if data is not None:
        dsid.write(h5s.ALL, h5s.ALL, np.asarray(data, dtype=dtype), tid)
    return group[name]


def _fixed_string_dataset(group, name: str, value: str) -> None:
    """A scalar string dataset of fixed length (exactly the UTF-8 bytes of ``value``)."""
    h5py = _h5()
    data = value.encode()
    dtype = h5py.string_dtype(length=max(1, len(data)))
    _compact_scalar(group, name, dtype, np.array(data, dtype=dtype))


def _scalar_kind(value: Any) -> str:
    """Storage class of a per-frame value: ``f`` float, ``i`` int, ``b`` bool, ``s`` string."""
    if isinstance(value, (bool, np.bool_)):
        return "b"
    if isinstance(value, numbers.Integral):
        return "i"
    if value is None or isinstance(value, numbers.Real):
        return "f"
    return "s"


def _scalar_value(value: Any, kind: str) -> Any:
    if kind == "b":
        return np.bool_(bool(value))
    if kind == "i":
        return np.int64(value)
    if kind == "f":
        return np.float64(np.nan if value is None else value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


#: :func:`_scalar_kind` of the types frames bring, looked up by exact type (the ``numbers``
#: ABC checks cost microseconds a value, on the coordinator, for every value of every frame).
_KIND_OF_TYPE: dict[type, str] = {bool: "b", np.bool_: "b", int: "i", np.int64: "i", np.int32: "i",
                                  float: "f", np.float64: "f", np.float32: "f", type(None): "f", str: "s"}


def _signature(values: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    kinds = _KIND_OF_TYPE
    return tuple((k if type(k) is str else str(k), kinds.get(type(v)) or _scalar_kind(v)) for k, v in values.items())


def _create_value(group, name: str, kind: str, units: str | None) -> None:
    """An empty scalar dataset of the given kind (filled later per frame)."""
    h5py = _h5()
    dtype = {"b": np.bool_, "i": np.int64, "f": np.float64}.get(kind)
    if dtype is None:
        ds = _compact_scalar(group, name, h5py.string_dtype())
    else:
        ds = _compact_scalar(group, name, np.dtype(dtype))
    if units:
        _set_attr(ds, "units", units)


# --------------------------------------------------------------------------- #
# A file that keeps the writes a full disk refuses
# --------------------------------------------------------------------------- #

#: errno values meaning "no space now" (a full disk, a full quota): the write is kept and retried.
_NO_SPACE = frozenset((errno.ENOSPC, errno.EDQUOT))


def _no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


#: File-space page of run files, and the page buffer HDF5 gathers their writes in.
_PAGE_BYTES = 16 << 10
_PAGE_BUFFER_BYTES = 4 << 20
#: The run file's metadata cache, fixed (HDF5's default starts at 2 MB and grows to 32 MB).
#: A run file is written once, front to back: an entry's objects are never visited again, so
#: a large cache only holds finished entries, and every flush walks them all (HDF5 scans its
#: whole cache to list the dirty entries).  128 kB holds the entries being written and the
#: root group's index; measured on 1000-bin frames: 0.24 instead of 0.39 ms of CPU per frame
#: (with the templates in the run file's format).  256 kB and more scan more at each flush;
#: 32 kB is as fast over 2000 frames but evicts the root group's index so often that over
#: 30,000 frames the file grows 7 % larger and the process's memory three times faster
#: (fragmented file space) than with HDF5's default cache; at 128 kB both are as with it.
_METADATA_CACHE_BYTES = 128 << 10


def _fixed_metadata_cache(fid, size: int) -> None:
    """Give an open HDF5 file a metadata cache of a fixed ``size`` bytes (no adaptive resizing)."""
    config = fid.get_mdc_config()
    config.set_initial_size = True
    config.initial_size = size
    config.min_size = min(config.min_size, size)
    config.max_size = size
    config.incr_mode = 0  # H5C_incr__off
    config.flash_incr_mode = 0  # H5C_flash_incr__off
    config.decr_mode = 0  # H5C_decr__off
    fid.set_mdc_config(config)


class _HeldWritesFile(io.RawIOBase):
    """The run file as h5py's ``fileobj`` driver sees it: writes a full disk refuses are held.

    While nothing is held, writes go straight to the file (``os.pwrite``).  The first write
    the disk refuses (``ENOSPC``/``EDQUOT``, also part of a short write) is kept in memory, and
    so is every later write and truncation, in order, until :meth:`drain` has written them all:
    replaying them in order gives the file exactly the bytes HDF5 meant it to have.  Reads
    see the held writes.  Any other error is raised to HDF5 as before.

    Parameters
    ----------
    path
        The (temporary) file, created or emptied.
    """

    def __init__(self, path: _PathLike):
        super().__init__()
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pos = 0
        self._size = 0  # the size HDF5 sees (held writes included)
        #: ``(offset, data)`` writes and ``(size, None)`` truncations not on disk yet, in order.
        self._held: list[tuple[int, bytes | None]] = []
        self.held_bytes = 0
        #: The disk's refusal that made the first write wait (``None`` when nothing waits).
        self.error: OSError | None = None

    # -- what h5py calls -------------------------------------------------------------- #
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start = self._pos
        n = max(0, min(len(view), self._size - start))
        data = bytearray(os.pread(self._fd, n, start)) if n else bytearray()
        data.extend(bytes(n - len(data)))  # a hole (or held bytes, laid over below)
        for offset, held in self._held:  # in order: later writes win
            if held is None:  # a truncation zeroes what lies beyond it
                if offset < start + n:
                    cut = max(0, offset - start)
                    data[cut:] = bytes(n - cut)
                continue
            lo, hi = max(start, offset), min(start + n, offset + len(held))
            if lo < hi:
                data[lo - start:hi - start] = held[lo - offset:hi - offset]
        view[:n] = data
        view[n:] = bytes(len(view) - n)  # beyond the end: zeros, as HDF5 expects
        self._pos += len(view)
        return len(view)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        offset = self._pos
        if not self._held:
            try:
                done = 0
                while done < size:
                    done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as exc:
                if not _no_space(exc):
                    raise
                self.error = exc
                self._hold(offset + done, bytes(view[done:]))
        else:
            self._hold(offset, bytes(view))
        self._pos = offset + size
        self._size = max(self._size, self._pos)
        return size

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if not self._held:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                if not _no_space(exc):
                    raise
                self.error = exc
                self._held.append((size, None))
        else:
            self._held.append((size, None))
        self._size = size
        return size

    def flush(self) -> None:
        """HDF5 flushed: write what is held, if the disk takes it now (never raises for space)."""
        if self._held and self._fd >= 0:
            try:
                self.drain()
            except OSError as exc:
                if not _no_space(exc):
                    raise

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Close the descriptor (held writes are dropped: :meth:`drain` first)."""
        self._held.clear()
        self.held_bytes = 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()

    # -- the full disk ---------------------------------------------------------------- #
    def _hold(self, offset: int, data: bytes) -> None:
        self._held.append((offset, data))
        self.held_bytes += len(data)

    def drain(self) -> None:
        """Write the held writes, in order.

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT`` while the disk still refuses them (what is left stays held).
        """
        while self._held:
            offset, data = self._held[0]
            try:
                if data is None:
                    os.ftruncate(self._fd, offset)
                else:
                    done = 0
                    try:
                        while done < len(data):
                            done += os.pwrite(self._fd, memoryview(data)[done:], offset + done)
                    finally:
                        if done:  # keep only the part not on disk yet
                            data = data[done:]
                            self._held[0] = (offset + done, data)
                            self.held_bytes -= done
            except OSError as exc:
                if _no_space(exc):
                    self.error = exc
                    code = exc.errno or errno.ENOSPC
                    raise OSError(code, f"{os.strerror(code)}: {self.held_bytes} byte(s) of "
                                        f"{self.path.name} wait for space", str(self.path)) from exc
                raise
            self._held.pop(0)
            if data is not None:
                self.held_bytes -= len(data)
        self.error = None


# --------------------------------------------------------------------------- #
# The writer
# --------------------------------------------------------------------------- #


_UNSET = object()  # a template slot not written yet
#: Where an entry's Q is, and the groups every entry shares with the first (hard links).
_Q_NAME = (_DATA_NAME + "/Q").encode()
_SHARED_MEMBERS = (b"sasinstrument", b"sasprocess")


_DOUBLE_BITS = struct.Struct("<d").pack


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays hold the same values, bit for bit (``tobytes``: faster than the
    comparisons that copy less, for a q grid's size)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _exact(value: Any, kind: str) -> Any:
    """What a stored value is compared by: its bits for a float (0.0 is not -0.0, a NaN is
    the same NaN), else the value."""
    return _DOUBLE_BITS(value) if kind == "f" else value


class _Template:
    """An entry skeleton in the in-memory template file, with its value slots kept open.

    A frame is written by filling the slots (cheap writes into memory) and cloning the whole
    skeleton into the run file with one ``H5Ocopy``.

    Parameters
    ----------
    image, parameters
        The ``(key, kind)`` values the skeleton's ``image`` and ``parameters`` groups hold,
        or ``None``: the group is left out (the entry links the same group stored before, see
        :meth:`NXcanSASRunWriter._write_frame`).
    """

    def __init__(self, tfile, name: str, title: str, n: int, image: tuple | None, parameters: tuple | None,
                 has_time: bool, unit: str = DEFAULT_UNIT, title_bytes: int = 1):
        from h5py import h5a, h5d, h5g, h5t

        h5py = _h5()
        self.name = name.encode()
        self.has_time = has_time
        g = tfile.create_group(name)
        _set_attr(g, "NX_class", "NXentry")
        _set_attr(g, "canSAS_class", "SASentry")
        _set_attr(g, "version", NXCANSAS_VERSION)
        _set_attr(g, "default", _DATA_NAME)
        # The entry's strings are fixed-length UTF-8 (h5py reads both kinds as bytes): a
        # variable-length one is an object in the file's global heap, which every H5Ocopy
        # converts and copies, and every write of the title allocates and frees.
        _fixed_string_dataset(g, "definition", "NXcanSAS")
        #: The frame names this skeleton's title holds: exactly this many bytes of UTF-8.
        self.title_bytes = max(1, title_bytes)
        self._title_dtype = h5py.string_dtype(length=self.title_bytes)
        self._title_type = h5t.py_create(self._title_dtype)
        _compact_scalar(g, "title", self._title_dtype)
        _fixed_string_dataset(g, "run", title)
        d = g.create_group(_DATA_NAME)
        _set_attr(d, "NX_class", "NXdata")
        _set_attr(d, "canSAS_class", "SASdata")
        _set_attr(d, "signal", "I")
        _set_attr(d, "I_axes", "Q")
        d.attrs["Q_indices"] = np.array([0], dtype=np.int32)
        if has_time:
            _set_attr(d, "timestamp", "")
        nx_units = nx_intensity_units(unit)
        i = d.create_dataset("I", shape=(n,), dtype=np.float64)
        _set_attr(i, "units", nx_units)
        _set_attr(i, "saxsdog_unit", unit)
        _set_attr(i, "uncertainties", "Idev")
        _set_attr(i, "long_name", f"mean intensity per bin ({unit})")
        e = d.create_dataset("Idev", shape=(n,), dtype=np.float64)
        _set_attr(e, "units", nx_units)
        _set_attr(e, "saxsdog_unit", unit)
        _set_attr(e, "long_name", f"uncertainty of I ({unit}; see sasprocess/error_model)")
        self._vlen = h5py.string_dtype()
        self._vlen_type = h5t.py_create(self._vlen)
        self._f64_type = h5t.py_create(np.dtype(np.float64))
        mtypes = {"b": h5t.py_create(np.dtype(np.bool_)), "i": h5t.py_create(np.dtype(np.int64)),
                  "f": self._f64_type, "s": self._vlen_type}
        self.slots: list[tuple[Any, str, Any]] = []
        for group_name, sig, units in (("image", image, _META_UNITS), ("parameters", parameters, _PARAM_UNITS)):
            if sig is None:
                continue
            c = g.create_group(group_name)
            _set_attr(c, "NX_class", "NXcollection")
            _set_attr(c, "canSAS_class", "SASnote")
            for key_name, kind in sig:
                _create_value(c, key_name, kind, units.get(key_name))
                self.slots.append((h5d.open(c.id, key_name.encode()), kind, mtypes[kind]))
        #: What each slot holds now (:func:`_exact` of the value written last), to skip rewriting it.
        self._last: list[Any] = [_UNSET] * len(self.slots)
        self.title = h5d.open(g.id, b"title")
        self.I = h5d.open(d.id, b"I")
        self.Idev = h5d.open(d.id, b"Idev")
        self.timestamp = h5a.open(h5g.open(g.id, _DATA_NAME.encode()), b"timestamp") if has_time else None
        #: The ``timestamp`` the skeleton holds (written last), to skip writing it again.
        self._last_timestamp: str | None = ""

    def fill(self, name: bytes, I: np.ndarray, Idev: np.ndarray, values: list[tuple[Any, Any]],
             timestamp: str | None) -> None:
        """Write one frame's values into the skeleton.

        ``values`` are the slots' ``(value, exact)`` (:func:`_scalar_value`, :func:`_exact`),
        in the order of the slots.  The memory types are made once (h5py would build one per
        write), and a slot holding the value already (from the last frame that used this
        skeleton) is not written again.
        """
        from h5py import h5s

        ALL = h5s.ALL
        self.title.write(ALL, ALL, np.array(name, dtype=self._title_dtype), self._title_type)
        self.I.write(ALL, ALL, I, self._f64_type)
        self.Idev.write(ALL, ALL, Idev, self._f64_type)
        if self.timestamp is not None and timestamp != self._last_timestamp:
            # (frames of one second share their date: the skeleton holds it already)
            self.timestamp.write(np.array(timestamp or "", dtype=self._vlen), self._vlen_type)
            self._last_timestamp = timestamp
        last = self._last
        for j, ((dsid, kind, mtype), (v, exact)) in enumerate(zip(self.slots, values)):
            if last[j] == exact:
                continue  # the slot holds it already
            dsid.write(ALL, ALL, np.array(v, dtype=self._vlen) if kind == "s" else np.asarray(v), mtype)
            last[j] = exact


class NXcanSASRunWriter:
    """Write frames into one NXcanSAS file, streaming, atomically.

    Parameters
    ----------
    path
        The final file name (``.h5`` is what SasView's file dialog expects; ``.nxs`` and
        ``.hdf5`` load as well).
    q
        The q grid (nm⁻¹) shared by the frames; a frame may bring its own in :meth:`append`.
    calibration
        The calibration dict, stored as JSON in ``sasprocess/calibration`` and mapped onto
        the ``sasinstrument`` fields (distance, beam centre, pixel size, wavelength).
    title
        Run title, written into every entry's ``run`` field (default: the file's stem).
    flush_every
        Flush the file to disk after this many frames.
    flush_interval
        ... or when the oldest frame not flushed is older than this many seconds (checked at
        each :meth:`append`).
    write_every
        Write the appended frames' entries into the file in groups of this many (at most
        ``flush_every``; see the module's "Writing speed").
    unit
        saxsdog's unit of the frames' intensities (:attr:`saxsdog.core.integrators.Curve.unit`),
        unless a frame brings its own in :meth:`append`.
    loaded_calibration
        ``calibration`` as saxsdog loaded it (:attr:`saxsdog.calibration.Calibration.config`),
        if the caller has it: the process notes are read from it (see :func:`process_notes`).

    Notes
    -----
    Use it as a context manager: a clean exit renames the temporary file onto *path*; an
    exception deletes it (call :meth:`close` yourself to keep a partial run anyway).
    On a full disk nothing is lost (see the module docstring): :attr:`waiting_for_space`
    says so, :meth:`flush` and :meth:`close` raise ``OSError`` (``ENOSPC``) until the disk
    takes the file, and may simply be called again.
    Not thread-safe: meant to be driven by one thread of one process.  Cost measured on the
    2-core development VM (thread CPU, best of 8 interleaved rounds of 2000 frames): about
    0.23 ms per frame of 1000 q bins with five metadata values and six parameters, all but
    three changing from frame to frame, appended in a loop as the queue's run-file sink
    appends them (its own q, ``valid`` as a list); 0.39 ms with HDF5's default metadata cache,
    version-1 templates and the mask rebuilt per frame, 0.57 ms before the value slots were
    written only when changed.  Frames repeating their header values and parameters (hard
    links of one image, as in the benchmark) cost about 0.21 ms; in the running queue, whose
    other work leaves HDF5's caches cold, about 0.34 ms (0.58 ms before).  With the entry's
    strings fixed-length and its links made by path (``benchmarks/bench_runfile.py``, the
    queue's ``RunSink`` on frames of the real Pilatus image, interleaved with the code before,
    on a machine loaded 12-20 times over its 2 cores; best and median of 5 runs): 0.19 and
    0.21 instead of 0.23 and 0.26 ms per frame of one image, 0.30 and 0.36 instead of 0.43
    and 0.45 ms per frame with its own header values, and in the running queue (best of 3)
    0.34 instead of 0.43 ms.  A full disk holds about 21 kB per such frame in
    memory until it has space again.
    """

    def __init__(self, path: _PathLike, q: Iterable[float] | np.ndarray,
                 calibration: Mapping[str, Any] | None = None, title: str = "",
                 flush_every: int = 64, flush_interval: float = 1.0, unit: str = DEFAULT_UNIT,
                 q_units: str = Q_UNITS, write_every: int = 8,
                 loaded_calibration: Mapping[str, Any] | None = None):
        h5py = _h5()
        self.path = Path(path)
        self.q = np.ascontiguousarray(np.asarray(q, dtype=np.float64).ravel())
        self.calibration = dict(calibration) if calibration else None
        self._loaded_calibration = loaded_calibration
        self.title = title or self.path.stem
        self.flush_every = max(1, int(flush_every))
        self.write_every = max(1, min(int(write_every), self.flush_every))
        self.flush_interval = float(flush_interval)
        self.unit = unit or DEFAULT_UNIT
        #: ``Q@units`` of the run's q grid (``1/nm``, or ``1/angstrom`` for a calibration entry
        #: with ``"Unit": "q_A^-1"``).
        self.q_units = q_units or Q_UNITS
        #: Frames written to the file so far.
        self.count = 0
        self._buffer: list[tuple] = []  # frames appended, not written yet (at most write_every)
        self._unflushed = 0  # frames written since the last flush to disk
        self._unflushed_since = 0.0  # when the oldest frame not flushed was appended
        self._closed = False
        self._h5_closed = False  # close() got as far as closing HDF5 (the rest waits for space)
        self._templates: dict[tuple, _Template] = {}
        #: Where the run's q grid is stored: ``(entry's group id, name)``, a hard-link target.
        self._q_at: tuple[Any, bytes] | None = None
        #: The last frame's own q (one with bins omitted, or another grid) and where it is stored.
        self._own_q: tuple[np.ndarray, tuple[Any, bytes], str] | None = None
        #: The last ``valid`` list (a copy), its mask and the run's q masked by it: frames with
        #: the same bins reuse them (``valid`` arrives as a list of bools, one per bin).
        self._last_valid: tuple[list, np.ndarray, np.ndarray | None] | None = None
        #: The first entry's group id: its instrument and process are every entry's.
        self._shared: Any = None
        #: Per group (``image``, ``parameters``), the one stored last: ``(signature, exact values
        #: (:func:`_exact`), (loc, name))``, the loc and name a hard-link target.
        self._stored_groups: dict[str, tuple[tuple, tuple, tuple[Any, bytes]]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_name(self.path)
        # h5py files (untyped); None only until created, or after a failed creation.
        self._file: Any = None
        self._tfile: Any = None
        self._io: _HeldWritesFile | None = None
        try:
            self._io = _HeldWritesFile(self._tmp)
            # Creation order is tracked so that readers list the frames in write order.  Paged
            # file space with a page buffer: HDF5 hands the driver a few page-sized writes
            # instead of ~30 small ones per frame, each a Python call of the fileobj driver.
            self._file = h5py.File(self._io, "w", libver=("v108", "latest"), track_order=True,
                                   fs_strategy="page", fs_page_size=_PAGE_BYTES, page_buf_size=_PAGE_BUFFER_BYTES)
            _fixed_metadata_cache(self._file.id, _METADATA_CACHE_BYTES)
            # The templates in the file format of the run file (object header version 2, links
            # in the header): copies of version-1 groups would each bring a symbol table (a
            # B-tree node and a local heap) that costs more to copy and to write.
            self._tfile = h5py.File(f"saxsdog-nxcansas-templates-{id(self)}", "w", driver="core",
                                    backing_store=False, libver=("v108", "latest"))
            self._write_root()
            # On disk at once: a full disk shows with the run's first frame (waiting_for_space).
            self._file.flush()
        except BaseException:
            self._discard()
            raise

    # -- public API ------------------------------------------------------------------ #
    def append(self, name: str, I: Iterable[float] | np.ndarray, Idev: Iterable[float] | np.ndarray,
               metadata: Mapping[str, Any] | None = None,
               parameters: Mapping[str, Any] | None = None,
               q: Iterable[float] | np.ndarray | None = None,
               valid: Iterable[bool] | np.ndarray | None = None, unit: str | None = None,
               q_units: str | None = None) -> None:
        """Add one frame (cheap: frames are written in small groups, flushed to disk in blocks).

        Parameters
        ----------
        name
            Frame name (image file name, ``file.h5#12`` for frame 12 of a stack).
        I, Idev
            Intensity and its uncertainty, same length as the q grid.
        metadata
            Header values of the frame (``date``, ``timestamp``, ``exposure_time``, ...):
            numbers, strings, booleans or ``None`` (stored as NaN); anything else as JSON.
            ``date`` (ISO-8601) also becomes the ``SASdata/@timestamp``.
        parameters
            Integral parameters (``I0``, ``I1``, ``I2``, ``invariant``, ``correlation_length``).
        q
            This frame's own q grid, when it differs from the run's.
        valid
            Per bin, whether it holds data (:attr:`saxsdog.core.integrators.Curve.has_data`):
            the other bins are left out of this frame's entry.  ``None``: every bin.  A frame
            with no bin holding data is written whole (SasView's loader refuses a file with
            an empty curve in it).
        unit
            saxsdog's unit of I and Idev (default: the writer's ``unit``).
        q_units
            ``Q@units`` of this frame's q (default: the writer's ``q_units``).

        Raises
        ------
        ValueError
            Lengths of I, Idev, q and valid differ, the name is not valid UTF-8 (a file name
            with undecodable bytes), or the writer is closed.
        """
        if self._closed or self._h5_closed:
            raise ValueError(f"{self.path}: the run file is closed")
        try:  # here, not when the group is written: the error is this frame's
            title = str(name).encode()
        except UnicodeEncodeError as exc:  # a file name that is not UTF-8 (surrogate escapes)
            raise ValueError(f"frame {name!r}: its name is not valid UTF-8 ({exc.reason}); "
                             "NXcanSAS titles are UTF-8 strings") from None
        if q is None:
            qq = self.q
        else:
            qq = np.ascontiguousarray(np.asarray(q, dtype=np.float64).ravel())
            if qq.shape == self.q.shape and qq.tobytes() == self.q.tobytes():
                # the run's grid (a frame's graph brings its own copy of it): the same Q object,
                # so that the bins of the frame before are reused and Q is linked, not compared
                qq = self.q
        ii = np.array(I, dtype=np.float64).ravel()
        dd = np.array(Idev, dtype=np.float64).ravel()
        if not (ii.shape == dd.shape == qq.shape):
            raise ValueError(f"frame {name!r}: I ({ii.size}), Idev ({dd.size}) and q ({qq.size}) "
                             "must have the same length")
        if valid is not None:
            last = self._last_valid
            if last is not None and qq is self.q and type(valid) is list and valid == last[0]:
                # the bins of the frame before (the usual case: a mask's gaps): the same Q
                # object, so _write_frame links it without comparing
                keep, masked_q = last[1], last[2]
            else:
                keep = np.asarray(valid, dtype=bool).ravel()
                if keep.shape != qq.shape:
                    raise ValueError(f"frame {name!r}: valid ({keep.size}) and q ({qq.size}) must have the "
                                     "same length")
                # bins without data are left out: Q stays increasing.  A frame without any keeps
                # them all: an empty SASdata makes sasdata refuse the whole file.
                masked_q = np.ascontiguousarray(qq[keep]) if keep.any() and not keep.all() else None
                self._last_valid = (list(valid), keep, masked_q) if qq is self.q and type(valid) is list else None
            if masked_q is not None:
                qq, ii, dd = (masked_q if qq is self.q else np.ascontiguousarray(qq[keep])), ii[keep], dd[keep]
        qu = str(q_units or self.q_units)
        if qu != self.q_units:  # another unit: never the run's grid (an own Q with its units)
            qq = qq.copy() if qq is self.q else qq
        elif qq is not self.q and qq.shape == self.q.shape and qq.tobytes() == self.q.tobytes():
            qq = self.q  # the run's grid with all its bins (an own q that is the same)
        if not self._buffer and not self._unflushed:
            self._unflushed_since = time.monotonic()
        self._buffer.append((title, ii, dd, dict(metadata or {}), dict(parameters or {}), qq,
                             str(unit or self.unit), qu))
        if len(self._buffer) >= self.write_every:
            self._write_buffered()
        if (self._unflushed + len(self._buffer) >= self.flush_every
                or time.monotonic() - self._unflushed_since >= self.flush_interval):
            try:
                self.flush()
            except OSError as exc:
                if not _no_space(exc):
                    raise
                # the frame is in the file (held in memory): see waiting_for_space

    @property
    def waiting_for_space(self) -> OSError | None:
        """The disk's refusal while bytes of the file wait in memory for space, else ``None``."""
        io_ = self._io
        return io_.error if io_ is not None and not self._closed and io_.held_bytes else None

    @property
    def waiting_bytes(self) -> int:
        """Bytes of the file held in memory until the disk takes them."""
        return self._io.held_bytes if self._io is not None and not self._closed else 0

    def flush(self) -> None:
        """Write the frames appended so far and flush the file to disk (still under its temporary name).

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT``: the disk is full; the frames wait in memory (call again).
        """
        if self._closed:
            return
        if not self._h5_closed:
            self._write_buffered()
            self._file.flush()
            self._unflushed = 0
        assert self._io is not None
        self._io.drain()

    def close(self) -> Path:
        """Write what is appended, close the file and rename it onto its final name.

        Returns
        -------
        Path
            The final path.

        Raises
        ------
        OSError
            ``ENOSPC``/``EDQUOT``: the disk is full.  Nothing is lost and the file is not
            renamed yet; call :meth:`close` again once there is space.  Any other error
            deletes the temporary file.
        """
        if self._closed:
            return self.path
        assert self._io is not None
        try:
            if not self._h5_closed:
                self._write_buffered()
                self._file.attrs["frames"] = np.int64(self.count)
                _set_attr(self._file, "file_update_time", _now_iso())
                self._forget_objects()
                self._file.close()  # HDF5 is done: what the disk refuses is held by self._io
                self._tfile.close()
                self._h5_closed = True
            self._io.drain()
            self._io.close()
            os.replace(self._tmp, self.path)
        except BaseException as exc:
            if _no_space(exc):
                raise  # everything is kept: close() again
            self._closed = True
            self._discard()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the run: close and delete the temporary file; nothing appears under *path*."""
        if not self._closed:
            self._closed = True
            self._discard()

    def __enter__(self) -> "NXcanSASRunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:  # also a full disk: leaving the block ends the writer
                self.abort()
                raise
        else:
            self.abort()

    def __del__(self):  # pragma: no cover - safety net only
        try:
            if not self._closed:
                self.abort()
        except Exception:  # noqa: BLE001
            pass

    # -- internals ------------------------------------------------------------------- #
    def _forget_objects(self) -> None:
        """Drop the open templates and link targets (before the files close)."""
        self._templates.clear()
        self._stored_groups.clear()
        self._shared = self._q_at = self._own_q = None

    def _discard(self) -> None:
        self._forget_objects()
        for f in (self._file, self._tfile):
            try:
                if f is not None and f.id.valid:
                    f.close()
            except Exception:  # noqa: BLE001
                pass
        if self._io is not None:
            self._io.close()
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def _write_buffered(self) -> None:
        """Write the frames appended since the last write (each taken off first: a frame HDF5
        refuses is dropped, the others stay and are written)."""
        buffer = self._buffer
        while buffer:
            self._write_frame(*buffer.pop(0))
            self._unflushed += 1

    def _write_root(self) -> None:
        h5py = _h5()
        f = self._file
        _set_attr(f, "NX_class", "NXroot")
        _set_attr(f, "default", f"{_ENTRY_PREFIX}01")
        _set_attr(f, "file_name", self.path.name)
        _set_attr(f, "file_time", _now_iso())
        _set_attr(f, "creator", f"saxsdog {_version()}")
        _set_attr(f, "HDF5_Version", h5py.version.hdf5_version)
        _set_attr(f, "h5py_version", h5py.version.version)
        _set_attr(f, "title", self.title)

    def _template(self, image: tuple | None, parameters: tuple | None, has_time: bool, n: int,
                  unit: str, title_bytes: int) -> _Template:
        key = (image, parameters, has_time, n, unit, title_bytes)
        tmpl = self._templates.get(key)
        if tmpl is None:
            tmpl = _Template(self._tfile, f"t{len(self._templates)}", self.title, n, image, parameters,
                             has_time, unit, title_bytes)
            self._templates[key] = tmpl
        return tmpl

    def _collection(self, group: str, values: Mapping[str, Any]) -> tuple:
        """An entry's ``image`` or ``parameters`` group: its own, or the one stored before.

        Returns ``(sig, exact, link, values)``: the values' :func:`_signature` and
        :func:`_exact` forms; ``link`` the ``(loc, name)`` of the group stored last when it
        holds exactly these values (the entry links it), else ``None``; ``values`` the
        ``(value, exact)`` the entry's own group is filled with.
        """
        kinds = _KIND_OF_TYPE
        pack = _DOUBLE_BITS
        names: list[tuple[str, str]] = []
        kept: list[tuple[Any, Any]] = []
        for key, v in values.items():  # _signature, _scalar_value and _exact, inlined: every value of every frame
            kind = kinds.get(type(v)) or _scalar_kind(v)
            names.append((key if type(key) is str else str(key), kind))
            if kind == "f":
                value = math.nan if v is None else float(v)
                kept.append((value, pack(value)))
            elif type(v) is str:
                kept.append((v, v))
            else:
                value = _scalar_value(v, kind)
                kept.append((value, _exact(value, kind)))
        sig = tuple(names)
        exact = tuple([e for _, e in kept])
        stored = self._stored_groups.get(group)
        if stored is not None and stored[0] == sig and stored[1] == exact:
            return sig, exact, stored[2], kept
        return sig, exact, None, kept

    def _write_frame(self, name: bytes, I: np.ndarray, Idev: np.ndarray, metadata: dict,
                     parameters: dict, q: np.ndarray, unit: str = DEFAULT_UNIT,
                     q_units: str = Q_UNITS) -> None:
        from h5py import h5g, h5o

        timestamp = metadata.get("date")
        has_time = isinstance(timestamp, str) and bool(timestamp)
        image = self._collection("image", metadata)
        params = self._collection("parameters", parameters)
        # a group holding the values of the group stored before is that group (a hard link):
        # the template leaves it out
        image_linked, params_linked = image[2] is not None, params[2] is not None
        tmpl = self._template(None if image_linked else image[0], None if params_linked else params[0],
                              has_time, q.size, unit, len(name))
        tmpl.fill(name, I, Idev, ([] if image_linked else image[3]) + ([] if params_linked else params[3]),
                  timestamp if has_time else None)
        entry_name = f"{_ENTRY_PREFIX}{self.count + 1:02d}".encode()
        fid = self._file.id
        h5o.copy(self._tfile.id, tmpl.name, fid, entry_name)
        self.count += 1
        # Links are made by path from the root group: opening the new entry first (an
        # identifier and a Python object) costs more than HDF5's lookup of its name.
        create_hard = fid.links.create_hard
        prefix = entry_name + b"/"
        # Q: the run's grid, or the frame's own (stored again unless the frame before had the same)
        own_q = q is not self.q
        link_to: tuple[Any, bytes] | None = None
        if not own_q:
            link_to = self._q_at
        elif (self._own_q is not None and self._own_q[2] == q_units
              and (self._own_q[0] is q or _same_bits(self._own_q[0], q))):
            link_to = self._own_q[1]  # the same bins left out as in the frame before
        if link_to is None:
            ds = self._file[entry_name.decode()][_DATA_NAME].create_dataset("Q", data=q)
            _set_attr(ds, "units", q_units)
            if own_q:
                self._own_q = (q, (fid, prefix + _Q_NAME), q_units)
            else:
                self._q_at = (fid, prefix + _Q_NAME)
        else:
            # A hard link: every entry has a real Q member, stored once.
            create_hard(prefix + _Q_NAME, *link_to)
        if self._shared is None:
            det = metadata.get("detector")
            self._write_shared(self._file[entry_name.decode()],
                               det if isinstance(det, str) and det else "area detector")
            self._shared = h5g.open(fid, entry_name)
        else:
            first = self._shared
            for member in _SHARED_MEMBERS:
                create_hard(prefix + member, first, member)
        for group, (sig, exact, link, _) in (("image", image), ("parameters", params)):
            if link is not None:
                create_hard(prefix + group.encode(), *link)
            else:  # the next frames link this one while their values are the same
                self._stored_groups[group] = (sig, exact, (fid, prefix + group.encode()))

    def _write_shared(self, entry, detector_name: str) -> None:
        """Instrument and process groups, created once (in the first entry) and hard-linked."""
        h5py = _h5()
        inst = entry.create_group("sasinstrument", track_order=True)
        _set_attr(inst, "NX_class", "NXinstrument")
        _set_attr(inst, "canSAS_class", "SASinstrument")
        geo = geometry_fields(self.calibration)
        det = inst.create_group("sasdetector", track_order=True)
        _set_attr(det, "NX_class", "NXdetector")
        _set_attr(det, "canSAS_class", "SASdetector")
        det.create_dataset("name", data=detector_name, dtype=h5py.string_dtype())
        for key, (value, units) in geo["detector"].items():
            ds = det.create_dataset(key, data=value)
            if units:
                _set_attr(ds, "units", units)
        src = inst.create_group("sassource", track_order=True)
        _set_attr(src, "NX_class", "NXsource")
        _set_attr(src, "canSAS_class", "SASsource")
        src.create_dataset("radiation", data="x-ray", dtype=h5py.string_dtype())
        src.create_dataset("probe", data="x-ray", dtype=h5py.string_dtype())
        if "incident_wavelength" in geo["source"]:
            value, units = geo["source"]["incident_wavelength"]
            ds = src.create_dataset("incident_wavelength", data=value)
            _set_attr(ds, "units", units)
            mono = inst.create_group("monochromator")
            _set_attr(mono, "NX_class", "NXmonochromator")
            ds = mono.create_dataset("wavelength", data=value)
            _set_attr(ds, "units", units)
        proc = entry.create_group("sasprocess", track_order=True)
        _set_attr(proc, "NX_class", "NXprocess")
        _set_attr(proc, "canSAS_class", "SASprocess")
        for key, value in (
            ("name", "saxsdog azimuthal integration"),
            ("date", _now_iso()),
            ("description", "Sparse-operator azimuthal integration with pixel splitting; I is "
                            "the mean corrected pixel value per q bin (in I@saxsdog_unit), Idev "
                            "its uncertainty; the corrections applied are the notes of this "
                            "group, in the order applied (sequence_index)."),
            ("program", "saxsdog"),
            ("version", _version()),
        ):
            proc.create_dataset(key, data=value, dtype=h5py.string_dtype())
        if self.calibration is not None:
            ds = proc.create_dataset("calibration", data=json.dumps(self.calibration),
                                     dtype=h5py.string_dtype())
            _set_attr(ds, "format", "JSON")
        self._write_notes(proc)

    def _write_notes(self, proc) -> None:
        """One ``termNN`` line and one ``NXnote`` per correction applied (:func:`process_notes`)."""
        h5py = _h5()
        for k, note in enumerate(process_notes(self.calibration, self._loaded_calibration), start=1):
            params = note["parameters"]
            line = note["name"] + ": " + note["description"]
            if params:
                line += " (" + ", ".join(f"{key}={json.dumps(v, default=str)}" for key, v in params.items()) + ")"
            term = proc.create_dataset(f"term{k:02d}", data=line, dtype=h5py.string_dtype())
            _set_attr(term, "name", note["name"])
            g = proc.create_group(note["name"], track_order=True)
            _set_attr(g, "NX_class", "NXnote")
            _set_attr(g, "canSAS_class", "SASprocessnote")
            g.create_dataset("name", data=note["name"], dtype=h5py.string_dtype())
            g.create_dataset("description", data=note["description"], dtype=h5py.string_dtype())
            g.create_dataset("sequence_index", data=np.int64(k))
            g.create_dataset("type", data="application/json", dtype=h5py.string_dtype())
            g.create_dataset("data", data=json.dumps(params, default=str), dtype=h5py.string_dtype())
            files = note["files"]
            if files:
                g.create_dataset("file_name", data=files[0] if len(files) == 1 else files,
                                 dtype=h5py.string_dtype())


# --------------------------------------------------------------------------- #
# One-call writer
# --------------------------------------------------------------------------- #


def write_nxcansas(path: _PathLike, frames: Sequence[Mapping[str, Any]],
                   calibration: Mapping[str, Any] | None = None, title: str = "") -> Path:
    """Write one NXcanSAS file holding one or several frames (atomically).

    Parameters
    ----------
    path
        Output file (``.h5``).
    frames
        Dicts with ``name`` (str), ``q`` (nm⁻¹), ``I``, ``Idev`` and optionally
        ``metadata`` and ``parameters`` (dicts of scalars), ``valid`` (bool per bin: the
        others are left out), ``unit`` (saxsdog's unit of I) and ``q_units`` (``Q@units``,
        default ``1/nm``; ``1/angstrom`` for q in Å⁻¹).  Frames may have different
        q grids.
    calibration
        Calibration dict (stored as JSON and mapped onto the instrument fields).
    title
        Run title (default: the file's stem).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        No frames, a frame without ``q``/``I``/``Idev``, or arrays of different lengths.
    """
    if not frames:
        raise ValueError("write_nxcansas needs at least one frame")
    for k, fr in enumerate(frames):
        for key in ("q", "I", "Idev"):
            if key not in fr:
                raise ValueError(f"frame {k} ({fr.get('name', '?')!r}) has no {key!r}")
    writer = NXcanSASRunWriter(path, frames[0]["q"], calibration, title,
                               flush_every=max(1, len(frames)), flush_interval=math.inf,
                               q_units=frames[0].get("q_units") or Q_UNITS)
    try:
        for k, fr in enumerate(frames):
            writer.append(str(fr.get("name", f"frame{k}")), fr["I"], fr["Idev"],
                          fr.get("metadata"), fr.get("parameters"), q=fr["q"], valid=fr.get("valid"),
                          unit=fr.get("unit"), q_units=fr.get("q_units"))
    except BaseException:
        writer.abort()
        raise
    # The detector name comes from the first frame's header when it has one.
    try:
        return writer.close()
    except BaseException:  # a full disk too: one call, so nothing is kept for a later one
        writer.abort()
        raise


# --------------------------------------------------------------------------- #
# Reader
# --------------------------------------------------------------------------- #


def _text(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "SO" or v.dtype.kind == "U":
            items = [_text(x) for x in v.ravel().tolist()]
            return items[0] if len(items) == 1 else items
        return v
    return v


def _attr(obj, name: str, default: Any = None) -> Any:
    return _text(obj.attrs.get(name, default))


def _scalar_out(v: Any) -> Any:
    v = _text(v)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, np.generic):
        v = v.item()
    return _text(v)


def _collection(group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    h5py = _h5()
    for key, obj in group.items():
        if isinstance(obj, h5py.Dataset):
            out[key] = _scalar_out(obj[()]) if obj.shape == () else obj[()]
    return out


def read_nxcansas(path: _PathLike) -> list[dict[str, Any]]:
    """Read the curves of an NXcanSAS file, one dict per frame.

    Reads our own files (one ``SASentry`` per frame) and generic NXcanSAS 1-D data,
    including multi-frame ``SASdata`` (``I`` of shape (frames, Q) with 1-D ``Q``), which is
    split into frames.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    list of dict
        Each with ``name``, ``q``, ``I``, ``Idev`` (or ``None``), ``q_units``, ``I_units``,
        ``unit`` (saxsdog's unit of I, ``None`` in files from elsewhere),
        ``metadata`` and ``parameters`` (dicts, empty when absent), ``timestamp`` (str or
        ``None``), ``run``, ``entry`` (HDF5 path) and ``calibration`` (dict or ``None``).

    Raises
    ------
    ValueError
        If the file holds no SASentry/SASdata.
    """
    h5py = _h5()
    frames: list[dict[str, Any]] = []
    calibrations: dict[Any, Any] = {}  # the process group is shared: parse its JSON once
    with h5py.File(path, "r") as f:
        entries = [g for g in f.values()
                   if isinstance(g, h5py.Group) and _attr(g, "canSAS_class") == "SASentry"]
        for entry in entries:
            calibration = None
            proc = entry.get("sasprocess")
            if isinstance(proc, h5py.Group):
                key = h5py.h5o.get_info(proc.id).addr
                if key not in calibrations:
                    parsed = None
                    if "calibration" in proc:
                        try:
                            parsed = json.loads(_scalar_out(proc["calibration"][()]))
                        except (TypeError, ValueError):
                            parsed = None
                    calibrations[key] = parsed
                calibration = calibrations[key]
            meta = _collection(entry["image"]) if isinstance(entry.get("image"), h5py.Group) else {}
            params = (_collection(entry["parameters"])
                      if isinstance(entry.get("parameters"), h5py.Group) else {})
            title = _scalar_out(entry["title"][()]) if "title" in entry else entry.name
            run = _scalar_out(entry["run"][()]) if "run" in entry else None
            datas = [g for g in entry.values()
                     if isinstance(g, h5py.Group) and _attr(g, "canSAS_class") == "SASdata"]
            for data in datas:
                signal = _attr(data, "signal", "I")
                axes = _attr(data, "I_axes", "Q")
                if isinstance(axes, str):
                    axes = [a.strip() for a in axes.split(",")]
                idx = _attr(data, "Q_indices", [0])
                idx = [int(i) for i in np.atleast_1d(idx)]
                qname = axes[idx[0]] if axes and idx else "Q"
                I = data[signal]
                devname = _attr(I, "uncertainties") or _attr(I, "uncertainty")
                Iarr = np.asarray(I[()], dtype=np.float64)
                Earr = (np.asarray(data[devname][()], dtype=np.float64)
                        if devname and devname in data else None)
                q = np.asarray(data[qname][()], dtype=np.float64)
                common = {
                    "q_units": _attr(data[qname], "units"),
                    "I_units": _attr(I, "units"),
                    "unit": _attr(I, "saxsdog_unit"),
                    "run": run,
                    "entry": entry.name,
                    "calibration": calibration,
                }
                if Iarr.ndim == 1:
                    frames.append({"name": title, "q": q, "I": Iarr, "Idev": Earr,
                                   "metadata": meta, "parameters": params,
                                   "timestamp": _attr(data, "timestamp"), **common})
                else:
                    stack = Iarr.reshape(-1, Iarr.shape[-1])
                    estack = Earr.reshape(-1, Earr.shape[-1]) if Earr is not None else None
                    for k in range(stack.shape[0]):
                        frames.append({"name": f"{title}#{k}", "q": q, "I": stack[k],
                                       "Idev": None if estack is None else estack[k],
                                       "metadata": dict(meta), "parameters": dict(params),
                                       "timestamp": _attr(data, "timestamp"), **common})
    if not frames:
        raise ValueError(f"{path}: no NXcanSAS SASentry/SASdata found")
    return frames
