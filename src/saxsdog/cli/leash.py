"""``saxsleash``: command-line leash — send commands to a saxsdog server and show the answers."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, EXIT_CONNECTION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130



def cli_commands():
    """The ``saxsleash`` subcommands: the command table's entries offered on the command line."""
    from saxsdog.protocol.commands import COMMANDS

    return {c.name: c for c in COMMANDS if c.cli is not None}


_AXES = ("linear", "log", "symlog")


def build_parser() -> argparse.ArgumentParser:
    from saxsdog.protocol.netconf import add_network_arguments

    table = cli_commands()
    width = max(len(name) + len(c.cli.usage) + 1 for name, c in table.items())
    commands = "\n".join(f"  {(name + ' ' + c.cli.usage).strip():<{width}}  {c.summary}"
                         for name, c in table.items())
    p = argparse.ArgumentParser(
        prog="saxsleash",
        usage="saxsleash COMMAND [arguments] [options]",
        description="Send a command to a saxsdog server (signed with the secret of the network "
                    "file) and print its answer.",
        epilog=f"commands:\n{commands}\n\n"
               "examples:\n"
               "  saxsleash new cal.json data/AAA_integ.msk data/run42\n"
               "  saxsleash stat\n"
               "  saxsleash plot -y log -s 10            live plot, first 10 points skipped\n"
               "  saxsleash plot -o latest.png           one plot into a file\n"
               "  saxsleash listdir data --json\n"
               "  saxsleash validate cal.json            the server checks a calibration\n"
               "  saxsleash maskpreview cal.json my.msk data/img_001.tif -o preview.png\n"
               "  saxsleash -N 1 -S tcp://node2:7777 close\n\n"
               "exit codes: 0 ok, 1 server error (validate: the calibration has problems), 2 usage error, "
               "3 no answer from the server",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", metavar="COMMAND", help="one of: " + ", ".join(table))
    p.add_argument("arguments", nargs="*", metavar="ARG", help="the command's arguments")
    p.add_argument("-S", "--server", metavar="tcp://HOSTNAME:PORT",
                   help="URL of the saxsdog server (default: the network file's Server)")
    add_network_arguments(p)
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for an answer (default: 10)")
    p.add_argument("--json", action="store_true", help="print the raw JSON response")
    plot = p.add_argument_group("plot")
    plot.add_argument("-s", "--skip", type=int, default=0, metavar="N", help="skip the first N points")
    plot.add_argument("-k", "--clip", type=int, default=0, metavar="N", help="clip the last N points")
    plot.add_argument("-x", "--xaxistype", choices=_AXES, default="linear", metavar="TYPE",
                      help="X axis scale: linear, log or symlog (default: linear)")
    plot.add_argument("-y", "--yaxistype", choices=_AXES, default="log", metavar="TYPE",
                      help="Y axis scale: linear, log or symlog (default: log)")
    # the original's spellings, still accepted
    plot.add_argument("--xaxisistype", "--xaxsistype", dest="xaxistype", choices=_AXES,
                      default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    plot.add_argument("--yaxsisstype", "--yaxsistype", dest="yaxistype", choices=_AXES,
                      default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    plot.add_argument("-o", "--output", metavar="FILE",
                      help="plot: write the plot to FILE (PNG, SVG or PDF by suffix) instead of a window; "
                           "maskpreview: the PNG file to write")
    plot.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                      help="seconds between plot updates (default: 1)")
    plot.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="with -o: wait up to SECONDS for a first curve (default: 0)")
    return p


# --------------------------------------------------------------------------- output

def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return v
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _fmt_item(key: str, v: Any) -> str:
    if key in ("time", "start time") and isinstance(v, (int, float)) and not isinstance(v, bool) \
            and v > 1e8:
        from datetime import datetime

        return datetime.fromtimestamp(v).strftime("%Y-%m-%d %H:%M:%S")
    if key == "time interval" and isinstance(v, (int, float)):
        return f"{v:.3f} s"
    if key == "job" and isinstance(v, Mapping):  # the latest queue-changing command
        seconds = v.get("seconds")
        took = f" ({seconds:.1f} s)" if isinstance(seconds, (int, float)) else ""
        return f"{v.get('command')} {v.get('state')}{took}" + (f": {v['error']}" if v.get("error") else "")
    return _fmt_value(v)


def _aligned(mapping: Mapping[str, Any], indent: str = "  ", first: Sequence[str] = ()) -> list[str]:
    if not mapping:
        return [f"{indent}(none)"]
    keys = [k for k in first if k in mapping] + [k for k in mapping if k not in first]
    width = max(len(str(k)) for k in keys)
    return [f"{indent}{str(k):<{width}} : {_fmt_item(str(k), mapping[k])}" for k in keys]


def format_response(resp: Mapping[str, Any]) -> str:
    """A human-readable rendering of a response."""
    data = resp.get("data") or {}
    lines = [str(resp.get("result", ""))]
    first = ("Error", "filename", "directory", "cal", "stat")
    ordered = [k for k in first if k in data] + [k for k in data if k not in first]
    for key in ordered:
        value = data[key]
        if key == "stat" and isinstance(value, Mapping):
            from saxsdog.protocol.messages import STAT_KEYS

            lines.append("stat:")
            lines.extend(_aligned(value, first=STAT_KEYS))
        elif key == "dircontent" and isinstance(value, list):
            lines.append("contents:")
            items = sorted(value, key=lambda e: (not e.get("isdir"), str(e.get("path", ""))))
            lines.extend(f"  {e.get('path')}{'/' if e.get('isdir') else ''}" for e in items)
            if not items:
                lines.append("  (empty)")
        elif key == "problems" and isinstance(value, list):
            if not value:
                lines.append("the calibration is valid")
            lines.extend(f"  {p.get('path')}: {p.get('message')}" for p in value if isinstance(p, Mapping))
        elif key == "calibration" and isinstance(value, Mapping):
            lines.append(json.dumps(value, indent=2, ensure_ascii=False))
        elif key == "commands" and isinstance(value, list):
            lines.append("commands:")
            width = max((len(str(c.get("name"))) for c in value if isinstance(c, Mapping)), default=0)
            lines.extend(f"  {str(c.get('name')):<{width}}  {c.get('summary', '')}"
                         for c in value if isinstance(c, Mapping))
        elif key == "job" and isinstance(value, Mapping):
            lines.append(f"job: {value.get('command')} {value.get('state')} "
                         f"({_fmt_value(value.get('seconds'))} s)")
        elif key == "directory" and isinstance(value, list):
            lines.append(f"directory: {'/'.join(str(p) for p in value) or '.'}")
        elif key == "cal" and isinstance(value, Mapping):
            title = value.get("Title") or "(untitled)"
            lines.append(f"calibration: {title}, {len(value.get('Masks') or [])} mask(s), "
                         f"{len(value.get('Slices') or [])} slice(s)")
        elif key == "array" and isinstance(value, list):
            try:
                x, _, _ = extract_curve({"data": {"array": value}})
                lines.append(f"curve: {len(x)} points")
            except ValueError:
                lines.append(f"array: {len(value)} column(s)")
        elif key == "graphs" and isinstance(value, list):
            kinds = ", ".join(str(g.get("kind", "?")) for g in value if isinstance(g, Mapping))
            lines.append(f"graphs: {len(value)}" + (f" ({kinds})" if kinds else ""))
        elif key == "fileslist" and isinstance(value, Mapping):
            lines.append("files:")
            for name, files in value.items():
                if isinstance(files, Mapping):  # per image: {"outputs": [...], "state": ...}
                    state = files.get("state")
                    lines.append(f"  {name}" + (f"  [{state}]" if state else "")
                                 + (f"  error: {files['error']}" if files.get("error") else ""))
                    lines.extend(f"    {f}" for f in files.get("outputs") or [])
                    continue
                files = files if isinstance(files, list) else [files]
                lines.append(f"  {name}: {len(files)} file(s)")
                lines.extend(f"    {f}" for f in files)
        elif key == "history":
            if isinstance(value, Mapping) and value and all(isinstance(v, list) for v in value.values()):
                n = max(len(v) for v in value.values())  # columns of equal length
                lines.append(f"history: {n} record(s) ({', '.join(value)})")
            else:
                n = len(value) if isinstance(value, (list, dict)) else 0
                lines.append(f"history: {n} record(s)")
        elif key == "data" and isinstance(value, Mapping) and isinstance(value.get("rows"), list) \
                and isinstance(value.get("columns"), list):  # getmergedata: the merged table
            rows = value["rows"]
            lines.append(f"merged table: {len(rows)} row(s), {len(value['columns'])} column(s)")
            lines.append("\t".join(map(str, value["columns"])))
            lines.extend("\t".join("" if v is None else _fmt_value(v) for v in row) for row in rows)
        elif isinstance(value, Mapping) and value and all(
                not isinstance(v, (dict, list)) for v in value.values()):
            lines.append(f"{key}:")
            lines.extend(_aligned(value))
        else:
            lines.append(f"{key}: {_fmt_value(value)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plotting

def _floats(col: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in col]


def extract_curve(resp: Mapping[str, Any]) -> tuple[list[float], list[float], list[float] | None]:
    """``(x, I, error)`` of the latest curve in a "plot data" response.

    Accepts ``data.array`` as columns ``[x, I, err]`` (this protocol), the original's
    nested ``[[x, I, err]]``, rows ``[[x, I, err], ...]``, or the first of ``data.graphs``.

    Raises
    ------
    ValueError
        When the response holds no curve.
    """
    data = resp.get("data") or {}
    arr = data.get("array")
    if not arr and data.get("graphs"):
        first = data["graphs"][0]
        arr = first.get("array") if isinstance(first, Mapping) else None
    if not arr or not isinstance(arr, list):
        raise ValueError("the response holds no curve")
    if isinstance(arr[0], list) and arr[0] and isinstance(arr[0][0], list):
        arr = arr[0]  # [[x, I, err]]
    if not all(isinstance(c, list) for c in arr):
        raise ValueError("the curve is not a list of columns")
    if 2 <= len(arr) <= 4 and len({len(c) for c in arr}) == 1:
        cols = arr  # columns, the protocol's form (preferred when ambiguous)
    elif all(2 <= len(r) <= 4 for r in arr):
        cols = [list(c) for c in zip(*arr)]  # rows -> columns
    else:
        cols = arr
    if len(cols) < 2 or len(cols[0]) != len(cols[1]):
        raise ValueError("the curve needs at least two columns of equal length (x and I)")
    x, y = _floats(cols[0]), _floats(cols[1])
    if not x:
        raise ValueError("the response holds no curve (no points yet)")
    err = _floats(cols[2]) if len(cols) > 2 and len(cols[2]) == len(x) else None
    return x, y, err


def x_axis_label(resp: Mapping[str, Any]) -> str:
    """The x label of the latest curve in a "plot data" response: its first column label
    (the radial unit of its calibration entry, χ for Phi-mode), else q in nm⁻¹."""
    data = resp.get("data") or {}
    labels = data.get("columnLabels")
    if not labels and data.get("graphs") and isinstance(data["graphs"][0], Mapping):
        labels = data["graphs"][0].get("columnLabels")
    if isinstance(labels, list) and labels and isinstance(labels[0], str) and labels[0].strip():
        return labels[0]
    return "q [nm$^{-1}$]"


def curve_figure(resp: Mapping[str, Any], skip: int = 0, clip: int = 0, xscale: str = "linear",
                 yscale: str = "log", fig=None):
    """Draw the response's curve (with its error band) into ``fig`` (a new Figure if None)."""
    import numpy as np
    from matplotlib.figure import Figure

    x_values, y_values, err = extract_curve(resp)
    n = len(x_values)
    sl = slice(max(skip, 0), max(n - max(clip, 0), 0))
    x, y = np.asarray(x_values, dtype=float)[sl], np.asarray(y_values, dtype=float)[sl]
    if yscale == "log":  # empty (zero) bins would otherwise be drawn as drops to the axis
        y = np.where(y > 0, y, np.nan)
    if xscale == "log":
        x = np.where(x > 0, x, np.nan)
    fig = fig if fig is not None else Figure(figsize=(7, 4.5))
    fig.clf()
    ax = fig.add_subplot(111)
    if err is not None:
        e = np.asarray(err)[sl]
        lower = y - e
        if yscale == "log":
            lower = np.where(lower > 0, lower, np.nan)
        ax.fill_between(x, lower, y + e, alpha=0.25, linewidth=0, label="count error")
    ax.plot(x, y, lw=1.2, label="I")
    ax.set_xscale(xscale)
    ax.set_yscale(yscale)
    ax.set_xlabel(x_axis_label(resp))
    ax.set_ylabel("Intensity [counts/pixel]")
    ax.set_title(os.path.basename(str((resp.get("data") or {}).get("filename", ""))) or "latest curve")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _save_figure(fig, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    suffix = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    from saxsdog.io.atomic import atomic_output

    with atomic_output(os.path.abspath(path)) as tmp:
        fig.savefig(tmp, format=suffix)


def _has_curve(resp: Mapping[str, Any]) -> bool:
    try:
        extract_curve(resp)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- main

def _error(msg: str, code: int) -> int:
    print(f"saxsleash: {msg}", file=sys.stderr)
    return code


def _build_request(cmd: str, pos: list[str]) -> tuple[str, Any, list[bytes]]:
    """``(command, argument, attachments)`` from the positional arguments, by the table's builder."""
    from saxsdog.protocol import client as builders

    spec = cli_commands()[cmd]
    if not spec.cli.builder:
        return spec.name, {}, []
    argument, attachments = getattr(builders, spec.cli.builder)(*pos)
    return spec.name, argument, attachments


def _plot(client, args) -> int:
    from saxsdog.protocol.client import raise_for_error

    if args.output:
        deadline = time.monotonic() + max(args.wait, 0.0)
        while True:
            resp = raise_for_error(client.request("plot", {}))
            if _has_curve(resp):
                break
            if time.monotonic() >= deadline:
                return _error(f"the server has no curve yet (answer: {resp.get('result')!r}); "
                              "try again once images are processed, or use --wait SECONDS",
                              EXIT_SERVER_ERROR)
            time.sleep(min(args.interval, max(deadline - time.monotonic(), 0.0)) or 0.05)
        fig = curve_figure(resp, args.skip, args.clip, args.xaxistype, args.yaxistype)
        _save_figure(fig, args.output)
        if args.json:
            print(json.dumps(resp, indent=2))
        else:
            print(f"saxsleash: wrote {args.output} ({resp['data'].get('filename', 'latest curve')})")
        return EXIT_OK

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                  or os.environ.get("WAYLAND_DISPLAY")):
        return _error("no display for a plot window; use -o FILE to write the plot to a file",
                      EXIT_USAGE)
    import matplotlib.pyplot as plt

    if "agg" == plt.get_backend().lower():
        return _error("matplotlib has no interactive backend here; use -o FILE", EXIT_USAGE)
    plt.ion()
    fig = plt.figure("saxsleash plot")
    last = None
    print("saxsleash: plotting the latest curve; Ctrl-C or close the window to stop", file=sys.stderr)
    try:
        while plt.fignum_exists(fig.number):
            resp = raise_for_error(client.request("plot", {}))
            if _has_curve(resp):
                key = (resp["data"].get("filename"), json.dumps(resp["data"].get("stat"), sort_keys=True))
                if key != last:
                    curve_figure(resp, args.skip, args.clip, args.xaxistype, args.yaxistype, fig=fig)
                    fig.canvas.draw_idle()
                    last = key
            plt.pause(args.interval)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _write_png(resp: Mapping[str, Any], path: str) -> int:
    import base64

    try:
        png = base64.b64decode((resp.get("data") or {}).get("png") or "", validate=True)
    except ValueError:
        png = b""
    if not png.startswith(b"\x89PNG"):
        return _error("the server's answer holds no PNG picture", EXIT_SERVER_ERROR)
    from saxsdog.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, png)
    print(f"saxsleash: wrote {path} ({len(png)} bytes)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``saxsleash``; return the exit code."""
    from saxsdog.errors import SaxsdogError
    from saxsdog.protocol.client import LeashClient, ServerError, raise_for_error
    from saxsdog.protocol.messages import ProtocolError
    from saxsdog.protocol.netconf import NetworkConfigError, server_from_args

    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    cmd = args.command
    table = cli_commands()
    if cmd not in table:
        parser.error(f"unknown command {cmd!r}; choose from: {', '.join(table)}")
    lo, hi = table[cmd].cli.min_args, table[cmd].cli.max_args
    if not lo <= len(args.arguments) <= hi:
        usage = (cmd + " " + table[cmd].cli.usage).strip()
        parser.error(f"{cmd} takes {lo if lo == hi else f'{lo} to {hi}'} argument(s): "
                     f"saxsleash {usage} (got {len(args.arguments)})")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.skip < 0 or args.clip < 0:
        parser.error("--skip and --clip must not be negative")
    if cmd == "maskpreview" and not args.output:
        parser.error("maskpreview needs -o FILE.png (where to write the picture)")

    try:
        entry = server_from_args(args)
    except NetworkConfigError as exc:
        return _error(str(exc), EXIT_USAGE)
    url: str = args.server or entry["Server"]  # the network file's schema requires "Server"
    try:
        wire, argument, attachments = _build_request(cmd, list(args.arguments))
    except (OSError, ValueError, SaxsdogError) as exc:
        return _error(str(exc), EXIT_USAGE)

    try:
        client = LeashClient(url, entry["Secret"], timeout=args.timeout)
    except ValueError as exc:
        return _error(str(exc), EXIT_USAGE)
    try:
        with client:
            if cmd == "plot":
                return _plot(client, args)
            resp = client.request(wire, argument, attachments)
            if cmd == "maskpreview":
                raise_for_error(resp)
                return _write_png(resp, args.output)
            if args.json:
                print(json.dumps(resp, indent=2, ensure_ascii=False))
            raise_for_error(resp)
            if args.json:
                pass
            elif cmd in ("convertfit2d", "convertponi"):  # the calibration file itself, for "> cal.json"
                print(json.dumps(resp["data"]["calibration"], indent=2, ensure_ascii=False))
            else:
                print(format_response(resp))
            if cmd == "validate" and (resp.get("data") or {}).get("problems"):
                return EXIT_SERVER_ERROR  # an invalid calibration, as for a failed command
            return EXIT_OK
    except ServerError as exc:
        return _error(f"server error: {exc}", EXIT_SERVER_ERROR)
    except (TimeoutError, ConnectionError) as exc:
        return _error(str(exc), EXIT_CONNECTION)
    except OSError as exc:  # writing the -o file
        return _error(f"cannot write {args.output}: {exc}", EXIT_USAGE)
    except ProtocolError as exc:
        return _error(f"invalid answer from the server at {url}: {exc}", EXIT_SERVER_ERROR)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
