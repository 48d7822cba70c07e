"""Processing one image file: read → integrate → write.  Runs inside worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import Calibration
from ..errors import ImageError
from ..io.chi import atomic_write_bytes
from ..io.images import iter_frames, read_header
from .naming import output_base
from .options import QueueOptions
from .tasks import ImageResult, ImageTask


class ImageProcessor:
    """Turns an :class:`ImageTask` into :class:`ImageResult` objects (one per frame).

    Parameters
    ----------
    calibration
        The calibration (its operators are shared read-only with forked workers).
    options
        Queue options.
    """

    def __init__(self, calibration: Calibration, options: QueueOptions):
        self.calibration = calibration
        self.options = options
        self.suffixes = calibration.output_suffixes()
        self.keys = [f"{it.kind[0]}{i}" for i, it in enumerate(calibration.integrators)]
        self._last_curves = -1e9

    def outputs_for(self, task: ImageTask, frame: int | None) -> list[Path]:
        """All output files of one frame (``frame=None`` for single-frame files)."""
        base = output_base(task.path, task.root, self.options, frame)
        return [base.with_name(base.name + s + ".chi") for s in self.suffixes]

    def _existing(self, outputs: list[Path]) -> bool:
        return all(p.is_file() for p in outputs)

    def process(self, task: ImageTask) -> list[ImageResult]:
        """Process every frame of the task's file; errors become failed results."""
        results: list[ImageResult] = []
        skip_existing = self.options.resume or not self.options.overwrite
        frames = iter_frames(task.path, expected_shape=self.calibration.shape)
        t_read = time.perf_counter()
        try:
            for frame in frames:
                read_s = time.perf_counter() - t_read
                index = frame.index if frame.nframes > 1 else None
                outputs = self.outputs_for(task, index)
                if skip_existing and self._existing(outputs):
                    results.append(ImageResult(task.path, frame.index, [str(p) for p in outputs],
                                               skipped=True, processed_at=time.time(), worker=os.getpid()))
                else:
                    results.append(self._integrate_frame(task, frame, outputs, read_s))
                t_read = time.perf_counter()
        except ImageError as exc:
            results.append(ImageResult(task.path, len(results), error=exc.reason, retryable=exc.retryable,
                                       processed_at=time.time(), worker=os.getpid()))
        except Exception as exc:  # never let one image take the worker down
            results.append(ImageResult(task.path, len(results), error=f"{type(exc).__name__}: {exc}",
                                       processed_at=time.time(), worker=os.getpid()))
        return results

    def _integrate_frame(self, task: ImageTask, frame, outputs: list[Path], read_s: float) -> ImageResult:
        t0 = time.perf_counter()
        curves = self.calibration.curves(frame.data)
        contents = self.calibration.chi_bytes(curves)
        t1 = time.perf_counter()
        outputs[0].parent.mkdir(parents=True, exist_ok=True)
        for path, content in zip(outputs, contents):
            atomic_write_bytes(path, content)
        if self.options.write_svg:
            from .plots import write_curve_plot

            write_curve_plot(curves[0], outputs[0].with_suffix(".svg"), title=Path(task.path).name)
        if self.options.write_png:
            from .plots import write_image_png

            write_image_png(frame.data, outputs[0].with_suffix(".png"))
        t2 = time.perf_counter()
        meta = dict(frame.metadata)
        image_time = meta.get("timestamp")
        if image_time is None:
            try:
                image_time = os.stat(task.path).st_mtime
            except OSError:
                image_time = None
        parameters = {k: c.parameters for k, c in zip(self.keys, curves) if c.parameters}
        graphs = None
        now = time.monotonic()
        if self.options.keep_curves and now - self._last_curves >= self.options.curve_interval:
            # a live plot needs only the latest curves: send them at a bounded rate
            self._last_curves = now
            graphs = [{"kind": it.kind, "conf": {"Name": it.name, "suffix": sfx},
                       "columnLabels": [it.x_label, "Intensity (Count/Pixel)", "Error Margin", "Standard Deviation"],
                       "array": [c.x, c.intensity, c.poisson, c.stddev]}
                      for it, c, sfx in zip(self.calibration.integrators, curves, self.suffixes)]
        return ImageResult(
            path=task.path, frame=frame.index, outputs=[str(p) for p in outputs], parameters=parameters,
            image_time=image_time, timings={"read": read_s, "integrate": t1 - t0, "write": t2 - t1},
            processed_at=time.time(), worker=os.getpid(),
            metadata={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))},
            curves=graphs,
        )


def image_time_of(path: str) -> float | None:
    """Acquisition time from the header, else the mtime (used without integrating)."""
    try:
        ts = read_header(path).get("timestamp")
        return ts if ts is not None else os.stat(path).st_mtime
    except Exception:
        return None


def summarize_curve(x: np.ndarray, intensity: np.ndarray) -> dict[str, Any]:
    """A JSON-friendly curve."""
    return {"x": np.asarray(x).tolist(), "I": np.asarray(intensity).tolist()}
