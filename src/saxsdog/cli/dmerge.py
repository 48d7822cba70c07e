"""``saxsdmerge``: merge log tables with the images' metadata into one table per image.

Examples::

    saxsdmerge -o merged.csv images/ peakinteg.log datalogger.log
    saxsdmerge -l -o merged.xlsx -o merged.hdf images/ peakinteg.log datalogger.log
    saxsdmerge -t 3600 --epoch Unix -b -o merged.json images/ shutter.log
    saxsdmerge -C mergeconf.json images/            # configuration file (schema: datamerge)

Without ``-C`` the first log is the shutter / peak-integration log (columns suffixed
``(Peak)``; ``-l``/``-z`` synchronise on it) and the second the 1-s data logger
(``(Dlog)``); further logs are ``(log3)``, ``(log4)``, ...  Without ``-o`` the merged table is
printed as CSV.  Unless ``-b`` is given, the time-synchronisation check plot is written to
``<first output>_sync.png`` (or ``merged_sync.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saxsdog.merge import MergeError, merge, sync_plot, write_merged

PROG = "saxsdmerge"
EXIT_USAGE = 2
EXIT_FAIL = 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``saxsdmerge``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        usage="%(prog)s [options] IMAGEDIR [peakinteg.log [datalogger.log ...]]",
        description="Merge log tables (shutter/peak-integration log, data logger) with the "
                    "image-header metadata and integral parameters: one row per image.",
        epilog="Log times are seconds since the Mac epoch (1904, LabVIEW) unless --epoch Unix;\n"
               "for each image the last log row at or before the image time is taken. The integral\n"
               "parameters I0, I1, I2 of a saxsdog run over IMAGEDIR are included by default.\n\n"
               "Examples:\n"
               "  saxsdmerge -o merged.csv images/ peakinteg.log datalogger.log\n"
               "  saxsdmerge -l -o merged.xlsx -o merged.hdf images/ peakinteg.log datalogger.log\n"
               "  saxsdmerge -c -o merged.hdf images/ peakinteg.log    with the curves of ../work\n"
               "  saxsdmerge -t 3600 --epoch Unix -b -o merged.json images/ shutter.log\n"
               "  saxsdmerge -C mergeconf.json images/            configuration file (schema: datamerge)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("imagedir", metavar="IMAGEDIR", help="folder of the images (read recursively)")
    p.add_argument("logs", nargs="*", metavar="LOG",
                   help="log tables: shutter/peak-integration log, then data logger, ...")
    p.add_argument("-t", "--timeoffset", type=float, default=0.0, metavar="SEC",
                   help="time offset between logging time and time in image data (subtracted "
                        "from the log times)")
    p.add_argument("-l", "-1", "--syncfirst", action="store_true",
                   help="sync time by taking the time difference between first shutter action "
                        "and first image")
    p.add_argument("-z", "--synczero", action="store_true",
                   help="sync time by taking the time difference between first shutter action "
                        "and the zero.tif image")
    p.add_argument("-o", "--outfile", action="append", default=[], metavar="FILE",
                   help="write merged dataset to this file; the format follows the suffix "
                        "(.csv|.json|.hdf|.h5|.xlsx); may be repeated")
    p.add_argument("-b", "--batch", action="store_true", help="batch mode (no plot)")
    p.add_argument("-c", "--includechi", action="store_true",
                   help="include radial intensity data (.chi) in hdf (saxsdmerge says when none are found)")
    p.add_argument("-f", "--includetif", action="store_true", help="include all image data in hdf")
    p.add_argument("-C", "--conf", metavar="FILE",
                   help="use config in FILE to merge the data (ignore the other merge options)")
    p.add_argument("--epoch", choices=("Mac", "Unix"), default="Mac",
                   help="epoch of numeric log times (default Mac)")
    p.add_argument("--filelist", metavar="FILE",
                   help="the pipeline's results/filelist.txt (integral parameters per image; default: "
                        "IMAGEDIR/../work/results/filelist.txt, where saxsdog writes it, if it exists)")
    p.add_argument("--chidir", metavar="DIR",
                   help="folder of the .chi files (integral parameters; default: beside the images and "
                        "IMAGEDIR/../work)")
    p.add_argument("--plot", metavar="FILE", help="write the time-sync check plot to FILE")
    return p


def config_from_options(args: argparse.Namespace) -> dict[str, Any]:
    """The merge configuration the command-line options describe (as the original did)."""
    tables = []
    for k, log in enumerate(args.logs):
        name = "Peak" if k == 0 else "Dlog" if k == 1 else f"log{k + 1}"
        tables.append({
            "TimeEpoch": args.epoch,
            "TimeOffset": 0,
            "FirstImageCorrelation": bool(args.syncfirst and k == 0),
            "ZeroImageCorrelation": bool(args.synczero and k == 0),
            "Name": name,
            "Files": [{"LocalPath": log}],
        })
    conf: dict[str, Any] = {"TimeOffset": args.timeoffset, "LogDataTables": tables,
                            "HDFOptions": {"IncludeCHI": args.includechi,
                                           "IncludeTIF": args.includetif}}
    images: dict[str, Any] = {}
    if args.filelist:
        images["FileList"] = args.filelist
    if args.chidir:
        images["ChiDirectory"] = args.chidir
    if images:
        conf["Images"] = images
    return conf


def _found(table, column: str) -> int:
    """Rows of ``table`` with a value in ``column``."""
    if column not in table.columns:
        return 0
    values = table[column]
    return int((values.notna() & (values.astype(str) != "")).sum())


def _parameter_report(table, imagedir: str, include_chi: bool) -> list[str]:
    """What was found of the queue's outputs: I0/I1/I2 and, with -c, the curves."""
    n = len(table)
    where = (f"looked in the file list and the .chi files beside the images and in saxsdog's default "
             f"output folder {Path(imagedir) / '..' / 'work'}; name others with --filelist or --chidir")
    lines = []
    with_i0 = _found(table, "I0")
    if with_i0 == 0:
        lines.append(f"no integral parameters (I0, I1, I2) found for the {n} image(s) ({where})")
    elif with_i0 < n:
        lines.append(f"integral parameters (I0, I1, I2) found for {with_i0} of {n} image(s)")
    if include_chi:
        curves = _found(table, "chi_file")
        if curves == 0:
            lines.append(f"-c: no .chi curves found for the {n} image(s), so none are included ({where})")
        elif curves < n:
            lines.append(f"-c: .chi curves found for {curves} of {n} image(s); only those are included")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``saxsdmerge``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.conf and not args.logs:
        parser.error("give at least one log table, or a configuration with -C")
    try:
        if args.conf:
            try:
                conf = json.loads(Path(args.conf).read_text())
            except OSError as exc:
                print(f"{PROG}: cannot read {args.conf}: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_FAIL
            except json.JSONDecodeError as exc:
                print(f"{PROG}: {args.conf} is not valid JSON: {exc}", file=sys.stderr)
                return EXIT_FAIL
        else:
            conf = config_from_options(args)
        result = merge(conf, ".", args.imagedir)
        conf = result.config
        table = result.table
        hdf = conf["HDFOptions"]
        written: dict[str, Path] = {}
        if args.outfile:
            for out in args.outfile:
                # one file per -o: its suffix names the format
                (written[out],) = write_merged(table, out, include_chi=hdf["IncludeCHI"],
                                               include_tif=hdf["IncludeTIF"]).values()
        elif args.conf and any(conf["OutputFormats"].values()):
            written.update(result.write())
        else:
            table.to_csv(sys.stdout, index=False)
        for line in _parameter_report(table, args.imagedir, bool(hdf["IncludeCHI"])):
            print(f"{PROG}: {line}", file=sys.stderr)
        for path in written.values():
            print(f"write: {path}", file=sys.stderr)
        if result.shift:
            print(f"time shift of the logs: {result.shift:+.3f} s", file=sys.stderr)
        if not args.batch or args.plot:
            plot = args.plot or conf.get("SyncPlot")
            if plot is None:
                first = next(iter(written.values()), None)
                plot = f"{first.with_suffix('')}_sync.png" if first is not None else "merged_sync.png"
            print(f"write: {sync_plot(result, plot)}", file=sys.stderr)
    except MergeError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
