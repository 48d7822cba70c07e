"""``saxsdog``: integrate the images of a directory (or given files), optionally watching for new ones."""

from __future__ import annotations

import argparse
import atexit
import glob
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="saxsdog",
        description="Convert the 2D scattering images in DIRECTORY (recursively), or the image FILEs "
                    "given, into 1D curves (.chi or NXcanSAS files), optionally watching for new "
                    "images; or integrate the frames of a Dectris detector stream (--stream) without "
                    "image files.",
        epilog="Examples:\n  saxsdog -c cal.json /data/run42            process what is there\n"
               "  saxsdog -c cal.json /data/run42/img_*.tif  these files (a quoted glob works too,\n"
               "                                             '**' reaches into sub-folders)\n"
               "  saxsdog -c cal.json -w -o /data/out /data/run42   and keep watching\n"
               "  saxsdog -c cal.json -r /data/run42         resume: only the missing ones\n"
               "  saxsdog -c cal.json --format nxcansas-run /data/run42   one NXcanSAS file: work/run42.h5\n"
               "  saxsdog -c cal.json --stream tcp://eiger:9999 -o /data/out   a detector stream, until the "
               "series ends\n"
               "  saxsdog -c cal.json --stream tcp://eiger:9999 --series 0 --format nxcansas-run -o /data/out\n"
               "                                             every series (one run file each), until Ctrl-C\n"
               "  saxsdog --demo                              synthetic data, no setup needed\n"
               "  saxsdog absolute --help                     the absolute-scale factor from a standard\n"
               "  saxsdog calibrate agbeh.tif --calibrant AgBh -o cal.json   fit the geometry to a\n"
               "                                             calibrant's rings (saxsdog calibrate --help)\n"
               "\nExit codes: 0 all images processed; 1 some images failed, or no images found\n"
               "(a batch run over an empty folder, or a Directory filter that selects none);\n"
               "2 usage or calibration error; 130 interrupted (run again with -r).\n"
               "Many images failing for one reason are reported as one line with their count, the\n"
               "first file names and the likely cause. Warnings (on stderr) point out a mask that masks\n"
               "most of the detector (probably inverted) and an image header whose wavelength differs\n"
               "from the calibration's.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="DIRECTORY|FILE",
                   help="a directory with images (searched recursively), or image files and glob "
                        "patterns (quoted patterns are expanded too; '**' matches sub-folders)")
    p.add_argument("-c", "--calibration", metavar="FILE", help="calibration file (JSON)")
    p.add_argument("-t", "--threads", type=int, metavar="N",
                   help="worker processes (default: the calibration's Threads)")
    p.add_argument("-m", "--plotmonitor", action="store_true",
                   help="show a live plot of the latest curve (a PNG in results/ without a display)")
    p.add_argument("-w", "--watch", action="store_true",
                   help="watch the directory recursively for new images (until Ctrl-C)")
    p.add_argument("-r", "--resume", action="store_true", help="skip images whose outputs exist")
    p.add_argument("-o", "--out", metavar="OUTDIR", help="write every output into OUTDIR")
    p.add_argument("-R", "--relpath", default="../work", metavar="RELPATH",
                   help="output directory relative to each image (default: ../work)")
    p.add_argument("-s", "--svg", action="store_true", help="also write a plot of each curve (SVG)")
    p.add_argument("-p", "--png", action="store_true", help="also write a PNG of each image")
    p.add_argument("-P", "--profile", action="store_true", help="print per-stage timings at the end")
    p.add_argument("-S", "--silent", action="store_true",
                   help="less output: plain progress lines instead of a progress bar")
    p.add_argument("-n", "--nowalk", action="store_true",
                   help="do not process images already there (only new ones, with -w)")
    p.add_argument("-D", "--walkdirinthreads", action="store_true",
                   help="scan the sub-directories in parallel threads")
    p.add_argument("--format", choices=["chi", "nxcansas", "nxcansas-run"], default="chi",
                   help="output format: chi (default; one .chi file per image and mask), nxcansas (one "
                        "NXcanSAS .h5 per image, every mask as an entry), nxcansas-run (one NXcanSAS file "
                        "per run holding every frame: OUTPUT/<run name>.h5; with -r, frames already in "
                        "earlier run files are skipped and the rest go to <run name>_001.h5, ...)")
    p.add_argument("--chi-drop-empty", action="store_true",
                   help="leave empty bins (no pixel with data: beam stop, gaps, outside the mask) out of "
                        "the .chi files instead of writing them as 0 rows as the original did; NXcanSAS "
                        "files always leave them out")
    p.add_argument("--run-name", metavar="NAME",
                   help="name of the nxcansas-run file (default: the directory's name; with --stream "
                        "one run file per series, NAME_<series id>, default series_<id>)")
    p.add_argument("--stream", metavar="URL",
                   help="integrate the frames of a Dectris detector stream (SIMPLON stream v1, "
                        "tcp://HOST:9999, or v2/CBOR, tcp://HOST:31001) until --series series have ended "
                        "or Ctrl-C; outputs go to -o "
                        "(default: the current directory)")
    p.add_argument("--series", type=int, default=1, metavar="N",
                   help="with --stream: stop after N series (each arm/disarm of the detector is one; "
                        "default 1; 0 = keep receiving until Ctrl-C)")
    p.add_argument("--keep-raw", metavar="DIR",
                   help="with --stream: also keep the raw frames as NeXus files in DIR "
                        "(<series>_master.h5 linking <series>_data_NNNNNN.h5, bitshuffle-LZ4)")
    p.add_argument("--frames-per-file", type=int, default=1000, metavar="N",
                   help="with --keep-raw: frames per raw data file (default 1000)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the workers on a Dask cluster: its scheduler address (tcp://host:8786), or "
                        "'local' for a local Dask cluster of -t processes (needs dask[distributed])")
    p.add_argument("--retry-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="keep retrying incomplete images this long (default: 10)")
    p.add_argument("--task-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a worker with no result for this long on one image (stopped, blocked) is killed and "
                        "replaced, the image retried; 3 times: reported failed (default: 60; 0: no limit)")
    p.add_argument("--demo", nargs="?", type=int, const=200, metavar="N",
                   help="make N synthetic Pilatus 1M images with a known answer (default 200), "
                        "process them and check the curves")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    p.add_argument("-V", "--servermode", action="store_true",
                   help="server mode: run saxsdogserver with DIRECTORY as base directory (-t workers; the "
                        "network file gives ports and secret; see saxsdogserver --help)")
    p.add_argument("--version", action="version", version="saxsdog " + _version())
    from saxsdog.protocol.netconf import add_network_arguments

    add_network_arguments(p)  # used by -V
    return p


def _version() -> str:
    from saxsdog import __version__

    return __version__


class Progress:
    """A tqdm bar on a terminal, else plain lines every few seconds."""

    def __init__(self, plain: bool, total: int, stream=sys.stderr):
        self.plain = plain or not stream.isatty()
        self.stream = stream
        self.total = total
        self._last = 0.0
        self._bar = None
        if not self.plain:
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, unit="img", dynamic_ncols=True, file=stream,
                             smoothing=0.1)

    def update(self, done: int, total: int, fps: float, failed: int) -> None:
        if self._bar is not None:
            if total and self._bar.total != total:
                self._bar.total = total
            self._bar.n = done
            self._bar.set_postfix_str(f"{fps:.0f} frames/s, {failed} failed", refresh=False)
            self._bar.refresh()
        elif time.monotonic() - self._last >= 2.0:
            self._last = time.monotonic()
            print(f"saxsdog: {done}/{total} images, {fps:.0f} frames/s, {failed} failed",
                  file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A message line that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _run_demo(args, out) -> tuple[str, str, Path]:
    from saxsdog.demo import make_dataset

    workdir = Path(tempfile.mkdtemp(prefix="saxsdog-demo-"))
    n = args.demo
    print(f"saxsdog demo: writing {n} synthetic Pilatus 1M images to {workdir}/images ...", file=out)
    t = time.perf_counter()
    cal = make_dataset(workdir, n)
    print(f"  made in {time.perf_counter() - t:.1f} s", file=out)
    return str(cal), str(workdir / "images"), workdir


def _check_demo(workdir: Path, n: int, out) -> bool:
    """Compare the demo's curves with the model they were drawn from."""
    import numpy as np

    from saxsdog.demo import guinier, rg_of
    from saxsdog.io.chi import read_chi

    worst = 0.0
    files = sorted((workdir / "work").glob("demo_*.chi"))
    for f in files:
        i = int(f.stem.split("_")[1])
        c = read_chi(f)
        if c.error is None:  # a curve without its error column cannot be judged
            worst = float("inf")
            continue
        sel = (c.intensity > 0) & (c.q > 0.1) & (c.q < 1.0)
        # the mean over a bin of the model differs from the model at the centre by O(dq²)
        dev = np.abs(c.intensity[sel] - guinier(c.q[sel], rg_of(i, n))) / c.error[sel]
        worst = max(worst, float(np.median(dev)))
    ok = len(files) == n and worst < 1.5
    print(f"  check: {len(files)}/{n} curves; median deviation from the known model "
          f"{worst:.2f} σ (Poisson) -> {'OK' if ok else 'MISMATCH'}", file=out)
    return ok


#: Sub-commands of ``saxsdog``: name -> module of saxsdog.cli with ``main(argv)``.  A folder
#: of the same name is given as ``./NAME``.
SUBCOMMANDS = {"absolute": "absolute", "calibrate": "calibrate"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        sub = importlib.import_module(f"saxsdog.cli.{SUBCOMMANDS[argv[0]]}")
        return int(sub.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    if args.svg or args.png or args.plotmonitor:  # else every image fails in the workers
        from saxsdog.extras import import_optional

        import_optional("matplotlib", "plot", "saxsdog -s, -p and -m")
    out = sys.stdout
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    workdir = None
    # One path keeps the historical single-DIRECTORY meaning (server mode, --stream checks).
    args.directory = args.paths[0] if len(args.paths) == 1 else None
    if len(args.paths) > 1 and (args.servermode or args.stream):
        print("saxsdog: error: -V and --stream take at most one DIRECTORY", file=sys.stderr)
        return EXIT_USAGE
    if args.servermode:
        if not args.directory:
            print("saxsdog: error: -V needs the base DIRECTORY", file=sys.stderr)
            return EXIT_USAGE
        from saxsdog.cli import server

        forwarded = [args.directory] + (["-t", str(args.threads)] if args.threads else [])
        forwarded += ["-w"] if args.watch else []
        forwarded += ["--task-timeout", str(args.task_timeout)]
        forwarded += (["-o", args.out] if args.out else []) + ["-R", args.relpath]
        forwarded += (["--network", args.network] if args.network else []) + ["-N", str(args.serverno)]
        return server.main(forwarded + (["-v"] if args.verbose else []))
    if args.demo is not None:
        if args.demo < 1:
            print("saxsdog: --demo needs at least one image", file=sys.stderr)
            return EXIT_USAGE
        args.calibration, args.directory, workdir = _run_demo(args, out)
        args.paths = [args.directory]
    if args.stream:
        if args.directory or args.watch or args.scheduler:
            print("saxsdog: error: --stream takes no DIRECTORY, -w or --scheduler", file=sys.stderr)
            return EXIT_USAGE
        if not args.calibration:
            print("saxsdog: error: a calibration is needed: -c FILE", file=sys.stderr)
            return EXIT_USAGE
        if args.series < 0:
            print("saxsdog: error: --series must be 0 (until Ctrl-C) or a positive number", file=sys.stderr)
            return EXIT_USAGE
        return _run_stream(args, out)
    if args.keep_raw:
        print("saxsdog: error: --keep-raw needs --stream", file=sys.stderr)
        return EXIT_USAGE
    if args.series != 1:
        print("saxsdog: error: --series needs --stream", file=sys.stderr)
        return EXIT_USAGE
    if not args.paths:
        print("saxsdog: error: a DIRECTORY or image files are needed (or --stream, --demo); "
              "see saxsdog --help", file=sys.stderr)
        return EXIT_USAGE
    if not args.calibration:
        print("saxsdog: error: a calibration is needed: -c FILE", file=sys.stderr)
        return EXIT_USAGE
    inputs = resolve_inputs(args.paths)
    if isinstance(inputs, str):
        print(f"saxsdog: error: {inputs}", file=sys.stderr)
        return EXIT_USAGE
    root, folders, files = inputs
    single_folder = not files and len(folders) == 1
    if args.watch and not single_folder:
        print("saxsdog: error: -w watches one DIRECTORY, not files or several folders", file=sys.stderr)
        return EXIT_USAGE

    from saxsdog.pipeline.naming import results_dir
    from saxsdog.pipeline.queue import ImageQueue

    loaded = _load_calibration(args.calibration)
    if isinstance(loaded, int):
        return loaded
    cal, startup = loaded
    conf = cal.config
    directories = list(conf.get("Directory", []))
    # Files named on the command line are wanted whatever the Directory filter says (the
    # folders given were filtered by it while collecting).
    options = _queue_options(args, conf, out_dir=Path(args.out).resolve() if args.out else None,
                             relpath=args.relpath, directories=directories if single_folder else [])
    pool_factory = None
    if args.scheduler:
        try:
            from saxsdog.pipeline.dask_pool import dask_pool_factory
        except ImportError as exc:
            print(f"saxsdog: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        pool_factory = dask_pool_factory(args.scheduler)
        if not args.verbose:  # distributed logs every connection at INFO
            logging.getLogger("distributed").setLevel(logging.WARNING)
    queue = ImageQueue(cal, root, options, pool_factory=pool_factory)
    # Local workers are started first: they load their compiled kernels while this process
    # scans the folders and checks the calibration (two cores: in parallel).  A Dask
    # cluster is contacted once there is something to do.
    started = False
    if pool_factory is None:
        failed = _start_queue(queue)
        if failed is not None:
            return failed
        started = True
    try:
        images: list[str] = []
        ignored = 0
        if not args.nowalk:
            images, ignored, why_none = collect_images(folders, files, directories, args.walkdirinthreads)
            if not images and not args.watch:
                print(f"saxsdog: error: {why_none}", file=sys.stderr)
                queue.stop()
                return EXIT_FAILED
        for warning in calibration_warnings(cal, images[:1]):
            print(f"saxsdog: warning: {warning}", file=sys.stderr)
        if args.resume:
            _remove_partials(root, options)
        monitor = None
        if args.plotmonitor:
            from saxsdog.pipeline.plots import PlotMonitor

            monitor = PlotMonitor(results_dir(root, options) / "monitor.png")
            if not monitor.interactive:
                print(f"saxsdog: no display for -m: the live plot is written to {monitor.png}", file=out)
        if not args.silent:
            where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{options.workers} workers"
            print(f"saxsdog: {cal!r}; {where}; calibration ready in {startup:.2f} s", file=out)
    except BaseException:  # Ctrl-C or an error while scanning: the workers must not be left behind
        queue.stop()
        raise
    if not started:
        failed = _start_queue(queue)
        if failed is not None:
            return failed
    queue.ignored_files += ignored
    queue.push_many(images)  # one message for the dispatcher, not one per image
    total = len(images)
    if args.watch:
        queue.watch()
        print(f"saxsdog: watching {root.resolve()} (Ctrl-C to stop)"
              + ("" if images or args.nowalk else "; no images there yet"), file=out, flush=True)
    progress = Progress(args.silent, total)
    interrupted = False
    last_plot = 0.0
    try:
        while True:
            idle = queue.wait_until_idle(0.25)
            st = queue.stats()
            done = st["images_processed"] + st["images_skipped"] + st["images_failed"]
            progress.update(done, max(total, st["images_queued"]), st["frames_per_second"],
                            st["images_failed"])
            latest = queue.history.latest_curves
            if monitor is not None and latest is not None and latest.curves and time.monotonic() - last_plot > 1:
                last_plot = time.monotonic()
                _show_latest(monitor, latest)
            if idle and (not args.watch or queue.error is not None):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        queue.stop()
    latest = queue.history.latest_curves
    if monitor is not None and latest is not None and latest.curves:
        _show_latest(monitor, latest)
        if not monitor.interactive:
            print(f"saxsdog: live plot of the last curve: {monitor.png}", file=out)
    return _summary(queue, interrupted, args, out, workdir)


def _show_latest(monitor, latest) -> None:
    """The live plot of the first integrator's latest curve, its unit and its background-subtracted curve."""
    first = latest.curves[0]
    x, intensity, error = first["array"][:3]  # [x, I, err(, stddev)]
    sub = next((g for g in latest.curves if (g.get("conf") or {}).get("subtracted") and g["conf"].get("of") == 0),
               None)
    dummies = first.get("dummy_pixels") or 0
    rejected = first.get("rejected_pixels")  # with sigma clipping only
    counts = ([f"{dummies:,} dummy pixels"] if dummies else []) + \
        ([f"{rejected:,} rejected by sigma clipping"] if isinstance(rejected, int) else [])
    title = os.path.basename(latest.path) + (f" ({', '.join(counts)})" if counts else "")
    monitor.update(x, intensity, error, title, unit=first.get("unit"),
                   subtracted=None if sub is None else tuple(sub["array"][:3]),
                   x_label=(first.get("columnLabels") or [None])[0])


def _run_stream(args, out) -> int:
    """``saxsdog --stream URL``: integrate a detector stream until ``--series`` series ended (or Ctrl-C)."""
    from saxsdog.pipeline.queue import ImageQueue
    from saxsdog.streams.dectris import DectrisStreamSource

    loaded = _load_calibration(args.calibration)
    if isinstance(loaded, int):
        return loaded
    cal, startup = loaded
    conf = cal.config
    for warning in calibration_warnings(cal, []):
        print(f"saxsdog: warning: {warning}", file=sys.stderr)
    out_dir = Path(args.out or ".").resolve()
    options = _queue_options(args, conf, out_dir=out_dir)
    queue = ImageQueue(cal, out_dir, options)
    queue.start()
    try:
        source = DectrisStreamSource(args.stream, queue, keep_raw=args.keep_raw,
                                     frames_per_file=args.frames_per_file).start()
    except OSError as exc:
        queue.stop()
        print(f"saxsdog: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.silent:
        print(f"saxsdog: {cal!r}; {options.workers} workers; calibration ready in {startup:.2f} s", file=out)
    until = ("Ctrl-C" if args.series == 0 else "the series ends" if args.series == 1
             else f"{args.series} series have ended")
    print(f"saxsdog: receiving {args.stream} until {until} (Ctrl-C to stop)", file=out, flush=True)
    progress = Progress(args.silent, 0)
    interrupted = False

    def show() -> None:
        st = queue.stats()
        done = st["images_processed"] + st["images_skipped"] + st["images_failed"]
        progress.update(done, max(source.frames, st["images_queued"]), st["frames_per_second"],
                        st["images_failed"])

    # a service stop (SIGTERM) ends like Ctrl-C; handlers can only be set in the main thread
    main_thread = threading.current_thread() is threading.main_thread()
    _TERMINATED[0] = False
    previous_term = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        while True:
            # before the idle check: every frame is queued by then
            ended = args.series > 0 and source.ended.is_set() and len(source.completed) >= args.series
            idle = queue.wait_until_idle(0.25)
            if _TERMINATED[0]:  # raised here, never inside a lock the wait holds
                raise KeyboardInterrupt
            show()
            if (ended and idle) or queue.error is not None:
                break
    except KeyboardInterrupt:
        interrupted = True
        # The frames received exist nowhere else: integrate them before stopping.
        source.stop()
        if queue.backlog:
            progress.write(f"saxsdog: stopping; integrating the {queue.backlog} frame(s) already received "
                           "(Ctrl-C again to drop them)")
        try:
            while not queue.wait_until_idle(0.25) and queue.error is None:
                show()
        except KeyboardInterrupt:
            pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_term)
        progress.close()
        source.stop()
        queue.stop()
    series = source.completed + ([source.series] if source.series is not None
                                 and source.series not in source.completed else [])
    print(f"saxsdog: stream {args.stream}: {source.frames} frame(s) received"
          + (f" of series {', '.join(map(str, series))}" if series else "")
          + f", {source.malformed} malformed message(s) skipped", file=out)
    for reason in list(source.errors)[-5:]:
        print(f"saxsdog: malformed message: {reason}", file=out)
    for path in source.raw_files[:1]:
        print(f"saxsdog: raw frames kept in {path} ({len(source.raw_files) - 1} data file(s))", file=out)
    # With --series 0 an interrupt is the normal end, not a failure.
    return _summary(queue, interrupted and args.series != 0, args, out, None)


def resolve_inputs(paths: list[str]) -> tuple[Path, list[Path], list[Path]] | str:
    """The folders and files the command line names, and the root their outputs are named from.

    Paths that do not exist but contain glob characters are expanded (a quoted
    ``'img_*.tif'``, or more files than the shell may pass); ``**`` matches sub-folders.

    Returns
    -------
    tuple or str
        ``(root, folders, files)`` (absolute paths; ``root`` is the single folder given, else
        the deepest folder holding every input), or the message for a path that names nothing.
    """
    folders: list[Path] = []
    files: list[Path] = []
    for given in paths:
        expanded = os.path.expanduser(given)
        if os.path.exists(expanded):
            matches = [expanded]
        elif glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                return f"no file matches {given}"
        else:
            return f"{given}: no such file or directory"
        for m in matches:
            path = Path(m).absolute()
            (folders if path.is_dir() else files).append(path)
    if not files and len(folders) == 1:
        return folders[0], folders, files
    parents = [str(f) for f in folders] + [str(f.parent) for f in files]
    return Path(os.path.commonpath(parents)), folders, files


def collect_images(folders: list[Path], files: list[Path], directories: list[str],
                   in_threads: bool = False) -> tuple[list[str], int, str]:
    """The images to process: every image below ``folders`` and the image ``files``.

    Parameters
    ----------
    folders, files
        From :func:`resolve_inputs`.
    directories
        The calibration's ``Directory`` filter, applied inside each folder.
    in_threads
        Scan sub-folders in threads (``-D``).

    Returns
    -------
    tuple
        The image paths (without duplicates, in order), how many other files were
        ignored, and, for an empty result, the message saying why nothing was found.
    """
    from saxsdog.io.images import is_image_file
    from saxsdog.pipeline.sources import walk_images

    images: list[str] = []
    ignored = unfiltered = 0
    for folder in folders:
        found, skipped = walk_images(folder, directories, in_threads)
        images += found
        ignored += skipped
        if not found and directories:
            unfiltered += len(walk_images(folder, [], in_threads)[0])
    not_images = [f for f in files if not is_image_file(f)]
    images += [str(f) for f in files if is_image_file(f)]
    ignored += len(not_images)
    images = list(dict.fromkeys(images))
    why = ""
    if not images:
        where = ", ".join(map(str, folders + files))
        why = f"no images found in {where}"
        if unfiltered:
            why += (f": the calibration's Directory {directories} selects none of the {unfiltered} "
                    "image(s) there")
        elif not_images:
            why += f" (not images: {', '.join(f.name for f in not_images[:3])}" + \
                   (", ...)" if len(not_images) > 3 else ")")
        elif ignored:
            why += f" ({ignored} other file(s) ignored: not images)"
        else:
            why += " (the folder is empty)" if len(folders) == 1 and not files else ""
    return images, ignored, why


#: Masked fraction above which a mask is probably inverted.
MOSTLY_MASKED = 0.5
#: Relative difference of header and calibration wavelength worth a warning.
WAVELENGTH_TOLERANCE = 1e-4


def calibration_warnings(cal, images: list[str]) -> list[str]:
    """Things in the calibration that are probably mistakes, as warning texts.

    * A mask that masks most of the detector: probably inverted (in a mask image a
      non-zero pixel is masked; a valid-pixel map such as 255 = valid masks the opposite).
    * A wavelength in the first image's header that differs from the calibration's (the
      calibration's is used for q).
    """
    from saxsdog.errors import SaxsdogError

    warnings: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(cal.config.get("Masks", [])):
        name = str(entry.get("MaskFile", ""))
        if name in seen:
            continue
        seen.add(name)
        try:
            valid = cal.mask(index)
        except (SaxsdogError, OSError, ValueError):  # reported where the mask is used
            valid = None
        if valid is None or valid.size == 0:
            continue
        masked = 1.0 - float(valid.mean())
        if masked > MOSTLY_MASKED:
            warnings.append(
                f"Masks[{index}].MaskFile {name} masks {100 * masked:.0f} % of the detector's pixels: "
                "is it inverted? In a mask image a non-zero pixel is masked (a map with 255 = valid, "
                "such as the original's mask.tif, masks the valid pixels)")
    wavelength = cal.config.get("Wavelength")
    if images and isinstance(wavelength, (int, float)) and wavelength > 0:
        from saxsdog.io.images import read_header

        try:
            header = read_header(images[0]).get("wavelength")
        except (SaxsdogError, OSError, ValueError):  # an unreadable image fails later, with its reason
            header = None
        if isinstance(header, (int, float)) and header > 0 and \
                abs(header - wavelength) > WAVELENGTH_TOLERANCE * wavelength:
            warnings.append(
                f"the header of {os.path.basename(images[0])} gives the wavelength {header:g} Å, the "
                f"calibration {wavelength:g} Å; the calibration's is used (q differs by "
                f"{100 * abs(header / wavelength - 1):.2g} %)")
    return warnings


#: The two ways an image of the wrong size is reported: by the reader from its header
#: (before the pixels are read), or after reading.
_SHAPE_FAILURE = re.compile(r"not a (?P<exp_rows>\d+)×(?P<exp_cols>\d+) image \(header declares "
                            r"(?P<rows>\d+)×(?P<cols>\d+)"
                            r"|image is (?P<rows2>\d+) rows x (?P<cols2>\d+) columns but "
                            r"(?P<exp_rows2>\d+) rows x (?P<exp_cols2>\d+) columns were expected")
#: Failures of more images than this for one reason are summarised in one line.
FAILURES_LISTED = 3


def _failure_key(path: str, reason: str) -> str:
    """The reason without what differs from file to file (its name, numbers)."""
    shape = _SHAPE_FAILURE.search(reason)
    if shape:  # images of different sizes are different problems
        return shape.group(0)
    text = reason.replace(path, "<file>").replace(os.path.basename(path), "<file>")
    return re.sub(r"\d+(\.\d+)?", "#", text)


def _likely_cause(reason: str, cal) -> str | None:
    m = _SHAPE_FAILURE.search(reason)
    if m:
        g = m.groupdict()
        rows, cols = g["rows"] or g["rows2"], g["cols"] or g["cols2"]
        exp_rows, exp_cols = g["exp_rows"] or g["exp_rows2"], g["exp_cols"] or g["exp_cols2"]
        from saxsdog.config import calibration_field_path

        source = getattr(cal, "path", None)
        which = f"the calibration {source}" if source else "the calibration"
        field = calibration_field_path(getattr(cal, "raw", {}), "Geometry", "ImageSize").removeprefix("$.")
        return (f"likely cause: {which} is for images of {exp_rows} x {exp_cols} pixels "
                f"({field}), these are {rows} x {cols}: use the calibration of the "
                "detector that took them")
    if "still incomplete" in reason:
        return ("likely cause: the files are still being written or were cut short; "
                "a longer --retry-timeout waits for slow writers")
    if "not an image" in reason.lower() or "unknown" in reason.lower() and "format" in reason.lower():
        return "likely cause: these files are not detector images"
    return None


def failure_report(failures: dict[str, str], cal=None) -> list[str]:
    """Report lines for failed images, grouped by reason.

    A reason shared by at most :data:`FAILURES_LISTED` images gives one ``FAILED path:
    reason`` line per image; more give one line with the count, the first file names and,
    where it can be told, the likely cause (3000 images of the wrong size are one line).
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for path, reason in sorted(failures.items()):
        groups.setdefault(_failure_key(path, reason), []).append((path, reason))
    lines: list[str] = []
    for members in sorted(groups.values(), key=len, reverse=True):
        first_path, first_reason = members[0]
        if len(members) <= FAILURES_LISTED:
            lines += [f"FAILED {path}: {reason}" for path, reason in members]
        else:
            same = all(reason == first_reason for _, reason in members)
            names = ", ".join(os.path.basename(p) for p, _ in members[:FAILURES_LISTED])
            lines.append(f"FAILED {len(members)} images: {first_reason}"
                         + ("" if same else " (details differ)"))
            lines.append(f"  first: {names}, ... (in {os.path.dirname(first_path)})")
        cause = _likely_cause(first_reason, cal)
        if cause:
            lines.append(f"  {cause}")
    return lines


#: Set by SIGTERM; the main loop turns it into KeyboardInterrupt at a safe point.
_TERMINATED = [False]


def _interrupt(signum, frame) -> None:
    # Raising from the handler could interrupt Event.wait between taking and releasing its
    # lock, and the next wait would deadlock on it (seen with a stop right after a series).
    _TERMINATED[0] = True


def _queue_options(args, conf: dict, **where):
    """Queue options from the command line and the calibration (``where``: output placement)."""
    from saxsdog.pipeline import QueueOptions

    return QueueOptions(
        workers=args.threads or int(conf.get("Threads", 2)),
        resume=args.resume,
        overwrite=bool(conf.get("OverwriteFiles", True)),
        live_filelist=bool(conf.get("Live-Filelisting", True)),
        write_svg=args.svg, write_png=args.png,
        retry_timeout=args.retry_timeout,
        task_timeout=args.task_timeout,
        output_format=args.format,
        run_name=args.run_name,
        replace_run_file=not args.resume,
        keep_curves=args.plotmonitor,
        chi_drop_empty=args.chi_drop_empty,
        **where,
    )


def _start_queue(queue) -> int | None:
    """Start the queue's workers; the exit code after printing the error, or ``None``."""
    from saxsdog.errors import SaxsdogError

    try:
        queue.start()
    except SaxsdogError as exc:  # SchedulerUnreachable: nobody answers at ADDRESS
        queue.stop()
        print(f"saxsdog: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return None


def _load_calibration(path: str):
    """The calibration and its load time, or the exit code after printing the error."""
    from saxsdog.calibration import Calibration
    from saxsdog.errors import CalibrationError

    t0 = time.perf_counter()
    try:
        cal = Calibration(path)
    except CalibrationError as exc:
        print(f"saxsdog: error: {_naming_the_file(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return cal, time.perf_counter() - t0


def _naming_the_file(exc) -> str:
    """A calibration error; "file not found" ones name the resolved path looked for."""
    message = getattr(exc, "message", "")
    value = getattr(exc, "value", None)
    if message.endswith("not found") and isinstance(value, str) and value:
        where = "" if exc.path in ("", "$") else f" (from {exc.path})"
        return f"{message}: {Path(value).resolve()}{where}"
    return str(exc)


def _remove_partials(root: Path, options) -> None:
    """Temporary files left by a killed run (outputs are written to .part then renamed)."""
    from saxsdog.io.atomic import remove_stale_partials
    from saxsdog.pipeline.naming import results_dir

    top = Path(options.out_dir) if options.out_dir else results_dir(root, options).parent
    for folder in {top, root}:
        if folder.is_dir():
            remove_stale_partials(folder)


def _count_range(values: list[int], what: str) -> str:
    lo, hi = min(values), max(values)
    span = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    return f"saxsdog: {span} {what} per frame"


def reduction_report(records: list[dict[str, Any]]) -> list[str]:
    """Summary lines of what the corrections excluded: the dummy pixels (negative or
    ``DummyValue``, ``Corrections.MaskNegative``) and the sigma-clipped pixel entries per
    frame, over the frames that had any (the first integrator's counts)."""
    dummies, rejected = [], []
    for r in records:
        if r.get("error") is not None or r.get("skipped"):
            continue
        if r.get("dummy_pixels"):
            dummies.append(int(r["dummy_pixels"]))
        first = next(iter((r.get("parameters") or {}).values()), None)
        if isinstance(first, dict) and first.get("rejected_pixels") is not None:
            rejected.append(int(first["rejected_pixels"]))
    lines = []
    if dummies:
        lines.append(_count_range(dummies, "dummy pixels (negative or DummyValue) excluded")
                     + f" ({len(dummies)} frame(s) had any)")
    if rejected:
        lines.append(_count_range(rejected, "pixel entries rejected by SigmaClip"))
    return lines


def _summary(queue, interrupted: bool, args, out, workdir) -> int:
    st = queue.stats()
    h = queue.history
    print(f"saxsdog: {st['images_processed']} processed, {st['images_skipped']} skipped (outputs existed), "
          f"{st['images_failed']} failed; {st['overall_frames_per_second']:.1f} frames/s", file=out)
    if queue.ignored_files:
        print(f"saxsdog: {queue.ignored_files} file(s) ignored (not images)", file=out)
    if st.get("alarms"):  # the classifiers' Alarm ranges: say so where the scientist looks
        latest = st.get("latest_alarm") or {}
        print(f"saxsdog: {st['alarms']} frame(s) in alarm; the latest: {latest.get('name', '?')}: "
              f"{'; '.join(latest.get('alarms', []))} (the file list's alarms column has them all)", file=out)
    if st["worker_restarts"]:
        print(f"saxsdog: {st['worker_restarts']} worker(s) died and were replaced; their images were redone",
              file=out)
    if args.profile:
        stages = st["stage_seconds"]
        print("saxsdog: mean per frame: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in stages.items()),
              file=out)
    for path in queue.run_files:
        print(f"saxsdog: run file {path}", file=out)
    for line in reduction_report(h.records):
        print(line, file=out)
    for line in failure_report(h.failures, queue.calibration):
        print(line, file=out)
    unlisted = getattr(h, "failures_not_listed", 0)
    if unlisted:  # the history keeps the reasons of the latest failures only
        print(f"FAILED {unlisted} more image(s): their reasons are not kept (the latest "
              f"{len(h.failures)} are listed above)", file=out)
    if queue.error is not None:  # e.g. the Dask scheduler became unreachable (message says -r)
        print(f"saxsdog: error: {queue.error}", file=sys.stderr)
        return EXIT_FAILED
    if interrupted:
        print("saxsdog: interrupted" if args.stream else
              "saxsdog: interrupted; run again with -r to process the remaining images", file=out)
        return EXIT_INTERRUPTED
    if workdir is not None:
        from saxsdog.cli.saxsdog import _check_demo

        ok = _check_demo(workdir, args.demo, out)
        shutil.rmtree(workdir / "images", ignore_errors=True)  # ~4 MB per synthetic image
        print(f"  outputs in {workdir}/work (the synthetic images were removed)", file=out)
        if not ok:
            return EXIT_FAILED
    return EXIT_FAILED if h.failures or unlisted else EXIT_OK


def exit_without_teardown(code: int) -> NoReturn:
    """End the command's process as a normal exit would, without the interpreter's teardown.

    With numba and the calibration loaded, freeing every module's objects one by one takes
    a few tenths of a second after the work is done (about as long as a thousand frames).
    What a normal exit does first is done here too, in the interpreter's order: the other
    non-daemon threads are waited for (``threading``'s own exit step, which first tells
    thread pools to finish; a run file's close retried after a full disk), the exit
    handlers run (logging's, the finalizers'), the output is flushed; then the process ends
    with ``os._exit``.
    """
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls at exit
    if shutdown is not None:
        shutdown()
    else:  # pragma: no cover - another Python implementation
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing left to flush
                pass
        os._exit(int(code))


if __name__ == "__main__":  # pragma: no cover
    exit_without_teardown(main())
