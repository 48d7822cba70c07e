"""Typed options of an image queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: The values of :attr:`QueueOptions.output_format`.
OUTPUT_FORMATS = ("chi", "nxcansas", "nxcansas-run")


@dataclass
class QueueOptions:
    """How a queue processes and where it writes.

    Attributes
    ----------
    workers
        Worker processes.
    out_dir
        Single output folder (``-o``); images from sub-folders get the relative path
        components joined with ``_`` in front of their name, so they never collide.
    relpath
        Output folder relative to each image's folder (``-R``), used without ``out_dir``.
    resume
        Skip images whose outputs all exist (``-r``).
    overwrite
        ``OverwriteFiles`` of the calibration: when false, existing outputs are kept.
    directories
        ``Directory`` of the calibration: sub-folders to process (empty or ``.``: all).
    live_filelist
        Keep ``results/filelist.txt`` with I0, I1, I2 per image.
    write_svg, write_png
        Also write a plot of each curve (SVG) / a PNG of each image.
    retry_timeout
        Seconds to keep retrying an incomplete image before reporting it.
    retry_initial
        First back-off delay in seconds (doubles each retry).
    output_format
        ``"chi"`` (default): one ``.chi`` file per integrator and frame.
        ``"nxcansas"``: one NXcanSAS file per frame, ``<base>.h5``, holding every
        integrator's curve as one entry each.
        ``"nxcansas-run"``: one NXcanSAS file per run holding every frame, written by the
        coordinator: ``<output root>/<run name>.h5`` (further integrators:
        ``<run name>_c<kind><n>.h5``), renamed into place when the queue stops.
        NXcanSAS holds I(q) curves: Phi-mode integrators (I versus azimuth) keep writing
        ``.chi`` files in both NXcanSAS formats.
    run_name
        Name of the run file (``nxcansas-run``); default: the processed directory's name
        (for streams ``series_<id>``).
    replace_run_file
        Replace an existing run file of the same name (the ``saxsdog`` command without
        ``-r``).  Otherwise (the default, and always with ``resume`` or ``overwrite``
        false) a new file ``<run name>_<NNN>.h5`` is started next to the existing ones,
        and with ``resume`` or ``overwrite`` false the frames those files hold already
        are skipped.
    task_timeout
        Longest time (s) a worker may spend on one image: a worker past it (stopped,
        blocked, looping) is killed and replaced and its images are queued again; an image
        whose worker stalled or died 3 times is reported failed.  ``0``: no deadline.
    keep_curves
        Send the curves back to the coordinator (for live plots), at most every
        ``curve_interval`` seconds per worker.
    chi_drop_empty
        Leave the rows of empty bins (no pixel with data: beam stop, gaps, outside the mask,
        or every pixel a dummy in this frame) out of the ``.chi`` files (``saxsdog
        --chi-drop-empty``).  Default ``False``: the original's layout, every bin, an empty
        one as a ``q 0 0`` row.  NXcanSAS files always leave them out.
    confine_to
        Base directory (the server's): every image read and every output written must
        resolve inside it, checked when it is used (:mod:`saxsdog.pipeline.naming`).
        ``None`` (the ``saxsdog`` command): no confinement.
    """

    workers: int = 2
    out_dir: Path | None = None
    relpath: str = "../work"
    resume: bool = False
    overwrite: bool = True
    directories: list[str] = field(default_factory=list)
    live_filelist: bool = True
    write_svg: bool = False
    write_png: bool = False
    retry_timeout: float = 10.0
    retry_initial: float = 0.05
    output_format: str = "chi"
    run_name: str | None = None
    replace_run_file: bool = False
    keep_curves: bool = False
    task_timeout: float = 60.0
    curve_interval: float = 0.1
    confine_to: Path | None = None
    chi_drop_empty: bool = False
