"""Processing one image file: read → integrate → write.  Runs inside worker processes."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..calibration import Calibration
from ..errors import CorruptImageError, ImageError, ImageShapeError
from ..io.atomic import atomic_write_bytes
from ..io.chi import intensity_label
from ..io.images import Frame, ReadBuffer, inside, iter_frames, strip_image_suffix
from .classify_sink import needs_curves
from .naming import (OutputRefused, make_output_folder, output_base, subtracted_path,
                     write_output_bytes)
from .options import OUTPUT_FORMATS, QueueOptions
from .pool import heartbeat
from .tasks import ArenaRef, ImageResult, ImageTask


class ImageProcessor:
    """Turns an :class:`ImageTask` into :class:`ImageResult` objects (one per frame).

    Parameters
    ----------
    calibration
        The calibration (its operators are shared read-only with forked workers).
    options
        Queue options.
    arena
        The coordinator's shared memory for in-memory frames (forked workers only).
    map_images
        Map uncompressed image files instead of reading them (:class:`ReadBuffer`'s
        ``map_files``): for processes a pool replaces when they die (the local pool's
        workers, Dask workers under their nanny), since a file truncated by its writer while
        its frame is mapped kills the process with SIGBUS (the pool then retries the image);
        never in the coordinator's own process.

    Notes
    -----
    Output formats (``options.output_format``):

    ``chi``
        One ``.chi`` file per integrator (byte-identical to :meth:`Calibration.write_chi`).
    ``nxcansas``
        One NXcanSAS file ``<base>.h5`` per frame with one entry per I(q) integrator,
        written atomically.
    ``nxcansas-run``
        No file per frame: every frame's curves travel back in :attr:`ImageResult.curves`
        and the coordinator appends them to the run files.

    Phi-mode integrators (I versus azimuth, not q) keep their ``.chi`` files in both
    NXcanSAS formats.

    A curve with a background-subtracted twin (:attr:`Curve.subtracted`, a calibration with a
    ``Background``) is written beside it under the name of
    :func:`~saxsdog.pipeline.naming.subtracted_path` (``<stem>_sub.chi``, ...; in a per-image
    NXcanSAS file one more entry), and travels in the live curves as one more graph after
    the integrators' (``conf.subtracted`` true, ``conf.of`` the integrator's index).
    NXcanSAS files leave out the bins without data; ``.chi`` files keep them as 0 rows
    unless ``options.chi_drop_empty``.

    With ``options.confine_to`` (the server's base directory) an image is read only if its
    real path is inside it, checked right before it is opened (a file swapped for a
    symbolic link to an outside file after it was queued fails, unread), and each
    output's folder is checked when the output is written (:mod:`saxsdog.pipeline.naming`);
    both failures are final (not retried) and name the path.
    """

    def __init__(self, calibration: Calibration, options: QueueOptions, arena: Any = None,
                 map_images: bool = False):
        self.arena = arena
        if options.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {options.output_format!r} "
                             f"(one of {', '.join(OUTPUT_FORMATS)})")
        self.calibration = calibration
        self.options = options
        self.format = options.output_format
        self._formatters: list[Any] | None = None  # .chi formatters of _chi_of
        self.suffixes = calibration.output_suffixes()
        self.keys = [f"{it.kind[0]}{i}" for i, it in enumerate(calibration.integrators)]
        kinds = [it.kind for it in calibration.integrators]
        #: Integrators written as NXcanSAS entries: I(q) curves with q in nm⁻¹ (not Phi-mode, cakes,
        #: or radial curves in another Unit, which keep .chi files).
        self.nx_index = ([i for i, it in enumerate(calibration.integrators) if nxcansas_curve(it)]
                         if self.format != "chi" else [])
        #: Integrators written as .chi files.
        self.chi_index = [i for i, k in enumerate(kinds) if k != "Cake" and i not in self.nx_index]
        #: Cake integrators: one ``<stem><suffix>_cake.h5`` per frame (saxsdog.io.cake), in every format.
        self.cake_index = [i for i, k in enumerate(kinds) if k == "Cake"]
        self._last_curves = -1e9
        self._coordinator_classifies = needs_curves(calibration)
        #: ``root -> its real path``: a frame's name needs only the image resolved.
        self._real_roots: dict[str, str] = {}
        #: ``image folder -> its real path`` (see :meth:`_real_path`).
        self._real_folders: dict[str, str] = {}
        #: ``(image folder, root) -> (output folder, name prefix)`` (see :meth:`_output_base`).
        self._output_folders: dict[tuple[str, str], tuple[Path, str]] = {}
        #: Output folders this worker made or found (unconfined outputs only): one mkdir each.
        self._known_folders: set[Path] = set()
        #: The frame buffer the readers fill, reused from frame to frame (or map files into).
        self._buffer = ReadBuffer(map_files=map_images)

    def outputs_for(self, task: ImageTask, frame: int | None) -> list[Path]:
        """All output files of one frame (``frame=None`` for single-frame files).

        For ``nxcansas-run`` these are only the Phi-mode ``.chi`` files: the run files are
        the coordinator's.
        """
        h5 = self.format == "nxcansas" and bool(self.nx_index)
        if not self.chi_index and not h5 and not self.cake_index:
            return []  # nxcansas-run without Phi-mode integrators: nothing per frame
        folder, name = self._output_base(task, frame)
        outputs = [folder / (name + self.suffixes[i] + ".chi") for i in self.chi_index]
        outputs += [folder / (name + self.suffixes[i] + "_cake.h5") for i in self.cake_index]
        if h5:
            outputs.insert(0, folder / (name + ".h5"))
        return outputs

    def _output_base(self, task: ImageTask, frame: int | None) -> tuple[Path, str]:
        """:func:`~saxsdog.pipeline.naming.output_base` as (folder, name), folder by folder.

        Every image of a folder gets the same output folder and name prefix (the folder's
        parts with ``-o``): they are found once per image folder, the name is the prefix
        and the image's stem.  Renamed images (``output_stem``) and frames of multi-frame
        files take the general path.
        """
        if task.output_stem is not None or frame is not None:
            base = output_base(task.path, task.root, self.options, frame, stem=task.output_stem)
            return base.parent, base.name
        image_folder, image_name = os.path.split(task.path)
        key = (image_folder, task.root)
        known = self._output_folders.get(key)
        stem = strip_image_suffix(image_name)
        if known is None:
            base = output_base(task.path, task.root, self.options)
            if not base.name.endswith(stem):  # not prefix + stem: no shortcut for this folder
                return base.parent, base.name
            known = (base.parent, base.name[: len(base.name) - len(stem)])
            if len(self._output_folders) >= 4096:
                self._output_folders.clear()
            self._output_folders[key] = known
        return known[0], known[1] + stem

    @staticmethod
    def _existing(outputs: list[Path]) -> bool:
        """Whether every output is a regular file already (one ``stat`` each, as ``Path.is_file``)."""
        if not outputs:
            return False
        for p in outputs:
            try:
                if not stat.S_ISREG(os.stat(p).st_mode):
                    return False
            except (OSError, ValueError):
                return False
        return True

    def _frames(self, task: ImageTask) -> Iterator[Frame]:
        if task.payload is None:
            base = self.options.confine_to
            if base is not None and not inside(task.path, base):
                raise ImageError(task.path, f"its real path {os.path.realpath(task.path)} is outside the "
                                            f"server's base directory {os.path.realpath(base)}: not read")
            yield from iter_frames(task.path, expected_shape=self.calibration.shape, buffer=self._buffer)
            return
        from ..io.codecs import FrameDecodeError, decode_frame

        p = task.payload
        if tuple(p.shape) != tuple(self.calibration.shape):
            raise ImageShapeError(task.path, f"frame is {p.shape[0]}×{p.shape[1]} pixels, the calibration "
                                             f"expects {self.calibration.shape[0]}×{self.calibration.shape[1]}")
        blob = p.data
        if isinstance(blob, ArenaRef):
            blob = self.arena.view(blob)  # the coordinator frees the slot once the result is back
        try:
            data = decode_frame(blob, p.dtype, p.shape, p.encoding, buffer=self._buffer)  # reused array
        except FrameDecodeError as exc:
            raise CorruptImageError(task.path, str(exc)) from None
        yield Frame(data=data, path=task.path, index=0, nframes=1, metadata=dict(p.metadata))

    def _frame_name(self, path: str, root: str, index: int, nframes: int) -> str:
        """:func:`~saxsdog.pipeline.naming.frame_name`, with ``root`` resolved once per worker."""
        real_root = self._real_roots.get(root)
        if real_root is None:
            real_root = self._real_roots[root] = os.path.realpath(root)
        real = self._real_path(path)
        prefix = real_root if real_root.endswith(os.sep) else real_root + os.sep
        if real == real_root:
            rel = "."
        elif real.startswith(prefix):
            rel = real[len(prefix):].replace(os.sep, "/")
        else:
            rel = Path(path).name
        return f"{rel}#{index}" if nframes > 1 else rel

    def _real_path(self, path: str) -> str:
        """``os.path.realpath(path)`` with the image's folder resolved once per worker: one
        ``lstat`` of the image itself instead of one per component of its path."""
        folder, name = os.path.split(path)
        if not name or name in (".", ".."):
            return os.path.realpath(path)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return os.path.realpath(path)
        except OSError:
            return os.path.realpath(path)
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            if len(self._real_folders) >= 4096:
                self._real_folders.clear()
            real_folder = self._real_folders[folder] = os.path.realpath(folder or os.curdir)
        return os.path.join(real_folder, name)

    def _output_folder(self, folder: Path, confine: str | os.PathLike[str] | None) -> None:
        """Make the output folder (confined: checked every time; else once per worker)."""
        if confine is not None:
            make_output_folder(folder, confine)
        elif folder not in self._known_folders:
            make_output_folder(folder)
            self._known_folders.add(folder)

    def _write(self, path: Path, content: bytes | list[bytes | memoryview],
               confine: str | os.PathLike[str] | None) -> None:
        """Write one output atomically (:func:`~saxsdog.pipeline.naming.write_output_bytes`).

        ``content``: bytes, or buffers written one after the other (a ``.chi`` file's
        header lines and table, :meth:`_chi_of`).  Unconfined, into a folder made before:
        when it was removed meanwhile, it is made again and the write repeated.
        """
        if confine is not None:
            write_output_bytes(path, content if isinstance(content, bytes) else b"".join(content), confine)
            return
        try:
            atomic_write_bytes(path, content)  # (buffers: one os.writev)
        except FileNotFoundError:
            self._known_folders.discard(path.parent)
            write_output_bytes(path, content if isinstance(content, bytes) else b"".join(content))  # makes the folder
            self._known_folders.add(path.parent)

    def process(self, task: ImageTask) -> list[ImageResult]:
        """Process every frame of the task's file; errors become failed results."""
        results: list[ImageResult] = []
        skip_existing = self.options.resume or not self.options.overwrite
        t_read = time.perf_counter()
        try:
            for frame in self._frames(task):
                heartbeat()  # a file of many frames is progress, not a stall
                read_s = time.perf_counter() - t_read
                index = frame.index if frame.nframes > 1 else None
                outputs = self.outputs_for(task, index)
                if task.payload is not None:
                    name = Path(task.path).name
                else:
                    name = self._frame_name(task.path, task.root, frame.index, frame.nframes)
                if frame.index in task.skip_frames or (skip_existing and self._existing(outputs)):
                    results.append(ImageResult(task.path, frame.index, [str(p) for p in outputs],
                                               skipped=True, processed_at=time.time(), worker=os.getpid(),
                                               name=name))
                else:
                    try:
                        results.append(self._integrate_frame(task, frame, outputs, read_s, name))
                    except ImageError as exc:
                        if exc.retryable:
                            raise
                        # this frame's own problem (a header field its normalization needs): the
                        # file's other frames are still integrated
                        where = f"frame {frame.index}: " if frame.nframes > 1 else ""
                        results.append(ImageResult(task.path, frame.index, error=where + exc.reason,
                                                   processed_at=time.time(), worker=os.getpid(), name=name))
                t_read = time.perf_counter()
        except ImageError as exc:
            results.append(ImageResult(task.path, len(results), error=exc.reason, retryable=exc.retryable,
                                       processed_at=time.time(), worker=os.getpid()))
        except OutputRefused as exc:  # a folder on the way became a link to outside the base
            results.append(ImageResult(task.path, len(results), error=str(exc), processed_at=time.time(),
                                       worker=os.getpid()))
        except Exception as exc:  # never let one image take the worker down
            results.append(ImageResult(task.path, len(results), error=f"{type(exc).__name__}: {exc}",
                                       processed_at=time.time(), worker=os.getpid()))
        return results

    def _write_nxcansas(self, path: Path, name: str, curves: list, meta: dict[str, Any]) -> None:
        from ..io.nxcansas import write_nxcansas

        frames = []
        for i in self.nx_index:
            c = curves[i]
            title = name if i == 0 else f"{name} [{self.suffixes[i].lstrip('_') or i}]"
            frames.append({"name": title, "q": c.x, "I": c.intensity, "Idev": c.poisson, "valid": _with_data(c),
                           "unit": c.unit, "metadata": meta, "parameters": _frame_parameters(c),
                           "q_units": nx_q_units(self.calibration.integrators[i])})
        for i in self.nx_index:  # the background-subtracted curves after the unsubtracted ones
            s = curves[i].subtracted
            if s is not None:
                tag = (self.suffixes[i] + "_sub").lstrip("_")
                frames.append({"name": f"{name} [{tag}]", "q": s.x, "I": s.intensity, "Idev": s.poisson,
                               "valid": _with_data(s), "unit": s.unit, "metadata": meta,
                               "parameters": _frame_parameters(s),
                               "q_units": nx_q_units(self.calibration.integrators[i])})
        write_nxcansas(path, frames, self.calibration.raw, title=name)

    def _chi_of(self, i: int, curve) -> list[bytes | memoryview]:
        """Integrator ``i``'s ``.chi`` bytes of ``curve`` (its own or its subtracted one, same bins),
        as the buffers :func:`~saxsdog.io.atomic.atomic_write_bytes` writes in one ``os.writev``.

        The columns and header of :meth:`Calibration.chi_bytes` (the same formatter, built
        the same way, once per worker); with ``chi_drop_empty`` without the rows of the
        curve's empty bins.
        """
        if self._formatters is None:
            self._formatters = [None] * len(self.calibration.integrators)
        formatter = self._formatters[i]
        if formatter is None:
            from ..io.chi import RADIAL_LABELS, ChiFormatter

            it = self.calibration.integrators[i]
            formatter = self._formatters[i] = ChiFormatter(it.x, self.calibration.raw,
                                                           [it.x_label, *RADIAL_LABELS[1:]])
        keep = curve.has_data if self.options.chi_drop_empty else None
        return formatter.render_parts(curve.intensity, curve.poisson, curve.parameters, keep=keep,
                                      unit=curve.unit)

    def _nxcansas_bytes(self, file_name: str, name: str, curves: list, meta: dict[str, Any]) -> bytes:
        """The NXcanSAS file of one frame, built where nobody else can write (a 0700 temporary folder)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="saxsdog-nxcansas-") as private:
            path = Path(private) / file_name  # the same name: the file records it
            self._write_nxcansas(path, name, curves, meta)
            return path.read_bytes()

    def _integrate_frame(self, task: ImageTask, frame, outputs: list[Path], read_s: float,
                         name: str) -> ImageResult:
        t0 = time.perf_counter()
        now = time.monotonic()
        live = self.options.keep_curves and now - self._last_curves >= self.options.curve_interval
        # The standard deviation is only shown in live plots; no output stores it.
        curves = self.calibration.curves(frame.data, stddev=live, metadata=frame.metadata)
        meta = dict(frame.metadata)
        scalars = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
        # with chi_drop_empty the same files without the empty bins' rows
        contents = [self._chi_of(i, curves[i]) for i in self.chi_index]
        t1 = time.perf_counter()
        # background-subtracted twins of the .chi files: (path, content)
        sub_chi: list[tuple[Path, list[bytes | memoryview]]] = []
        with_sub = [i for i in self.chi_index if curves[i].subtracted is not None]
        if with_sub:
            chi_paths = outputs[1:] if self.format == "nxcansas" and self.nx_index else outputs
            by_index = dict(zip(self.chi_index, chi_paths))
            sub_chi = [(subtracted_path(by_index[i]), self._chi_of(i, curves[i].subtracted)) for i in with_sub]
        confine = self.options.confine_to
        if outputs:
            self._output_folder(outputs[0].parent, confine)
        chi_outputs = outputs
        if self.format == "nxcansas" and self.nx_index:
            if confine is None:
                self._write_nxcansas(outputs[0], name, curves, scalars)
            else:  # h5py opens by name: built in a private folder, then written like the .chi files
                write_output_bytes(outputs[0], self._nxcansas_bytes(outputs[0].name, name, curves, scalars),
                                   confine)
            chi_outputs = outputs[1:]
        for path, content in sub_chi:  # the subtracted curves' files first: the originals say "done"
            self._write(path, content, confine)
        for path, content in zip(chi_outputs, contents):
            self._write(path, content, confine)
        if self.cake_index:  # the cake files are the last outputs
            from ..io.cake import cake_bytes

            for path, i in zip(outputs[len(outputs) - len(self.cake_index):], self.cake_index):
                self._write(path, cake_bytes(self.calibration.integrators[i], curves[i], name, scalars),
                                   confine)
        if self.options.write_svg or self.options.write_png:
            base = output_base(task.path, task.root, self.options,
                               frame.index if frame.nframes > 1 else None, stem=task.output_stem)
            make_output_folder(base.parent, confine)
            if self.options.write_svg:
                svg = base.with_name(base.name + ".svg")
                first, x_label = _plotted_curve(self.calibration.integrators[0], curves[0])
                if confine is None:
                    from .plots import write_curve_plot

                    write_curve_plot(first, svg, title=Path(task.path).name, unit=first.unit, x_label=x_label)
                else:  # rendered in memory, written like the .chi files (checked at the write)
                    write_output_bytes(svg, _curve_svg(first, Path(task.path).name, x_label), confine)
            if self.options.write_png:
                png = base.with_name(base.name + ".png")
                if confine is None:
                    from .plots import write_image_png

                    write_image_png(frame.data, png)
                else:
                    write_output_bytes(png, _image_png(frame.data), confine)
        t2 = time.perf_counter()
        outputs = outputs + [p for p, _ in sub_chi]  # after the others (the file list names the first)
        image_time = meta.get("timestamp")
        if image_time is None and task.payload is None:
            try:
                image_time = os.stat(task.path).st_mtime
            except OSError:
                image_time = None
        parameters = {k: _frame_parameters(c) for k, c in zip(self.keys, curves) if c.parameters}
        parameters.update({f"{k}_sub": _frame_parameters(c.subtracted) for k, c in zip(self.keys, curves)
                           if c.subtracted is not None and c.subtracted.parameters})  # after the integrators'
        graphs = None
        # the coordinator writes them all (run files) or classifies them in frame order (CorMap, Average)
        every_frame = self.format == "nxcansas-run" or self._coordinator_classifies
        if every_frame or live:
            # a live plot needs only the latest curves: they are sent at a bounded rate
            if live:
                self._last_curves = now
            labels = ["Intensity (Count/Pixel)", "Error Margin"] + (["Standard Deviation"] if live else [])
            graphs = [{"kind": it.kind, "conf": {"Name": it.name, "suffix": sfx},
                       "columnLabels": [it.x_label, *labels],
                       "array": [c.x, c.intensity, c.poisson] + ([c.stddev] if live else [])}
                      if it.kind != "Cake" else _cake_graph(it, c, sfx, labels[:2])
                      for it, c, sfx in zip(self.calibration.integrators, curves, self.suffixes)]
            graphs = _reduced_graphs(graphs, self.calibration.integrators, curves, self.suffixes, live)
        return ImageResult(
            path=task.path, frame=frame.index, outputs=[str(p) for p in outputs], parameters=parameters,
            image_time=image_time, timings={"read": read_s, "integrate": t1 - t0, "write": t2 - t1},
            processed_at=time.time(), worker=os.getpid(), metadata=scalars, curves=graphs, name=name,
            live=live,
        )


#: ``Q@units`` in NXcanSAS of the radial units that are a q (the others keep ``.chi`` files).
NX_Q_UNITS = {"q_nm^-1": "1/nm", "q_A^-1": "1/angstrom"}


def nxcansas_curve(integrator) -> bool:
    """Whether an integrator's curves go into NXcanSAS files: I(q), q in nm⁻¹ or Å⁻¹."""
    return integrator.kind not in ("Phi", "Cake") and nx_q_units(integrator) is not None


def nx_q_units(integrator) -> str | None:
    """NXcanSAS ``Q@units`` of an integrator's x (``None``: its x is not a q)."""
    return NX_Q_UNITS.get(integrator.operator.meta.get("unit", "q_nm^-1"))


def _cake_graph(integrator, curve, suffix: str, labels: list[str]) -> dict[str, Any]:
    """A cake for live plots: its azimuthal average as the curve and a small map as ``cake``."""
    from ..io.cake import azimuthal_profile, cake_preview

    intensity, error = azimuthal_profile(integrator, curve)
    return {"kind": "Cake", "conf": {"Name": integrator.name, "suffix": suffix},
            "columnLabels": [integrator.x_label, *labels], "array": [integrator.x, intensity, error],
            "cake": cake_preview(integrator, curve)}


def _plotted_curve(integrator, curve) -> tuple[Any, str]:
    """The curve a plot of an integrator's result shows and its x label: the curve itself, or
    for a cake its azimuthal average (as the live plots show it), over the radial centres."""
    if integrator.kind != "Cake":
        return curve, integrator.x_label
    import dataclasses

    from ..io.cake import azimuthal_profile

    intensity, error = azimuthal_profile(integrator, curve)
    return dataclasses.replace(curve, x=integrator.x, intensity=intensity, poisson=error, stddev=None,
                               valid=intensity != 0, subtracted=None), integrator.x_label


def _curve_svg(curve, title: str, x_label: str | None = None) -> bytes:
    """The SVG of :func:`~saxsdog.pipeline.plots.write_curve_plot`, in memory."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .plots import curve_figure

    sub = curve.subtracted
    fig = curve_figure(curve.x, curve.intensity, curve.poisson, title, unit=curve.unit,
                       subtracted=None if sub is None else (sub.x, sub.intensity, sub.poisson), x_label=x_label)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def _image_png(image: np.ndarray) -> bytes:
    """The PNG of :func:`~saxsdog.pipeline.plots.write_image_png`, in memory."""
    import io

    import matplotlib.image

    data = np.log10(np.clip(np.asarray(image, dtype=np.float64), 1, None))
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, data, cmap="viridis", origin="upper", format="png")
    return buf.getvalue()


def _with_data(curve) -> np.ndarray:
    """The bins NXcanSAS files keep: with data, and with a finite value and error."""
    return (np.asarray(curve.has_data, dtype=bool) & np.isfinite(curve.intensity)
            & np.isfinite(curve.poisson))


def _frame_parameters(curve) -> dict[str, Any]:
    """A curve's parameters as results, history and run files carry them: with the frame's
    dummy-pixel count and, with sigma clipping, the count of rejected pixel entries (the .chi
    header keeps the curve's own parameters)."""
    out = {**curve.parameters, "dummy_pixels": int(curve.dummy_pixels)}
    rejected = getattr(curve, "rejected_pixels", None)
    if rejected is not None:
        out["rejected_pixels"] = int(rejected)
    return out


def _with_reduction(graph: dict[str, Any], curve) -> dict[str, Any]:
    """A graph object with what the run files and plots need of its curve, besides the original's keys.

    ``unit`` (saxsdog's unit of I, also in the intensity column's label), ``dummy_pixels``
    (the frame's count), ``rejected_pixels`` (with sigma clipping) and ``valid`` (bool per bin, a list, only when some bin is empty).
    """
    graph["columnLabels"][1] = intensity_label(curve.unit)
    graph["unit"] = curve.unit
    graph["dummy_pixels"] = int(curve.dummy_pixels)
    if getattr(curve, "rejected_pixels", None) is not None:
        graph["rejected_pixels"] = int(curve.rejected_pixels)
    has_data = _with_data(curve)
    if not has_data.all() and has_data.size == len(graph["array"][0]):  # (a cake's graph is its profile)
        graph["valid"] = has_data.tolist()
    return graph


def _reduced_graphs(graphs: list[dict[str, Any]], integrators: list, curves: list, suffixes: list[str],
                    live: bool) -> list[dict[str, Any]]:
    """The frame's graphs with units, dummy counts and valid bins, and after them one graph per
    background-subtracted curve (``conf.subtracted`` true, ``conf.of`` its integrator's index,
    ``parameters`` its own)."""
    out = [_with_reduction(g, c) for g, c in zip(graphs, curves)]
    for i, (it, c, sfx) in enumerate(zip(integrators, curves, suffixes)):
        s = c.subtracted
        if s is None:
            continue
        labels = [it.x_label, "", "Error Margin"] + (["Standard Deviation"] if live else [])
        sub = {"kind": it.kind, "conf": {"Name": it.name, "suffix": sfx + "_sub", "subtracted": True, "of": i},
               "columnLabels": labels,
               "array": [s.x, s.intensity, s.poisson] + ([s.stddev] if live else []),
               "parameters": _frame_parameters(s)}
        out.append(_with_reduction(sub, s))
    return out
