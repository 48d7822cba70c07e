"""The calibration a fit produces, its text report and its picture."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from saxsdog.config import CALIBRATION

from .fit import CalibrationFit

__all__ = ["calibration_from_fit", "report_text", "save_picture"]


def calibration_from_fit(fit: CalibrationFit, template: Mapping[str, Any] | None = None,
                         title: str | None = None) -> dict[str, Any]:
    """A calibration (as written to a file) with the fitted geometry.

    Parameters
    ----------
    fit
        The fit.
    template
        A loaded or raw calibration whose other fields (masks, slices, polarization, ...) are
        kept; without one, a calibration with one unmasked radial integration.
    title
        Title of a new calibration (ignored with a template).
    """
    g = fit.geometry
    fitted = {
        "BeamCenter": [round(g.beam_center[0], 4), round(g.beam_center[1], 4)],
        "DetectorDistanceMM": round(g.distance_mm, 4),
        "ImageSize": [int(g.shape[0]), int(g.shape[1])],
        "PixelSizeMicroM": [float(g.pixel_size_um[0]), float(g.pixel_size_um[1])],
        "Tilt": {"TiltAngleDeg": round(g.tilt_deg, 5), "TiltRotDeg": round(g.tilt_rotation_deg, 4)},
    }
    wavelength = round(g.wavelength_A, 7) if fit.refined_wavelength else g.wavelength_A
    if template is not None:
        doc = CALIBRATION.load(copy.deepcopy(dict(template)))
        doc["Geometry"].update(fitted)
        doc["Wavelength"] = wavelength
    else:
        doc = CALIBRATION.load({
            "Title": title or f"{fit.calibrant} calibration",
            "Geometry": fitted,
            "Masks": [{"MaskFile": "", "Oversampling": 3, "PixelPerRadialElement": 1, "qStart": 0.0,
                       "qStop": 0.0}],
            "Wavelength": wavelength,
        })
    written = CALIBRATION.for_file(doc)
    CALIBRATION.load(written)  # the same checks as reading it back
    return written


def report_text(fit: CalibrationFit, image_name: str = "") -> str:
    """A plain-text report: parameters with uncertainties, residuals per ring, run time."""
    g = fit.geometry
    u = fit.uncertainties
    lines = [f"saxsdog calibrate: {fit.calibrant}" + (f" on {image_name}" if image_name else ""), ""]
    # first, where they are read: a warning may mean the numbers below are not to be used
    for w in fit.warnings:
        lines.append(f"Warning: {w}")
    if fit.warnings:
        lines.append("")
    lines.append("Geometry (FIT2D convention; BeamCenter Y from the bottom edge, X from the left), ± one sigma")
    lines.append(f"(from the least-squares Jacobian, inflated {math.sqrt((1 + fit.residual_correlation) / (1 - fit.residual_correlation)):.2f}x "
                 f"for the correlation {fit.residual_correlation:.2f} of neighbouring points' residuals):")
    lines.append(f"  BeamCenter Y        {g.beam_center[0]:12.4f} ± {u['BeamCenterY']:.4f} px")
    lines.append(f"  BeamCenter X        {g.beam_center[1]:12.4f} ± {u['BeamCenterX']:.4f} px")
    lines.append(f"  Distance            {g.distance_mm:12.4f} ± {u['DetectorDistanceMM']:.4f} mm")
    lines.append(f"  Tilt angle          {g.tilt_deg:12.5f} ± {u['TiltAngleDeg']:.5f} deg")
    rot_u = u.get("TiltRotDeg", float("nan"))
    lines.append(f"  Tilt rotation       {g.tilt_rotation_deg:12.4f} ± {rot_u:.4f} deg"
                 + ("  (undetermined at zero tilt)" if not math.isfinite(rot_u) else ""))
    if fit.refined_wavelength:
        lines.append(f"  Wavelength          {g.wavelength_A:12.6f} ± {u['WavelengthA']:.6f} Å (refined)")
    else:
        lines.append(f"  Wavelength          {g.wavelength_A:12.6f} Å (fixed)")
    lines.append(f"  Pixel size          {g.pixel_size_um[0]:g} x {g.pixel_size_um[1]:g} µm")
    lines.append("")
    lines.append(f"Residuals per ring ({fit.points_row.size} control points, RMS {fit.rms_px:.3f} px; "
                 f"{fit.consistency:.2f} times the RMS of each ring fitted alone):")
    lines.append("  line   d [Å]      2θ [deg]  q [1/nm]   points  RMS [px]  mean [px]")
    qf = 4 * math.pi / (g.wavelength_A * 0.1)
    for r in fit.rings:
        q = qf * math.sin(math.radians(r.two_theta_deg) / 2)
        lines.append(f"  {r.line + 1:4d}  {r.d_spacing_A:9.4f}  {r.two_theta_deg:9.4f}  {q:8.4f}  {r.points:7d}  "
                     f"{r.rms_px:8.3f}  {r.mean_px:+9.3f}")
    lines.append("")
    lines.append(f"Run time: {fit.elapsed_s:.2f} s")
    return "\n".join(lines) + "\n"


def save_picture(fit: CalibrationFit, image: np.ndarray, path: str | os.PathLike[str],
                 valid: np.ndarray | None = None) -> None:
    """A PNG (or any format matplotlib writes) of the image, log scale, with the fitted rings
    and the control points."""
    from saxsdog.extras import import_optional

    matplotlib = import_optional("matplotlib", "plot", "saxsdog calibrate --picture")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    g = fit.geometry
    data = np.asarray(image, dtype=np.float64)
    shown = np.where((data > 0) & (valid if valid is not None else True), data, np.nan)
    fig = Figure(figsize=(9, 9 * g.shape[0] / g.shape[1] + 0.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    finite = shown[np.isfinite(shown)]
    lo, hi = (np.percentile(finite, [1, 99.8]) if finite.size else (1.0, 10.0))
    ax.imshow(np.log10(shown), cmap="viridis", vmin=math.log10(max(lo, 1e-3)), vmax=math.log10(max(hi, lo * 10)),
              interpolation="nearest", origin="upper")
    tth = g.two_theta()
    levels = sorted({math.radians(r.two_theta_deg) for r in fit.rings})
    if levels:
        ax.contour(np.arange(g.shape[1]), np.arange(g.shape[0]), tth, levels=levels, colors="red",
                   linewidths=0.7)
    # control points: continuous coordinates, pixel centres at +0.5 (imshow puts them at integers)
    ax.scatter(fit.points_col - 0.5, fit.points_row - 0.5, s=2.0, c="magenta", linewidths=0)
    ax.plot([g.beam_center[1] - 0.5], [g.shape[0] - g.beam_center[0] - 0.5], "r+", ms=12)
    ax.set_xlim(-0.5, g.shape[1] - 0.5)
    ax.set_ylim(g.shape[0] - 0.5, -0.5)
    ax.set_title(f"{fit.calibrant}: {g.distance_mm:.2f} mm, centre Y {g.beam_center[0]:.2f} X {g.beam_center[1]:.2f}, "
                 f"tilt {g.tilt_deg:.3f}° at {g.tilt_rotation_deg:.1f}°, RMS {fit.rms_px:.2f} px", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
