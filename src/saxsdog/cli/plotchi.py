"""``plotchi``: plot ``.chi`` curves (saxsdog, original SAXSDOG or FIT2D files).

Examples::

    plotchi buf1_00000.chi                          # window if a display exists
    plotchi -l -o curves.svg a.chi b.chi            # log intensity axis, written to SVG
    plotchi -c fit2d.chi saxsdog.chi -o diff.png    # differences to the first file
                                                    # (left axis absolute, right axis in %)

Without ``-o`` the plot opens in a window when a display is available; otherwise it is
written to ``<first file's name>.png`` in the current directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saxsdog.cli import report_error
from saxsdog.io.chi import read_chi

PROG = "plotchi"
EXIT_USAGE = 2
SCALES = ("linear", "log", "symlog")
X_LABEL = "q [nm$^{-1}$]"
Y_LABEL = "Intensity [counts/pixel]"
#: Axis labels of ``--compare``: they say which axis is which.
COMPARE_LEFT = "left, solid: difference to {first} [counts/pixel]"
COMPARE_RIGHT = "right, dotted: relative difference [%]"
_NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


@dataclass
class Curve:
    """One file's data, trimmed by ``--skip`` / ``--clip``."""

    label: str
    x: np.ndarray
    y: np.ndarray
    error: np.ndarray | None
    x_label: str = X_LABEL
    y_label: str = Y_LABEL


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``plotchi``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Plot one or more .chi files (saxsdog, original SAXSDOG or FIT2D) in one figure.",
        epilog="Without -o the plot is shown in a window if a display is available, otherwise it is\n"
               "written to <first file's name>.png in the current directory. The axes are labelled\n"
               "from the files' column labels (a Phi-mode curve's x axis is the azimuth).\n\n"
               "Examples:\n"
               "  plotchi buf1_00000.chi                        window if a display exists\n"
               "  plotchi -l -o curves.svg a.chi b.chi          log intensity axis, written to SVG\n"
               "  plotchi -c fit2d.chi saxsdog.chi -o diff.png  differences to the first file: absolute\n"
               "                                                (left axis, solid), relative in % (right,\n"
               "                                                dotted)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="CHIFILE", help='".chi" files to plot')
    parser.add_argument("-o", "--out", metavar="FILE",
                        help="write the plot to FILE; the format follows the suffix, e.g. .png, .svg, .pdf")
    parser.add_argument("-c", "--compare", action="store_true",
                        help="plot the differences of the other files to the first one: absolute "
                             "on the left axis (solid lines), relative in %% on the right axis (dotted)")
    parser.add_argument("-l", "--log", action="store_true", help="logarithmic intensity axis")
    parser.add_argument("-n", "--no-legend", action="store_true", help="hide the legend")
    parser.add_argument("-t", "--title", help="plot title (default: the file name when there is one file)")
    parser.add_argument("-s", "--skip", type=int, default=0, metavar="N", help="skip the first N points")
    parser.add_argument("-k", "--clip", type=int, default=0, metavar="N", help="clip the last N points")
    parser.add_argument("-x", "--xaxisistype", choices=SCALES, metavar="TYPE",
                        help="scale of the x axis (q, or the azimuth of a Phi-mode curve): linear (default), "
                             "log or symlog")
    parser.add_argument("-y", "--yaxisistype", choices=SCALES, metavar="TYPE",
                        help="scale of the intensity axis: linear (default; log with -l) or symlog")
    parser.add_argument("--no-errors", action="store_true", help="do not draw the error bands")
    return parser


def load_curves(paths: Sequence[str], skip: int = 0, clip: int = 0) -> list[Curve]:
    """Read ``.chi`` files and drop the first ``skip`` and last ``clip`` points of each.

    Raises
    ------
    ValueError
        If a file is not a ``.chi`` file or nothing is left after trimming.
    OSError
        If a file cannot be read.
    """
    if skip < 0 or clip < 0:
        raise ValueError("--skip and --clip must not be negative")
    names = [Path(p).name for p in paths]
    curves = []
    for path, name in zip(paths, names):
        data = read_chi(path)
        stop = len(data.x) - clip
        if stop - skip < 1:
            raise ValueError(f"{path}: no points left to plot ({len(data.x)} points, skip {skip}, clip {clip})")
        cut = slice(skip, stop)
        x_label, y_label = axis_labels(data)
        curves.append(Curve(
            label=name if names.count(name) == 1 else str(path),
            x=data.x[cut],
            y=data.intensity[cut],
            error=data.error[cut] if data.error is not None else None,
            x_label=x_label,
            y_label=y_label,
        ))
    return curves


def axis_labels(data) -> tuple[str, str]:
    """The x and y axis labels a ``.chi`` file gives for itself.

    saxsdog and the later original write the column labels (a Phi-mode curve's first
    column is the azimuth, a slice's q_h or q_v); FIT2D and the 2014 original name the
    x axis on the second header line.  Anything else is a radial curve in q.
    """
    labels = [str(item) for item in (data.labels or []) if str(item).strip()]
    x_label, y_label = X_LABEL, Y_LABEL
    if labels:
        x_label = labels[0]
        if len(labels) > 1 and not labels[1].lower().startswith("intensity"):
            y_label = labels[1]
    elif data.calibration is None and len(data.header) > 1:
        line = data.header[1].strip()
        if line and not line.startswith(("{", "[")):
            x_label = line
    # The plain radial q keeps one spelling whatever the writer called it.
    if _x_kind(x_label) == "q" and "_" not in x_label:
        x_label = X_LABEL
    return x_label, y_label


def _x_kind(label: str) -> str:
    """A coarse name for what an x label measures, to tell unlike curves apart."""
    text = label.lower()
    if "azimuth" in text or "phi" in text or "chi [" in text:
        return "azimuth"
    if "theta" in text or "2θ" in text:
        return "2theta"
    if "radius" in text or "[mm]" in text:  # Unit r_mm
        return "r"
    if "\\aa" in text or "å" in text or "angstrom" in text:  # Unit q_A^-1: 10 × smaller than nm⁻¹
        return "q_A"
    return "q"


def draw(fig, curves: Sequence[Curve], *, compare: bool = False, errors: bool = True,
         xscale: str = "linear", yscale: str = "linear", legend: bool = True,
         title: str | None = None) -> None:
    """Draw curves on a matplotlib figure.

    Parameters
    ----------
    fig
        A ``matplotlib.figure.Figure`` (no pyplot state is touched).
    curves
        From :func:`load_curves`.
    compare
        Plot ``I_k - I_0`` (interpolated on the first file's q) and, on a second axis, the
        relative difference in %, instead of the curves.
    errors
        Draw a band of ± the error column where a file has one.
    xscale, yscale
        ``"linear"``, ``"log"`` or ``"symlog"``.
    legend
        Show a legend with the file names.
    title
        Figure title.
    """
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel(curves[0].x_label if curves else X_LABEL)
    if compare:
        first = curves[0]
        rel_ax = ax.twinx()
        with np.errstate(divide="ignore", invalid="ignore"):
            for curve in curves[1:]:
                diff = np.interp(first.x, curve.x, curve.y) - first.y
                (line,) = ax.plot(first.x, diff, label=f"{curve.label} - {first.label} (left axis)")
                relative = np.where(first.y != 0, 100.0 * diff / first.y, np.nan)
                rel_ax.plot(first.x, relative, linestyle=":", color=line.get_color(),
                            label=f"{curve.label} relative (right axis)")
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_ylabel(COMPARE_LEFT.format(first=first.label))
        rel_ax.set_ylabel(COMPARE_RIGHT)
    else:
        for curve in curves:
            (line,) = ax.plot(curve.x, curve.y, label=curve.label, linewidth=1.0)
            if errors and curve.error is not None:
                lower = curve.y - curve.error
                if yscale == "log":
                    # A band reaching zero or below cannot be drawn on a log axis.
                    lower = np.where(lower > 0, lower, curve.y)
                ax.fill_between(curve.x, lower, curve.y + curve.error, color=line.get_color(),
                                alpha=0.25, linewidth=0)
        ax.set_ylabel(curves[0].y_label if curves else Y_LABEL)
        ax.set_yscale(yscale)
    ax.set_xscale(xscale)
    if title:
        ax.set_title(title)
    if legend:
        handles, names = ax.get_legend_handles_labels()
        if compare:  # one legend for both axes: solid = absolute, dotted = relative
            more = rel_ax.get_legend_handles_labels()
            handles, names = handles + more[0], names + more[1]
        ax.legend(handles, names, fontsize="small")
    fig.tight_layout()


def has_display() -> bool:
    """Whether a plot window can be opened."""
    if os.environ.get("MPLBACKEND", "").lower() in _NON_INTERACTIVE:
        return False
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _save(curves: Sequence[Curve], path: Path, options: dict) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    supported = fig.canvas.get_supported_filetypes()
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in supported:
        raise ValueError(f"cannot write {path}: unknown plot format {path.suffix or '(no suffix)'}; "
                         f"use one of {', '.join('.' + s for s in sorted(supported))}")
    draw(fig, curves, **options)
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plotchi``; returns the exit code (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return int(exc.code or 0)
    yscale = args.yaxisistype or ("log" if args.log else "linear")
    options = dict(compare=args.compare, errors=not args.no_errors, xscale=args.xaxisistype or "linear",
                   yscale=yscale, legend=not args.no_legend,
                   title=args.title or (Path(args.files[0]).name if len(args.files) == 1 else None))
    try:
        if args.compare and len(args.files) < 2:
            raise ValueError("--compare needs at least two files")
        curves = load_curves(args.files, args.skip, args.clip)
        kinds = {_x_kind(c.x_label) for c in curves}
        if len(kinds) > 1:
            print(f"{PROG}: warning: the files' x axes differ ("
                  + ", ".join(f"{c.label}: {c.x_label}" for c in curves)
                  + f"); the axis is labelled {curves[0].x_label!r}", file=sys.stderr)
        if args.compare:
            print(f"{PROG}: --compare: left axis (solid lines) the difference of each file to "
                  f"{curves[0].label} in counts/pixel, right axis (dotted lines) the same in % of it; "
                  f"x axis: {curves[0].x_label}", file=sys.stderr)
        if args.out:
            _save(curves, Path(args.out), options)
            return 0
        if has_display():
            import matplotlib.pyplot as plt

            if plt.get_backend().lower() not in _NON_INTERACTIVE:
                draw(plt.figure(figsize=(8, 5)), curves, **options)
                plt.show()
                return 0
        out = Path(Path(args.files[0]).stem + ".png")
        _save(curves, out, options)
        print(f"{PROG}: no display available; wrote {out}", file=sys.stderr)
        return 0
    except (ValueError, OSError) as exc:
        report_error(PROG, exc)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
