"""The calibration: validated configuration plus the integrators it defines.

A calibration file (JSON, as described in the original SAXSDOG manual) loads unchanged;
:data:`saxsdog.config.CALIBRATION` checks it against ``saxsdog/schemas/calibration.schema.json``
(unknown keys are refused, ``x-`` keys are private notes), maps the original's spellings
of two geometry fields to ``DetectorDistanceMM``/``ImageSize`` (only :mod:`saxsdog.config`
knows the original's), stamps the format ``Version`` and adds the schema's defaults: that
is :attr:`Calibration.config`;
:attr:`Calibration.raw` keeps the file as it was (the ``.chi`` headers copy it).  Each entry of ``Masks`` gives a radial (or Phi-mode) integrator,
each entry of ``Slices`` a GISAXS slice; ``GISAXSmode`` keeps only the slices.

>>> cal = Calibration("cal.json")                      # doctest: +SKIP
>>> q, I = cal.integrate(image)                         # doctest: +SKIP
>>> I, stddev, poisson = cal.integrate_with_errors(image)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .config import CALIBRATION
from .core.geometry import Geometry
from .core.integrators import (Curve, Integrator, PhiIntegrator, RadialIntegrator, SliceIntegrator,
                               integral_parameters)
from .core.operator import (BinningOperator, build_phi_operator, build_radial_operator,
                            build_slice_operator)
from .errors import CalibrationError
from .io.atomic import atomic_write_bytes
from .io.chi import ChiFormatter
from .io.masks import read_mask, read_mask_bytes
from .io.operator_cache import OperatorCache, default_cache_dir, operator_key
# The web page's translator imports these two; saxsdog.config.calibration_problems replaces it.
from .schemas import expected_text as _expected, json_path as _json_path  # noqa: F401

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
        #: The calibration in saxsdog's spellings, with ``Version`` and every default.
        self.config: dict[str, Any] = CALIBRATION.load(raw)
        self.base_dir = Path(base_dir) if base_dir is not None else default_base
        self.method = method
        self._attachments: dict[int | str, bytes] = dict((attachments or {}).items())
        self._attachment_names = dict(attachment_names or {})
        if cache is True:
            cache_dir = default_cache_dir()
        elif cache is False or cache is None:
            cache_dir = None
        else:
            cache_dir = Path(cache)
        self.cache = OperatorCache(cache_dir) if cache_dir is not None else None
        self.geometry = self._geometry()
        self._masks: dict[int, np.ndarray | None] = {}
        self._formatters: list[ChiFormatter] | None = None
        self.integrators: list[Integrator] = self._build_integrators()
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
        if self.cache is None:
            return build()
        key = operator_key(params, mask)
        op = self.cache.load(key)
        if op is None:
            log.info("building %s operator (not in cache %s)", params.get("kind"), self.cache.directory)
            op = build()
            self.cache.store(key, op)
        return op

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
                mask = self.mask(i)
                ov = int(entry["Oversampling"])
                pol = self.polarization
                if entry.get("Phi-mode", False):
                    q_stop = float(entry["qStop"]) if entry["qStop"] > 0 else np.inf
                    q_range = (float(entry["qStart"]), q_stop)
                    params = {"kind": "Phi", **gparams, "ov": ov, "q_range": [q_range[0], str(q_stop)],
                              "pol": pol}
                    op = self._cached(params, mask, functools.partial(
                        build_phi_operator, self.geometry, mask, ov, q_range, polarization=pol))
                    integrators.append(PhiIntegrator(op, entry, entry.get("Name", ""), self.method))
                else:
                    ppre = float(entry["PixelPerRadialElement"])
                    params = {"kind": "Radial", **gparams, "ov": ov, "ppre": ppre, "pol": pol}
                    op = self._cached(params, mask, functools.partial(
                        build_radial_operator, self.geometry, mask, ov, ppre, polarization=pol))
                    integrators.append(RadialIntegrator(op, entry, entry.get("Name", ""), self.method))
        for j, entry in enumerate(self.config.get("Slices", [])):
            integrators.append(Slice(self, entry, index=j))
        if not integrators:
            raise CalibrationError("nothing to integrate: no masks" +
                                   (" and no slices in GISAXSmode" if self.config.get("GISAXSmode") else ""),
                                   "$.Masks", self.raw.get("Masks"), "at least one mask or slice")
        return integrators

    def _build_classifiers(self):
        """The ``Classifiers`` (see :mod:`saxsdog.classifiers`); the integral parameters always."""
        from .classifiers import ClassifierContext, build_classifiers

        radial = next((it for it in self.integrators if it.kind == "Radial"), None)
        nrows = self.shape[0]
        y_c, x_c = self.geometry.beam_center
        context = ClassifierContext(self.shape, q=None if radial is None else np.asarray(radial.x),
                                    q_map=self.geometry.q, base_dir=self.base_dir,
                                    # the beam centre as (row, column) array indices
                                    extra={"beam_center_rc": (nrows - y_c - 0.5, x_c - 0.5)})
        classifiers = build_classifiers(self.config.get("Classifiers"), context)
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

    def integrate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integrate an image with the first integrator.

        Returns
        -------
        (q, I)
            Bin centres (nm⁻¹) and mean intensity (counts/pixel).
        """
        return self.radial.x, self.radial.integrate(image)

    def integrate_with_errors(self, image: np.ndarray) -> np.ndarray:
        """Intensity, standard deviation and Poisson error, as rows of one array."""
        return np.array(self.radial.integrate_with_errors(image))

    def integral_parameters(self, intensity: np.ndarray) -> dict[str, float | None]:
        """I0, I1, I2, invariant and correlation length of a curve of the first integrator."""
        entry = self.radial.config
        return integral_parameters(self.radial.x, intensity, float(entry.get("qStart", 0.0)),
                                   entry.get("qStop"))

    def curves(self, image: np.ndarray, stddev: bool = True, metadata: Mapping | None = None) -> list[Curve]:
        """All integrators' curves (with errors and classifiers) for one image.

        ``stddev=False`` skips the standard deviation, which the output files do not store.
        ``metadata`` (the frame's) is given to the image classifiers (e.g. the count cutoff).
        """
        curves = [it.curve(image, stddev) for it in self.integrators]
        self.classifiers.apply(curves, self.integrators, image, metadata)
        return curves

    def output_suffixes(self) -> list[str]:
        """File-name suffix of each integrator's output (``""`` for the first)."""
        return [_output_suffix(it.kind, i) for i, it in enumerate(self.integrators)]

    def chi_bytes(self, curves: list[Curve]) -> list[bytes]:
        """Render curves as ``.chi`` file contents (x, I, Poisson error)."""
        if self._formatters is None:
            self._formatters = [ChiFormatter(it.x, self.raw, [it.x_label, "Intensity (Count/Pixel)", "Error Margin"])
                                for it in self.integrators]
        return [f.render(c.intensity, c.poisson, c.parameters) for f, c in zip(self._formatters, curves)]

    def write_chi(self, image: np.ndarray, path: str | os.PathLike[str]) -> list[Path]:
        """Integrate an image and write every integrator's ``.chi`` file atomically.

        The first integrator writes ``path``; later ones add ``_c<kind letter><n>`` before
        the extension, as the original.

        Returns
        -------
        list of Path
            The files written.
        """
        path = Path(path)
        stem = path.name[:-4] if path.name.endswith(".chi") else path.name
        written = []
        for suffix, content in zip(self.output_suffixes(), self.chi_bytes(self.curves(image, stddev=False))):
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
                                      float(entry["IncidentAngle"]))
        except ValueError as exc:
            raise CalibrationError(str(exc), json_path, entry.get("CutPosition"),
                                   "a band inside the detector") from None
        super().__init__(op, entry, f"slice{index}", calibration.method)
