"""Plots: a curve as SVG, an image as PNG, the live monitor, the web leash's mask preview."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import import_optional
from ..io.atomic import atomic_output


def _pyplot(interactive: bool = False):
    import_optional("matplotlib", "plot", "the live plot (-m)")
    import matplotlib

    if not interactive:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def intensity_axis_label(unit: str | None) -> str:
    """The intensity axis label of a curve in ``unit`` (saxsdog's unit strings)."""
    return f"Intensity [{unit or 'counts/pixel'}]"


def curve_figure(x: np.ndarray, intensity: np.ndarray, error: np.ndarray | None = None,
                 title: str = "", fig=None, unit: str | None = None,
                 subtracted: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
                 x_label: str | None = None):
    """A log-intensity plot of a curve with its error band (empty bins left out).

    Parameters
    ----------
    x, intensity, error
        The curve.
    title
        The plot's title.
    fig
        A figure to draw into (cleared first), else a new one.
    unit
        The intensity's unit (:attr:`saxsdog.core.integrators.Curve.unit`), shown on the axis.
    subtracted
        ``(x, intensity, error)`` of the background-subtracted curve, drawn as a second
        trace (dashed) when given.
    x_label
        The x axis label (the integrator's column label: its radial unit, or χ for Phi-mode);
        default q in nm⁻¹.
    """
    import_optional("matplotlib", "plot", "curve plots (-s)")
    from matplotlib.figure import Figure

    fig = fig or Figure(figsize=(7, 4.5))
    fig.clf()
    ax = fig.add_subplot(111)
    x, intensity = np.asarray(x), np.asarray(intensity)
    nz = intensity > 0
    if error is not None:
        err = np.asarray(error)
        ax.fill_between(x[nz], np.clip(intensity[nz] - err[nz], 1e-12, None), intensity[nz] + err[nz],
                        alpha=0.3, linewidth=0, label="error")  # the calibration's error model
    ax.plot(x[nz], intensity[nz], lw=1.2, label="I")
    if subtracted is not None:
        sx, si = np.asarray(subtracted[0]), np.asarray(subtracted[1])
        snz = si > 0  # a log axis shows the positive part of the difference
        ax.plot(sx[snz], si[snz], lw=1.2, ls="--", label="I - background")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel(x_label or "q [nm$^{-1}$]")
    ax.set_ylabel(intensity_axis_label(unit))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))


def write_curve_plot(curve, path: str | os.PathLike[str], title: str = "", unit: str | None = None,
                     x_label: str | None = None) -> None:
    """Write a curve (a :class:`~saxsdog.core.integrators.Curve`) as SVG/PNG by suffix.

    Its background-subtracted curve, if it has one, is drawn too; ``unit`` defaults to the
    curve's own; ``x_label`` labels the x axis (default q in nm⁻¹).
    """
    sub = curve.subtracted
    _save(curve_figure(curve.x, curve.intensity, curve.poisson, title, unit=unit or curve.unit,
                       subtracted=None if sub is None else (sub.x, sub.intensity, sub.poisson),
                       x_label=x_label), Path(path))


def write_image_png(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an image as a log-scaled PNG (negative/dead pixels shown dark)."""
    import_optional("matplotlib", "plot", "image PNGs (-p)")
    import matplotlib.image

    data = np.log10(np.clip(np.asarray(image, dtype=np.float64), 1, None))
    with atomic_output(path) as tmp:
        matplotlib.image.imsave(tmp, data, cmap="viridis", origin="upper", format="png")


def mask_preview_png(calibration: Mapping[str, Any], shape: tuple[int, int], image: np.ndarray | None = None,
                     valid: np.ndarray | None = None, title: str = "", notes: Sequence[str] = (),
                     max_pixels: int = 1400) -> bytes:
    """A PNG of an image (log scale) with a mask, the slices and the beam centre drawn on it.

    Parameters
    ----------
    calibration
        The calibration being edited: ``Slices`` and ``Geometry.BeamCenter`` are drawn
        (FIT2D convention: Y counted from the bottom edge, in pixels).
    shape
        ``(rows, columns)`` of the detector.
    image
        The image shown under the mask (optional; a grey field without one).
    valid
        Boolean mask, ``True`` where a pixel is used; the others are shown red.
    title
        Title of the picture.
    notes
        Lines printed at the bottom (what was loaded, what was not).
    max_pixels
        Larger images are decimated to about this many pixels along an axis.

    Returns
    -------
    bytes
        The PNG.
    """
    import io
    import math

    import_optional("matplotlib", "plot", "the mask preview")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    notes = list(notes)
    rows, cols = shape
    step = max(1, math.ceil(max(rows, cols) / max_pixels))
    fig = Figure(figsize=(7.2, 7.2 * min(max(rows / cols, 0.4), 2.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    extent = (0, cols, rows, 0)  # continuous pixel coordinates, row 0 at the top
    if image is not None:
        shown = np.asarray(image, dtype=np.float64)[::step, ::step]
        with np.errstate(invalid="ignore", divide="ignore"):
            logimg = np.where(shown > 0, np.log10(np.where(shown > 0, shown, 1.0)), np.nan)
        im = ax.imshow(logimg, cmap="viridis", extent=extent, interpolation="nearest", aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log10(counts)")
    else:
        ax.imshow(np.full((2, 2), 0.85), cmap="gray", vmin=0, vmax=1, extent=extent, aspect="equal")
    if valid is not None:
        masked = ~np.asarray(valid, dtype=bool)[::step, ::step]
        overlay = np.zeros(masked.shape + (4,), dtype=np.float32)
        overlay[masked] = (1.0, 0.1, 0.1, 0.45)
        ax.imshow(overlay, extent=extent, interpolation="nearest", aspect="equal")
        notes.append(f"{int(np.count_nonzero(valid)):,} of {np.size(valid):,} pixels used (red: masked)")
    slices: list[Any] = calibration["Slices"] if isinstance(calibration.get("Slices"), list) else []
    for sl in slices:
        if not isinstance(sl, dict):
            continue
        try:
            pos, margin = float(sl.get("CutPosition", 0)), float(sl.get("CutMargin", 1))
        except (TypeError, ValueError):
            continue
        if sl.get("Direction", "x") == "x":
            y = rows - pos
            ax.axhspan(y - margin, y + margin, color="orange", alpha=0.5)
        else:
            x = pos - 0.5
            ax.axvspan(x - margin, x + margin, color="orange", alpha=0.5)
    geom: Mapping[str, Any] = calibration["Geometry"] if isinstance(calibration.get("Geometry"), dict) else {}
    try:
        y_c, x_c = float(geom["BeamCenter"][0]), float(geom["BeamCenter"][1])
    except (KeyError, TypeError, ValueError, IndexError):
        notes.append("no beam centre")
    else:
        bx, by = x_c, rows - y_c  # FIT2D: Y counted from the bottom edge
        ax.plot([bx], [by], marker="+", markersize=22, mew=2.5, color="white", clip_on=False)
        ax.plot([bx], [by], marker="o", markersize=12, mfc="none", mew=1.5, color="red", clip_on=False)
        inside = 0 <= bx <= cols and 0 <= by <= rows
        notes.append(f"beam centre Y={y_c:g}, X={x_c:g}" + ("" if inside else " (outside the detector)"))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("row from the top (pixels)")
    ax.set_title(title or "mask preview", fontsize=10)
    fig.text(0.01, 0.005, "; ".join(notes), fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class PlotMonitor:
    """The live plot of ``-m``: a window when a display exists, else a PNG file."""

    def __init__(self, fallback_png: str | os.PathLike[str]):
        self.png = Path(fallback_png)
        self.interactive = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        self._plt = None
        self._fig = None
        if self.interactive:
            try:
                self._plt = _pyplot(interactive=True)
                self._plt.ion()
                self._fig = self._plt.figure(figsize=(7, 4.5))
            except Exception:
                self.interactive = False

    def update(self, x: Sequence[float], intensity: Sequence[float], error: Sequence[float] | None,
               title: str, unit: str | None = None,
               subtracted: tuple[Sequence[float], Sequence[float], Sequence[float] | None] | None = None,
               x_label: str | None = None) -> None:
        """Show a curve (``unit`` on the axis, a background-subtracted curve as a second trace,
        ``x_label`` the x column's label)."""
        sub = None if subtracted is None else (np.asarray(subtracted[0]), np.asarray(subtracted[1]), None)
        err = None if error is None else np.asarray(error)
        if self.interactive and self._plt is not None:
            curve_figure(np.asarray(x), np.asarray(intensity), err, title, fig=self._fig, unit=unit, subtracted=sub,
                         x_label=x_label)
            self._plt.pause(0.001)
        else:
            self.png.parent.mkdir(parents=True, exist_ok=True)
            _save(curve_figure(np.asarray(x), np.asarray(intensity), err, title, unit=unit, subtracted=sub,
                               x_label=x_label), self.png)
