"""The calibration: validated configuration plus the integrators it defines.

A calibration file (JSON, as described in the original SAXSDOG manual) loads unchanged;
:data:`saxsdog.config.CALIBRATION` checks it against ``saxsdog/schemas/calibration.schema.json``
(unknown keys are refused, ``x-`` keys are private notes), maps the original's spellings
of two geometry fields to ``DetectorDistanceMM``/``ImageSize`` (only :mod:`saxsdog.config`
knows the original's), stamps the format ``Version`` and adds the schema's defaults: that
is :attr:`Calibration.config`;
:attr:`Calibration.raw` keeps the file as it was (the ``.chi`` headers copy it).  Each entry of ``Masks`` gives a radial (or Phi-mode) integrator,
each entry of ``Slices`` a GISAXS slice; ``GISAXSmode`` keeps only the slices.

Format version 2 adds three blocks (see the schema's descriptions and
:mod:`saxsdog.config`; a file without ``Version`` is version 1 and loads with
``Corrections.SolidAngle`` false, so its q and I are the original's):

* ``Corrections`` become :attr:`Calibration.pixel_corrections`
  (:class:`saxsdog.core.corrections.PixelCorrections`) handed to every integrator; the
  dark and flat files are read here through :mod:`saxsdog.io.images` (``.npy`` too),
  relative to the calibration's folder, and checked (size, a flat > 0 on every pixel the
  masks use).  The polarization then travels in the corrections, not in the operators.
  Per frame the dark is scaled by the frame's exposure time over the dark's (its own
  header), when both are known.
* ``Normalization`` (:mod:`saxsdog.reduction.normalization`): :meth:`Calibration.curves`
  multiplies each curve by AbsoluteScale/(t·M·T·d) from the frame's metadata and sets its
  :attr:`~saxsdog.core.integrators.Curve.unit`; a frame lacking a header field fails
  alone (an :class:`~saxsdog.errors.ImageError`).
* ``Background`` (:mod:`saxsdog.reduction.background`): read or integrated once, then each
  curve carries its background-subtracted curve in ``Curve.subtracted``.

:meth:`Calibration.integrate` gives the curve the pipeline writes (corrected and
normalized, from the frame's metadata); ``normalize=False`` the corrected curve before
the normalization.

>>> cal = Calibration("cal.json")                      # doctest: +SKIP
>>> frame = saxsdog.read_image("img.tif")               # doctest: +SKIP
>>> q, I = cal.integrate(frame)                         # doctest: +SKIP
>>> q, I = cal.integrate(frame.data, frame.metadata)    # doctest: +SKIP
>>> I, stddev, error = cal.integrate_with_errors(frame)     # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .config import CALIBRATION
from .core.geometry import Geometry
from .core.binning import BinningError, radial_axis
from .core.integrators import (CakeIntegrator, Curve, Integrator, PhiIntegrator, RadialIntegrator,
                               SliceIntegrator, integral_parameters)
from .core.operator import (BinningOperator, build_cake_operator, build_phi_operator, build_radial_operator,
                            build_slice_operator)
from .errors import CalibrationError
from .io.atomic import atomic_write_bytes
from .io.chi import ChiFormatter
from .io.masks import read_mask, read_mask_bytes
from .io.operator_cache import OperatorCache, default_cache_dir, operator_key
# The web page's translator imports these two; saxsdog.config.calibration_problems replaces it.
from .schemas import expected_text as _expected, json_path as _json_path  # noqa: F401

if TYPE_CHECKING:
    from .io.images import Frame

#: What the integrate methods take: the pixels, or a frame with its metadata.
ImageLike = Union[np.ndarray, "Frame"]

__all__ = ["Calibration", "Slice", "load_schema", "validate_calibration", "calibration_for_file"]

log = logging.getLogger(__name__)


def load_schema() -> dict[str, Any]:
    """The calibration JSON Schema (a fresh copy)."""
    return CALIBRATION.doc.schema


def validate_calibration(config: Any) -> None:
    """Validate a calibration dict (in the file's form, any supported version).

    Raises
    ------
    CalibrationError
        For the most relevant violation (an unknown key first), naming its JSON path,
        value and expectation.
    """
    CALIBRATION.check(config)


def calibration_for_file(config: Mapping[str, Any]) -> dict[str, Any]:
    """A loaded calibration (:attr:`Calibration.config`) as it is written to a file.

    Version 1 is written in the original's spellings and without ``Version``, so the
    original SAXSDOG reads the file.
    """
    return CALIBRATION.for_file(config)


def _output_suffix(kind: str, index: int) -> str:
    """File-name suffix of the index-th integrator (the original's naming)."""
    return "" if index == 0 else f"_c{kind[0]}{index}"


def _frame_parts(image: ImageLike, metadata: Mapping[str, Any] | None) -> tuple[np.ndarray, Mapping[str, Any] | None]:
    """The pixels and metadata of an array or a :class:`saxsdog.io.images.Frame` (its
    metadata unless ``metadata`` is given)."""
    data = getattr(image, "data", None)
    if isinstance(data, np.ndarray) and not isinstance(image, np.ndarray):
        frame_meta = getattr(image, "metadata", None)
        return data, metadata if metadata is not None else (frame_meta if isinstance(frame_meta, Mapping) else {})
    return np.asarray(image), metadata



#: The modules whose code computes an integrator's per-pixel factor (solid angle,
#: polarization) and its packed form: a stored factor counts only for the same code.
_FACTOR_MODULES = ("saxsdog.core.corrections", "saxsdog.core.geometry", "saxsdog.core.binning",
                   "saxsdog.core.operator", "saxsdog.core.kernels")


@functools.lru_cache(maxsize=1)
def _factor_code_fingerprint() -> str:
    """SHA-256 over the source of :data:`_FACTOR_MODULES` (a changed formula is a new key)."""
    return _source_fingerprint(_FACTOR_MODULES)


class FactorStore:
    """An integrator's per-pixel factor and its packed form, kept beside its cached operator.

    The factor ``1 / (Ω · P)`` of the solid angle and polarization corrections is a pass
    over every pixel's geometry: about 0.1 s of each start for a Pilatus 1M, for the same
    bytes every time.  It is stored once (``<operator key>-factor-<key>.npz`` in the cache
    folder) and read back by later loads.  The key covers the operator (its own key: the
    geometry, mask and binning), the corrections that make the factor, the kernel method
    and the code that computes it (:func:`_factor_code_fingerprint`).  A missing, unreadable
    or mis-shaped entry is recomputed; a failed store is logged, never raised.
    """

    def __init__(self, directory: Path, operator_key: str, corrections: Any, method: str | None):
        import hashlib

        described = {"solid_angle": bool(corrections.solid_angle),
                     "polarization": None if corrections.polarization is None
                     else [float(v) for v in corrections.polarization],
                     "method": method, "code": _factor_code_fingerprint()}
        key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]
        self.path = Path(directory) / f"{operator_key}-factor-{key}.npz"

    def load(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """``(factor, packed factor or None)``, or ``None`` to compute them."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                factor = np.ascontiguousarray(z["factor"])
                packed = np.ascontiguousarray(z["packed"]) if "packed" in z.files else None
        except Exception as exc:  # a corrupt entry must never stop processing
            log.warning("ignoring unreadable cached factor %s: %s", self.path, exc)
            return None
        if factor.dtype != np.float64 or factor.ndim != 1 or \
                (packed is not None and (packed.dtype != np.float64 or packed.ndim != 1)):
            log.warning("ignoring cached factor %s: not the arrays expected", self.path)
            return None
        return factor, packed

    def save(self, factor: np.ndarray | None, packed: np.ndarray | None) -> None:
        """Store the factor (nothing when there is none)."""
        if factor is None:
            return
        from .io.atomic import atomic_output

        arrays = {"factor": np.asarray(factor, dtype=np.float64).reshape(-1)}
        if packed is not None:
            arrays["packed"] = np.asarray(packed, dtype=np.float64).reshape(-1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(self.path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]
        except OSError as exc:
            log.warning("cannot cache the per-pixel factor in %s: %s", self.path.parent, exc)


#: The code that turns a calibration document into its loaded form (migrations, schema,
#: spellings, defaults): a remembered result counts only for the same code.
_CONFIG_CODE = ("saxsdog.config", "saxsdog.schemas")


def _source_fingerprint(modules: tuple[str, ...], extra_files: tuple[str, ...] = ()) -> str:
    """SHA-256 over the source files of ``modules`` (imported) and ``extra_files`` beside the
    first one's package."""
    import hashlib
    import sys

    h = hashlib.sha256()
    paths = [getattr(sys.modules.get(name), "__file__", None) for name in modules]
    schemas = sys.modules.get("saxsdog.schemas")
    folder = Path(schemas.__file__).parent if schemas is not None and schemas.__file__ else None
    paths += [str(folder / name) if folder is not None else None for name in extra_files]
    for name, path in zip([*modules, *extra_files], paths):
        try:
            h.update(Path(path).read_bytes() if path else name.encode())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _config_code_fingerprint() -> str:
    return _source_fingerprint(_CONFIG_CODE, ("calibration.schema.json",))


def load_config(raw: Any, cache_dir: Path | None) -> dict[str, Any]:
    """``CALIBRATION.load(raw)``, remembered in ``cache_dir`` for a document seen before.

    Checking a document against the schema takes the jsonschema package (about 80 ms of
    imports) and the check itself; a document that was loaded before (the same bytes, as
    canonical JSON, and the same loading code) gets its loaded form from
    ``config-<key>.json`` instead.  Only valid documents are remembered (an invalid one
    raises its error every time); an unreadable entry is loaded again.
    """
    if cache_dir is None:
        return CALIBRATION.load(raw)
    import hashlib

    try:
        text = json.dumps(raw, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # not plain JSON (a dict built in code): no key
        return CALIBRATION.load(raw)
    key = hashlib.sha256((_config_code_fingerprint() + text).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"config-{key}.json"
    try:
        known = json.loads(path.read_text())
        if isinstance(known, dict):
            return known
    except (OSError, ValueError):  # not there yet, or unreadable: loaded again
        pass
    config: dict[str, Any] = CALIBRATION.load(raw)
    try:
        stored = json.dumps(config, sort_keys=True, allow_nan=False)
        if json.loads(stored) != config:  # something JSON does not keep: not remembered
            return config
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, stored.encode())
    except (TypeError, ValueError, OSError) as exc:
        log.debug("calibration not remembered in %s: %s", cache_dir, exc)
    return config

class Calibration:
    """A validated calibration and its integrators.

    Parameters
    ----------
    source
        Path of a calibration JSON file, or the calibration as a dict.
    base_dir
        Folder that relative ``MaskFile`` paths resolve against; default: the
        calibration file's folder (or the current folder for a dict).
    attachments
        Mask contents sent with the calibration (e.g. over the network), keyed by mask
        index or by the ``MaskFile`` string; used instead of reading the file.  Empty
        content means no mask.
    attachment_names
        File names of the attachments by mask index (their suffix tells the format);
        default: the ``MaskFile``.
    cache
        ``True``: the default operator cache; ``False``/``None``: no cache; a path: that
        cache folder.
    method
        Integration kernel (``"numba"`` or ``"scipy"``); default the fastest available.

    Raises
    ------
    CalibrationError
        Invalid calibration or mask (the message names the JSON path).
    """

    def __init__(self, source: str | os.PathLike[str] | Mapping[str, Any], *,
                 base_dir: str | os.PathLike[str] | None = None,
                 attachments: Mapping[int, bytes] | Mapping[str, bytes] | Mapping[int | str, bytes] | None = None,
                 attachment_names: Mapping[int, str] | None = None,
                 cache: bool | str | os.PathLike[str] | None = True,
                 method: str | None = None):
        if isinstance(source, Mapping):
            raw = copy.deepcopy(dict(source))
            self.path: Path | None = None
            default_base = Path.cwd()
        else:
            self.path = Path(source)
            resolved = self.path.resolve()
            try:
                raw = json.loads(self.path.read_text())
            except FileNotFoundError:
                raise CalibrationError(f"calibration file not found: {resolved}", "$", str(resolved),
                                       "an existing JSON file") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise CalibrationError(f"cannot read calibration file {resolved}: {exc}", "$",
                                       str(resolved)) from None
            except json.JSONDecodeError as exc:
                raise CalibrationError(f"{resolved} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                       f"column {exc.colno}", "$", str(resolved), "a JSON object") from None
            default_base = resolved.parent
        self.raw: dict[str, Any] = raw
        if cache is True:
            cache_dir = default_cache_dir()
        elif cache is False or cache is None:
            cache_dir = None
        else:
            cache_dir = Path(cache)
        #: The calibration in saxsdog's spellings, with ``Version`` and every default.
        self.config: dict[str, Any] = load_config(raw, cache_dir)
        self.base_dir = Path(base_dir) if base_dir is not None else default_base
        self.method = method
        self._attachments: dict[int | str, bytes] = dict((attachments or {}).items())
        self._attachment_names = dict(attachment_names or {})
        self.cache = OperatorCache(cache_dir) if cache_dir is not None else None
        self.geometry = self._geometry()
        self._masks: dict[int, np.ndarray | None] = {}
        self._formatters: list[ChiFormatter | None] | None = None
        #: The per-pixel corrections of ``Corrections`` (``None`` without saxsdog.core.corrections).
        self.pixel_corrections: Any = self._pixel_corrections()
        self.integrators: list[Integrator] = self._build_integrators()
        self._setup_reduction()
        self.classifiers = self._build_classifiers()

    # -- configuration ---------------------------------------------------------------
    def _geometry(self) -> Geometry:
        g = self.config["Geometry"]
        distance = g["DetectorDistanceMM"]
        size = g["ImageSize"]
        px = g["PixelSizeMicroM"]
        px = (float(px[0]), float(px[-1]))
        tilt = g.get("Tilt", {})
        return Geometry(
            shape=(int(size[0]), int(size[1])),
            beam_center=(float(g["BeamCenter"][0]), float(g["BeamCenter"][1])),
            distance_mm=float(distance),
            pixel_size_um=px,
            wavelength_A=float(self.config["Wavelength"]),
            tilt_deg=float(tilt.get("TiltAngleDeg", 0.0)),
            tilt_rotation_deg=float(tilt.get("TiltRotDeg", 0.0)),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(rows, cols)``."""
        return self.geometry.shape

    @property
    def polarization(self) -> tuple[float, float] | None:
        """``(fraction, angle_deg)`` or ``None``."""
        p = self.config.get("PolarizationCorrection")
        return None if p is None else (float(p["Fraction"]), float(p["Angle"]))

    def mask(self, index: int) -> np.ndarray | None:
        """Validity map of ``Masks[index]`` (``None`` for an empty MaskFile)."""
        if index not in self._masks:
            entry = self.config["Masks"][index]
            name = entry["MaskFile"]
            json_path = f"$.Masks[{index}].MaskFile"
            content = self._attachments.get(index, self._attachments.get(name))
            if content is not None and len(content) == 0:
                self._masks[index] = None
            elif content is not None:
                fmt_name = self._attachment_names.get(index) or name
                self._masks[index] = read_mask_bytes(content, fmt_name, self.shape, json_path)
            elif name == "":
                self._masks[index] = None
            else:
                p = Path(name)
                if not p.is_absolute():
                    p = self.base_dir / p
                self._masks[index] = read_mask(p, self.shape, json_path)
        return self._masks[index]

    # -- operators -------------------------------------------------------------------
    def _cached(self, params: dict[str, Any], mask: np.ndarray | None, build) -> BinningOperator:
        self._operator_key = None
        if self.cache is None:
            return build()
        key = operator_key(params, mask)
        op = self.cache.load(key)
        if op is None:
            log.info("building %s operator (not in cache %s)", params.get("kind"), self.cache.directory)
            op = build()
            self.cache.store(key, op)
        self._operator_key = key
        return op

    def _factor_kwargs(self) -> dict[str, Any]:
        """The factor store of the operator :meth:`_cached` just gave (none without a cache or
        corrections, or with a flat field: the flat's pixels are checked on every load)."""
        key = getattr(self, "_operator_key", None)
        corrections = self.pixel_corrections
        if key is None or self.cache is None or corrections is None or corrections.flat is not None \
                or not corrections.needs_geometry:
            return {}
        return {"factor_store": FactorStore(self.cache.directory, key, corrections, self.method)}

    def _geometry_params(self) -> dict[str, Any]:
        g = self.geometry
        return {"shape": list(g.shape), "beam_center": list(g.beam_center), "distance": g.distance_mm,
                "pixel": list(g.pixel_size_um), "wavelength": g.wavelength_A, "tilt": g.tilt_deg,
                "rot": g.tilt_rotation_deg}

    def _build_integrators(self) -> list[Integrator]:
        integrators: list[Integrator] = []
        gparams = self._geometry_params()
        if not self.config.get("GISAXSmode", False):
            for i, entry in enumerate(self.config["Masks"]):
                integrators.append(self._mask_integrator(i, entry, gparams))
        for j, entry in enumerate(self.config.get("Slices", [])):
            integrators.append(Slice(self, entry, index=j))
        if not integrators:
            raise CalibrationError("nothing to integrate: no masks" +
                                   (" and no slices in GISAXSmode" if self.config.get("GISAXSmode") else ""),
                                   "$.Masks", self.raw.get("Masks"), "at least one mask or slice")
        return integrators

    def _mask_integrator(self, i: int, entry: Mapping[str, Any], gparams: dict[str, Any]) -> Integrator:
        """The integrator of ``Masks[i]``: radial (linear/log, unit, range, sector), Phi-mode or cake.

        Every build parameter is part of the operator cache key.
        """
        mask = self.mask(i)
        ov = int(entry["Oversampling"])
        pol = self._operator_polarization()
        unit = entry.get("Unit", "q_nm^-1")
        binning = entry.get("Binning", "linear")
        ppd = entry.get("PointsPerDecade")
        rrange = entry.get("RadialRange")
        arange = entry.get("AzimuthRange")
        rrange_t = None if rrange is None else (float(rrange[0]), float(rrange[1]))
        arange_t = None if arange is None else (float(arange[0]), float(arange[1]))
        modes = {"unit": unit, "binning": binning, "ppd": ppd, "radial_range": rrange,
                 "azimuth_range": arange}
        name = entry.get("Name", "")
        cake = entry.get("Cake")
        try:
            if cake is not None:
                if entry.get("Phi-mode", False):
                    raise BinningError("Phi-mode and Cake exclude each other", "Cake", cake,
                                       "either Phi-mode or Cake")
                r_bins, a_bins = int(cake["RadialBins"]), int(cake["AzimuthBins"])
                params = {"kind": "Cake", **gparams, "ov": ov, "pol": pol, **modes, "cake": [r_bins, a_bins],
                          "chi": "clockwise"}
                op = self._cached(params, mask, functools.partial(
                    build_cake_operator, self.geometry, mask, ov, r_bins, a_bins, pol, unit=unit,
                    binning=binning, radial_range=rrange_t, azimuth_range=arange_t))
                return CakeIntegrator(op, dict(entry), name, self.method, **self._integrator_kwargs(),
                              **self._factor_kwargs())
            if entry.get("Phi-mode", False):
                if rrange_t is not None:
                    # checked as a radial axis's range, so an empty, inverted or off-detector
                    # RadialRange names RadialRange (not qStop) and is not silently empty
                    radial_axis(self.geometry, unit, "linear", 1.0, None, rrange_t)
                    q_range, range_unit = rrange_t, unit
                else:  # qStart and qStop are in nm⁻¹ whatever the Unit (the schema says so)
                    q_stop = float(entry["qStop"]) if entry["qStop"] > 0 else np.inf
                    q_range, range_unit = (float(entry["qStart"]), q_stop), "q_nm^-1"
                n_phi = int(entry.get("PhiBins", 360))
                params = {"kind": "Phi", **gparams, "ov": ov, "q_range": [q_range[0], str(q_range[1])],
                          "pol": pol, "unit": range_unit, "azimuth_range": arange, "phi_bins": n_phi,
                          "chi": "clockwise"}
                op = self._cached(params, mask, functools.partial(
                    build_phi_operator, self.geometry, mask, ov, q_range, n_phi, pol,
                    azimuth_range=arange_t, unit=range_unit))
                return PhiIntegrator(op, dict(entry), name, self.method, **self._integrator_kwargs(),
                             **self._factor_kwargs())
            ppre = float(entry["PixelPerRadialElement"])
            params = {"kind": "Radial", **gparams, "ov": ov, "ppre": ppre, "pol": pol}
            if any(v is not None for v in (rrange, arange, ppd)) or unit != "q_nm^-1" or binning != "linear":
                params.update(modes)  # today's entries keep today's cache keys
            op = self._cached(params, mask, functools.partial(
                build_radial_operator, self.geometry, mask, ov, ppre, polarization=pol, unit=unit,
                binning=binning, points_per_decade=ppd, radial_range=rrange_t, azimuth_range=arange_t))
            return RadialIntegrator(op, dict(entry), name, self.method, **self._integrator_kwargs(),
                                **self._factor_kwargs())
        except BinningError as exc:
            raise CalibrationError(str(exc), f"$.Masks[{i}].{exc.field}", exc.value, exc.expected) from None

    def _build_classifiers(self):
        """The ``Classifiers`` (see :mod:`saxsdog.classifiers`); the integral parameters always."""
        from .classifiers import ClassifierContext, build_classifiers

        radial = next((it for it in self.integrators if it.kind == "Radial"), None)
        nrows = self.shape[0]
        y_c, x_c = self.geometry.beam_center
        context = ClassifierContext(self.shape, q=None if radial is None else np.asarray(radial.x),
                                    q_map=self.geometry.q, base_dir=self.base_dir,
                                    # the beam centre as (row, column) array indices
                                    extra={"beam_center_rc": (nrows - y_c - 0.5, x_c - 0.5),
                                           # the cake maps' axes (Masks index -> radial, chi centres)
                                           "cakes": {i: (np.asarray(it.x), it.azimuth)
                                                     for i, it in enumerate(self.integrators)
                                                     if isinstance(it, CakeIntegrator)}})
        entries = list(self.config.get("Classifiers") or [])
        scan = self.config.get("Scan")
        if isinstance(scan, dict) and not any(isinstance(e, dict) and e.get("Kind") == "ScanPosition" for e in entries):
            from .classifiers.scan import header_keys

            keys = header_keys(scan)
            if keys:  # the scan's indices are in the image headers: read them in the workers
                entries.append({"Kind": "ScanPosition", **keys})
        classifiers = build_classifiers(entries, context)
        # the coordinator builds these when a queue starts; checked here, when the calibration loads
        if self.config.get("Average"):
            from .classifiers.average import Averager

            Averager(self.config["Average"])
        if self.config.get("Scan"):
            from .classifiers.scan import ScanMap

            ScanMap(self.config["Scan"], classifiers.keys())
        return classifiers

    # -- the original's API, in snake_case -------------------------------------------
    @property
    def radial(self) -> Integrator:
        """The first integrator (the one :meth:`integrate` uses)."""
        return self.integrators[0]

    @property
    def q(self) -> np.ndarray:
        """Bin centres of the first integrator."""
        return self.radial.x

    def integrate(self, image: ImageLike, metadata: Mapping[str, Any] | None = None, *,
                  normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Integrate an image with the first integrator: the curve the pipeline writes.

        The pixel corrections (dark, flat, solid angle, polarization, dummy pixels, sigma
        clipping) and, with ``normalize``, the ``Normalization`` (divided by t·M·T·d,
        multiplied by ``AbsoluteScale``) are applied as :meth:`curves` applies them, so the
        result equals column 2 of the ``.chi`` file ``saxsdog -c`` writes for the frame.

        Parameters
        ----------
        image
            The frame's pixels, or a :class:`saxsdog.io.images.Frame` (what
            :func:`saxsdog.read_image` returns), whose metadata is then used.
        metadata
            The frame's metadata (``Frame.metadata``), needed when the normalization reads
            header fields (``"ExposureTime": "header"``, ``{"Header": "KEY"}``) or the dark
            is scaled by the frame's exposure time; ``{}`` is a frame whose header has
            nothing.
        normalize
            ``False``: the corrected curve before the normalization (counts/pixel), e.g. to
            normalize by hand; the pixel corrections are applied all the same.

        Returns
        -------
        (q, I)
            Bin centres (nm⁻¹ unless the entry's ``Unit`` says otherwise) and the mean
            corrected intensity, in :attr:`unit` (``counts/pixel`` without a
            normalization, or with ``normalize=False``).

        Raises
        ------
        ValueError
            The result depends on the frame's header and no metadata is given (naming
            the field); a bare array cannot tell its exposure time.
        saxsdog.reduction.normalization.FrameNormalizationError
            The metadata lacks a header field the normalization reads, or it is ≤ 0.

        See Also
        --------
        curve : the whole curve (errors, unit, background-subtracted curve).
        """
        data, meta = _frame_parts(image, metadata)
        if self._plain and not self._clipping():  # today's path, byte for byte (version-1 files)
            return self.radial.x, self.radial.integrate(data)
        c = self.curve(data, meta, normalize=normalize, stddev=False)
        return c.x, c.intensity

    def integrate_with_errors(self, image: ImageLike, metadata: Mapping[str, Any] | None = None, *,
                              normalize: bool = True) -> np.ndarray:
        """Intensity, standard deviation and error of the first integrator, as rows of one array.

        The error is the calibration's ``ErrorModel`` (the ``.chi`` file's third column);
        corrections, normalization and the arguments as for :meth:`integrate`.
        """
        data, meta = _frame_parts(image, metadata)
        if self._plain and not self._clipping():
            return np.array(self.radial.integrate_with_errors(data))
        c = self.curve(data, meta, normalize=normalize, stddev=True)
        assert c.stddev is not None
        return np.array((c.intensity, c.stddev, c.poisson))

    def curve(self, image: ImageLike, metadata: Mapping[str, Any] | None = None, *, index: int = 0,
              normalize: bool = True, stddev: bool = True) -> Curve:
        """One integrator's whole curve for an image, as the pipeline computes it.

        Intensity, error (``poisson``, the calibration's error model), standard deviation,
        :attr:`~saxsdog.core.integrators.Curve.unit`, dummy and sigma-clip rejected pixel
        counts and, with a ``Background`` (and ``normalize``), the subtracted curve in
        ``subtracted``.  The classifiers are not run (:meth:`curves` runs them).

        Parameters
        ----------
        image, metadata, normalize
            As for :meth:`integrate`.
        index
            Which integrator (the order of :attr:`integrators`: masks, then slices).
        stddev
            ``False`` skips the standard deviation.

        Raises
        ------
        ValueError, FrameNormalizationError
            As :meth:`integrate`.
        """
        from .reduction.normalization import normalization

        data, meta = _frame_parts(image, metadata)
        it = self.integrators[index]
        self._check_metadata(meta, normalize)
        block = (self.config.get("Normalization") or {}) if normalize else {}
        factor = normalization(block, meta).factor if normalize else 1.0
        out = self._integrator_curve(it, data, stddev, factor, self._dark_scale(meta))
        out.unit = self.unit if normalize else "counts/pixel"
        bg = self._background[index] if normalize and self._background else None
        if bg is not None:
            from .reduction.background import subtract

            out.subtracted = subtract(out, *bg, parameters=it.parameters)
        return out

    def _clipping(self) -> bool:
        """Whether the corrections clip (the plain integrate path would not)."""
        return self.pixel_corrections is not None and self.pixel_corrections.sigma_clip is not None

    def _check_metadata(self, metadata: Mapping[str, Any] | None, normalize: bool, raw_hint: bool = True) -> None:
        """Refuse a bare array when the curve depends on the frame's header.

        Raises
        ------
        ValueError
            Naming the calibration field that reads the header.
        """
        if metadata is not None:
            return
        from .reduction.normalization import FIELDS

        block = self.config.get("Normalization") or {}
        hint = ("pass the frame's metadata (metadata=frame.metadata, or the Frame that saxsdog.read_image "
                "returns)")
        if normalize:
            for name in FIELDS:
                spec = block.get(name)
                if isinstance(spec, (str, Mapping)):
                    shown = json.dumps(spec)
                    raise ValueError(f"$.Normalization.{name} = {shown} reads the frame's header: {hint}"
                                     + (", or normalize=False for the curve before the normalization"
                                        if raw_hint else ""))
        if self.dark_exposure and not isinstance(block.get("ExposureTime"), (int, float)):
            raise ValueError(f"$.Corrections.DarkFile: the dark ({self.dark_exposure:g} s) is scaled by the "
                             f"frame's exposure time from its header: {hint}, or metadata={{}} for a frame "
                             "taken like the dark")

    def integral_parameters(self, intensity: np.ndarray) -> dict[str, float | None]:
        """I0, I1, I2, invariant and correlation length of a curve of the first integrator."""
        if isinstance(self.radial, RadialIntegrator):  # log bins, units and ranges integrate in q
            return self.radial.parameters(intensity)
        entry = self.radial.config
        return integral_parameters(self.radial.x, intensity, float(entry.get("qStart", 0.0)),
                                   entry.get("qStop"))

    def curves(self, image: np.ndarray, stddev: bool = True,
               metadata: Mapping[str, Any] | None = None) -> list[Curve]:
        """All integrators' curves (with errors and classifiers) for one image.

        ``stddev=False`` skips the standard deviation, which the output files do not store.
        The ``Classifiers`` run last, on the normalized (and subtracted) curves; the image
        classifiers get ``metadata`` too (e.g. the count cutoff).
        ``metadata`` is the frame's (:attr:`saxsdog.io.images.Frame.metadata`): the
        ``Normalization`` reads its exposure time and header fields, and the dark is
        scaled by the frame's exposure time over the dark's.  Each curve is multiplied by
        AbsoluteScale/(t·M·T·d) and carries its unit; with a ``Background`` each also
        holds its background-subtracted curve (:attr:`Curve.subtracted`).  Without
        ``metadata`` (``None``: a bare array, as the kernels' warm-up passes) the fields
        read from headers are not applied and the unit says so; an empty dict is a frame
        whose header has nothing, an error when a field needs it.

        Raises
        ------
        saxsdog.reduction.normalization.FrameNormalizationError
            This frame lacks a header field the normalization needs (or its value is not
            a positive number): an :class:`~saxsdog.errors.ImageError` of this image only.
        """
        if self._plain:  # nothing to normalize, no dark, no background: today's path
            curves = [it.curve(image, stddev) for it in self.integrators]
            self.classifiers.apply(curves, self.integrators, image, metadata)
            return curves
        from .reduction.normalization import normalization, unit

        block = self.config.get("Normalization") or {}
        curve_unit = self.unit
        if metadata is None:  # nothing known of the frame: only the constant fields apply
            block = {k: v for k, v in block.items() if not isinstance(v, (str, Mapping))}
            curve_unit = unit(block)
        norm = normalization(block, metadata)
        scale = norm.factor
        dark_scale = self._dark_scale(metadata)
        out = []
        for it in self.integrators:
            curve = self._integrator_curve(it, image, stddev, scale, dark_scale)
            curve.unit = curve_unit
            out.append(curve)
        if self._background:
            from .reduction.background import subtract

            for it, curve, bg in zip(self.integrators, out, self._background):
                if bg is not None:
                    curve.subtracted = subtract(curve, *bg, parameters=it.parameters)
        # last: the classifiers see the normalized (and background-subtracted) curves
        self.classifiers.apply(out, self.integrators, image, metadata)
        return out

    # -- corrections, normalization, background (calibration format version 2) ------
    def _pixel_corrections(self) -> Any:
        """The ``Corrections`` block as :class:`saxsdog.core.corrections.PixelCorrections`
        (dark and flat read here), or ``None`` when saxsdog has no corrections module.

        Raises
        ------
        CalibrationError
            A dark or flat that is missing, unreadable, of the wrong size or (flat) not
            positive on the pixels the masks use; corrections asked for without the
            corrections module.
        """
        block = self.config.get("Corrections") or {}
        if block.get("DummyValue") is not None and not block.get("MaskNegative", True):
            # the exclusion of dummies is one switch: a DummyValue would be silently ignored
            raise CalibrationError(
                f"DummyValue {block['DummyValue']:g} would have no effect: MaskNegative is false, which keeps every "
                "pixel (set MaskNegative true to exclude negative pixels and DummyValue, or DummyValue null)",
                "$.Corrections.DummyValue", block["DummyValue"], "null when MaskNegative is false")
        dark_file = self._correction_image(block.get("DarkFile", ""), "$.Corrections.DarkFile")
        flat_file = self._correction_image(block.get("FlatFile", ""), "$.Corrections.FlatFile")
        #: Exposure time of the dark (s) from its header, ``None`` when unknown or no dark.
        self.dark_exposure: float | None = None
        dark = flat = None
        if dark_file is not None:
            dark, self.dark_exposure = dark_file
            self._check_dark(dark, block["DarkFile"])
        if flat_file is not None:
            flat = flat_file[0]
            self._check_flat(flat, block["FlatFile"])
        try:
            from .core.corrections import PixelCorrections
        except ImportError:
            wanted = [name for name, on in (("DarkFile", dark is not None), ("FlatFile", flat is not None),
                                            ("SolidAngle", block.get("SolidAngle")),
                                            ("SigmaClip", block.get("SigmaClip") is not None),
                                            ("DummyValue", block.get("DummyValue") is not None)) if on]
            if wanted:
                raise CalibrationError(f"this saxsdog cannot apply {', '.join(wanted)} (no corrections module)",
                                       f"$.Corrections.{wanted[0]}", block.get(wanted[0]),
                                       "a saxsdog with saxsdog.core.corrections") from None
            return None
        clip = block.get("SigmaClip")
        try:
            return PixelCorrections(
                flat=flat, solid_angle=bool(block.get("SolidAngle", False)), polarization=self.polarization,
                dark=dark, mask_negative=bool(block.get("MaskNegative", True)),
                dummy_value=block.get("DummyValue"), error_model=block.get("ErrorModel", "poisson"),
                sigma_clip=None if clip is None else (float(clip.get("Sigma", 4)), int(clip.get("Cycles", 3))))
        except ValueError as exc:
            raise CalibrationError(str(exc), "$.Corrections", None, "valid corrections") from None

    def _image_frames(self, name: str, field: str) -> list[tuple[np.ndarray, Mapping[str, Any]]]:
        """The frames of an image file named in the calibration (relative to its folder;
        ``.npy`` of one or a stack of frames too), each as float64 with its metadata.

        Raises
        ------
        CalibrationError
            At ``field``: missing or unreadable file, a frame of the wrong size, no frame.
        """
        from .errors import ImageError
        from .io.images import iter_frames

        p = Path(name)
        if not p.is_absolute():
            p = self.base_dir / p
        expected = f"a {self.shape[0]}×{self.shape[1]} image"
        if not p.is_file():
            raise CalibrationError(f"file not found: {p}", field, name, "an existing image file")
        frames: list[tuple[np.ndarray, Mapping[str, Any]]] = []
        if p.suffix.lower() == ".npy":
            try:
                data = np.load(p, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CalibrationError(f"cannot read {p}: {exc}", field, name, "a .npy array") from None
            stack = data.reshape((-1, *data.shape[-2:])) if data.ndim >= 2 else data[None, None]
            frames = [(np.asarray(d, dtype=np.float64), {}) for d in stack]
        else:
            try:
                for frame in iter_frames(p, expected_shape=self.shape):
                    frames.append((np.asarray(frame.data, dtype=np.float64), frame.metadata))
            except ImageError as exc:
                raise CalibrationError(f"{p}: {exc.reason}", field, name, expected) from None
        if not frames:
            raise CalibrationError(f"{p} holds no frame", field, name, expected)
        shape = frames[0][0].shape
        if shape != tuple(self.shape):
            raise CalibrationError(f"{p}: image of shape {'×'.join(map(str, shape))} pixels, the detector has "
                                   f"{self.shape[0]}×{self.shape[1]}", field, name, expected)
        return frames

    def _correction_image(self, name: str, field: str) -> tuple[np.ndarray, float | None] | None:
        """A dark or flat file: the mean of its frames and its exposure time from its
        first frame's header (``None`` if unknown)."""
        if not name:
            return None
        frames = self._image_frames(name, field)
        data = frames[0][0] if len(frames) == 1 else np.mean([d for d, _ in frames], axis=0)
        # NaN or inf are refused only where the masks use the pixel (_check_dark, _check_flat):
        # flats and darks often hold NaN in the detector gaps, which the mask covers
        t = frames[0][1].get("exposure_time")
        exposure = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 else None
        return data, exposure

    def _used_pixels(self) -> np.ndarray:
        """Pixels some integrator may use: the union of the masks in use (all without a mask)."""
        indices: set[int] = set()
        if not self.config.get("GISAXSmode", False):
            indices.update(range(len(self.config["Masks"])))
        for entry in self.config.get("Slices", []):
            ref = int(entry.get("MaskRef", 0))
            if ref < 0:
                return np.ones(self.shape, dtype=bool)
            if ref < len(self.config["Masks"]):
                indices.add(ref)
        used = np.zeros(self.shape, dtype=bool)
        for i in sorted(indices):
            m = self.mask(i)
            if m is None:
                return np.ones(self.shape, dtype=bool)
            used |= m
        return used

    def _check_dark(self, dark: np.ndarray, name: str) -> None:
        bad = self._used_pixels() & ~np.isfinite(dark)
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            raise CalibrationError(
                f"the dark is not a finite number on {int(bad.sum()):,} pixels the masks use (first at row {r}, "
                f"column {c}: {float(dark[r, c]):g})", "$.Corrections.DarkFile", name,
                "finite dark values on every unmasked pixel (mask the others)")

    def _check_flat(self, flat: np.ndarray, name: str) -> None:
        bad = self._used_pixels() & ~(np.isfinite(flat) & (flat > 0))
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            raise CalibrationError(
                f"the flat field is zero, negative or not finite on {int(bad.sum()):,} pixels the masks use "
                f"(first at row {r}, column {c}: {float(flat[r, c]):g})", "$.Corrections.FlatFile", name,
                "a flat field > 0 on every unmasked pixel (mask the others)")

    def _integrator_kwargs(self, polarization: bool = True) -> dict[str, Any]:
        """Keyword arguments that hand the corrections to an integrator (none without them)."""
        if self.pixel_corrections is None:
            return {}
        corrections = self.pixel_corrections
        if not polarization and corrections.polarization is not None:
            import dataclasses

            corrections = dataclasses.replace(corrections, polarization=None)
        return {"corrections": corrections, "geometry": self.geometry}

    def _operator_polarization(self) -> tuple[float, float] | None:
        """The polarization built into the operators: none when the corrections carry it."""
        return None if self.pixel_corrections is not None else self.polarization

    def _integrator_curve(self, it: Integrator, image: np.ndarray, stddev: bool, scale: float,
                          dark_scale: float) -> Curve:
        if self.pixel_corrections is not None:  # the corrections module's curve(scale=, dark_scale=)
            return it.curve(image, stddev, scale=scale, dark_scale=dark_scale)  # type: ignore[call-arg,unused-ignore]
        curve = it.curve(image, stddev)  # without the corrections module: scaled here
        if scale != 1.0:
            intensity = curve.intensity * scale
            curve = Curve(curve.x, intensity, None if curve.stddev is None else curve.stddev * scale,
                          curve.poisson * scale, it.parameters(intensity), valid=curve.valid,
                          dummy_pixels=curve.dummy_pixels)
        return curve

    def _frame_exposure(self, metadata: Mapping[str, Any] | None) -> float | None:
        """A frame's exposure time: the Normalization's ExposureTime setting, else its header's."""
        from .reduction.normalization import FrameNormalizationError, normalization

        spec = (self.config.get("Normalization") or {}).get("ExposureTime")
        if metadata is None and not isinstance(spec, (int, float)):
            return None  # nothing known of the frame (the kernels' warm-up)
        if spec is not None:
            return normalization({"ExposureTime": spec}, metadata).exposure_time
        try:
            return normalization({"ExposureTime": "header"}, metadata).exposure_time
        except FrameNormalizationError:
            return None

    def _dark_scale(self, metadata: Mapping[str, Any] | None) -> float:
        """t_frame / t_dark when both are known, else 1 (the dark taken like the frames)."""
        if self.pixel_corrections is None or self.pixel_corrections.dark is None or not self.dark_exposure:
            return 1.0
        t = self._frame_exposure(metadata)
        return 1.0 if t is None else t / self.dark_exposure

    def _background_dark_scale(self, exposure: float | None, metadata: Mapping[str, Any]) -> float:
        """t_background / t_dark for a background image: its exposure time as its normalization
        took it (``Background.ExposureTime``, or the inherited setting), else its header's;
        1 when either is unknown.  Never an error: a background image whose exposure time
        comes from ``Background.ExposureTime`` needs no header (the frames' setting would
        look for one there)."""
        from .reduction.normalization import FrameNormalizationError, normalization

        if self.pixel_corrections is None or self.pixel_corrections.dark is None or not self.dark_exposure:
            return 1.0
        if exposure is None:
            try:
                exposure = normalization({"ExposureTime": "header"}, metadata).exposure_time
            except FrameNormalizationError:
                return 1.0
        return 1.0 if exposure is None else exposure / self.dark_exposure

    def _setup_reduction(self) -> None:
        """Normalization unit, the plain-path flag and the background (once per calibration)."""
        from .reduction.normalization import check_block, is_identity, unit

        block = self.config.get("Normalization") or {}
        check_block(block)
        #: Unit of the curves (see :mod:`saxsdog.reduction.normalization`).
        self.unit = unit(block)
        self._background: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
        dark = self.pixel_corrections is not None and self.pixel_corrections.dark is not None
        self._plain = is_identity(block) and not dark and "Background" not in self.config
        if "Background" in self.config:
            self._background = self._prepare_background(self.config["Background"], block)

    def _prepare_background(self, bg: Mapping[str, Any], block: Mapping[str, Any]
                            ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """The background on every integrator's bins, normalized and scaled by its Scale."""
        from .reduction import background as bgmod
        from .reduction.normalization import FrameNormalizationError, check_block, normalization

        name = bg["File"]
        p = Path(name)
        if not p.is_absolute():
            p = self.base_dir / p
        if not p.is_file():
            raise CalibrationError(f"background file not found: {p}", "$.Background.File", name,
                                   "an existing curve or image file")
        specs = bgmod.background_specs(bg, block)
        check_block({k: v for k, (v, _) in specs.items()}, "$.Background")
        k = float(bg.get("Scale", 1.0))
        if bgmod.is_curve_file(p):
            curve = bgmod.read_background_curve(p)
            if bgmod.normalized_like(curve, self.unit, bg):  # e.g. reduced with this calibration
                f = k
            else:
                bgmod.check_curve_specs(specs)
                f = k * normalization(block, None, overrides=specs).factor
            out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
            for j, it in enumerate(self.integrators):
                if it.kind != "Radial":
                    out.append(None)  # azimuth or slice axes: a q curve does not apply
                    continue
                # radial integrators are the masks', in order: name the calibration entry
                label = f"$.Masks[{j}] integrator" + (f" ({it.name})" if it.name else "")
                intensity, error, valid = bgmod.on_grid(curve, it.x, label)
                out.append((f * intensity, f * error, valid))
            return out
        per_integrator: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in self.integrators]
        for data, meta in self._image_frames(name, "$.Background.File"):
            try:
                norm = normalization(block, meta, overrides=specs)
            except FrameNormalizationError as exc:
                raise CalibrationError(f"background image {p.name}: {exc.reason}", exc.field.split(" ")[0],
                                       name, "a header with that field") from None
            f = k * norm.factor
            dark_scale = self._background_dark_scale(norm.exposure_time, meta)
            for j, it in enumerate(self.integrators):
                c = self._integrator_curve(it, data, False, 1.0, dark_scale)
                per_integrator[j].append((f * c.intensity, f * c.poisson, np.asarray(c.has_data)))
        return [bgmod.mean_curve(curves) for curves in per_integrator]

    def output_suffixes(self) -> list[str]:
        """File-name suffix of each integrator's output (``""`` for the first)."""
        return [_output_suffix(it.kind, i) for i, it in enumerate(self.integrators)]

    def chi_bytes(self, curves: list[Curve]) -> list[bytes]:
        """Render curves as ``.chi`` file contents (x, I, error).

        The intensity label is the original's ``Intensity (Count/Pixel)`` for curves in
        counts per pixel and names the curve's unit otherwise (``Intensity (1/cm/sr)``).
        """
        if self._formatters is None:  # a cake is no curve: its file is <stem>_cake.h5 (b"" here)
            self._formatters = [ChiFormatter(it.x, self.raw, [it.x_label, "Intensity (Count/Pixel)", "Error Margin"])
                                if it.kind != "Cake" else None for it in self.integrators]
        return [f.render(c.intensity, c.poisson, c.parameters, unit=c.unit) if f is not None else b""
                for f, c in zip(self._formatters, curves)]

    def write_chi(self, image: ImageLike, path: str | os.PathLike[str],
                  metadata: Mapping[str, Any] | None = None) -> list[Path]:
        """Integrate an image and write every integrator's ``.chi`` file atomically.

        The first integrator writes ``path``; later ones add ``_c<kind letter><n>`` before
        the extension, as the original.  ``image`` is the pixels or a
        :class:`saxsdog.io.images.Frame`; ``metadata`` the frame's, as for :meth:`integrate`
        (a bare array is refused when the normalization or the dark's scaling reads the
        frame's header, rather than written without it).

        Returns
        -------
        list of Path
            The files written.
        """
        image, metadata = _frame_parts(image, metadata)
        self._check_metadata(metadata, True, raw_hint=False)
        path = Path(path)
        stem = path.name[:-4] if path.name.endswith(".chi") else path.name
        written = []
        curves = self.curves(image, stddev=False, metadata=metadata)
        for it, c, suffix, content in zip(self.integrators, curves, self.output_suffixes(), self.chi_bytes(curves)):
            if isinstance(it, CakeIntegrator):
                from .io.cake import write_cake

                target = path.with_name(stem + suffix + "_cake.h5")
                write_cake(target, it, c, stem)
            else:
                target = path.with_name(stem + suffix + ".chi")
                atomic_write_bytes(target, content)
            written.append(target)
        return written

    def __repr__(self) -> str:
        kinds = ", ".join(f"{it.kind}({it.operator.n_bins} bins)" for it in self.integrators)
        return f"<Calibration {self.config.get('Title', '')!r} {self.shape[0]}x{self.shape[1]}: {kinds}>"


class Slice(SliceIntegrator):
    """A GISAXS slice of a calibration (the original SAXSDOG manual, §5.8).

    Parameters
    ----------
    calibration
        The calibration (geometry and masks).
    config
        The slice entry: Direction, Plane, CutPosition, CutMargin, IncidentAngle, MaskRef.
    index
        Position in ``Slices`` (for error messages).
    """

    def __init__(self, calibration: Calibration, config: Mapping[str, Any], index: int = 0):
        entry = CALIBRATION.doc.with_defaults(dict(config), CALIBRATION.doc.subschema("Slices", "*"))
        ref = int(entry["MaskRef"])
        json_path = f"$.Slices[{index}]"
        if ref >= len(calibration.config["Masks"]):
            raise CalibrationError(f"MaskRef {ref} names no mask ({len(calibration.config['Masks'])} defined)",
                                   json_path + ".MaskRef", ref, "-1 or the index of a mask")
        mask = calibration.mask(ref) if ref >= 0 else None
        try:
            op = build_slice_operator(calibration.geometry, mask, entry["Direction"], entry["Plane"],
                                      int(entry["CutPosition"]), int(entry["CutMargin"]),
                                      float(entry["IncidentAngle"]), entry.get("Reference", "direct"))
        except ValueError as exc:
            raise CalibrationError(str(exc), json_path, entry.get("CutPosition"),
                                   "a band inside the detector") from None
        # slices never had a polarization correction: the corrections without it
        super().__init__(op, entry, f"slice{index}", calibration.method,
                         **calibration._integrator_kwargs(polarization=False))
