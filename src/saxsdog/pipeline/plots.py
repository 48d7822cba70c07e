"""Plots written by the pipeline: a curve as SVG, an image as PNG, the live monitor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io.atomic import atomic_output


def _pyplot(interactive: bool = False):
    import matplotlib

    if not interactive:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def curve_figure(x: np.ndarray, intensity: np.ndarray, error: np.ndarray | None = None,
                 title: str = "", fig=None):
    """A log-intensity plot of a curve with its error band (empty bins left out)."""
    from matplotlib.figure import Figure

    fig = fig or Figure(figsize=(7, 4.5))
    fig.clf()
    ax = fig.add_subplot(111)
    x, intensity = np.asarray(x), np.asarray(intensity)
    nz = intensity > 0
    if error is not None:
        err = np.asarray(error)
        ax.fill_between(x[nz], np.clip(intensity[nz] - err[nz], 1e-12, None), intensity[nz] + err[nz],
                        alpha=0.3, linewidth=0, label="Poisson error")
    ax.plot(x[nz], intensity[nz], lw=1.2, label="I")
    ax.set_yscale("log")
    ax.set_xlabel("q [nm$^{-1}$]")
    ax.set_ylabel("Intensity [counts/pixel]")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))


def write_curve_plot(curve, path: str | os.PathLike[str], title: str = "") -> None:
    """Write a curve (a :class:`~saxsdog.core.integrators.Curve`) as SVG/PNG by suffix."""
    _save(curve_figure(curve.x, curve.intensity, curve.poisson, title), Path(path))


def write_image_png(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an image as a log-scaled PNG (negative/dead pixels shown dark)."""
    import matplotlib.image

    data = np.log10(np.clip(np.asarray(image, dtype=np.float64), 1, None))
    with atomic_output(path) as tmp:
        matplotlib.image.imsave(tmp, data, cmap="viridis", origin="upper", format="png")


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
               title: str) -> None:
        if self.interactive and self._plt is not None:
            curve_figure(np.asarray(x), np.asarray(intensity), None if error is None else np.asarray(error),
                         title, fig=self._fig)
            self._plt.pause(0.001)
        else:
            self.png.parent.mkdir(parents=True, exist_ok=True)
            _save(curve_figure(np.asarray(x), np.asarray(intensity),
                               None if error is None else np.asarray(error), title), self.png)
