"""Data consolidation: merge log tables with the images' metadata and integral parameters.

The result is one table with one row per image (the original SAXSDOG manual, §2.4, §3.6.3, §6.3):

* the image columns: ``file``, ``path``, ``image_time`` (Unix seconds), ``date`` and the
  other header values (``exposure_time``, ``wavelength``, ``detector``, ...) read with
  :func:`saxsdog.io.images.read_header` (or given as dicts);
* the integral parameters ``I0``, ``I1``, ``I2`` (and ``invariant``, ``correlation_length``
  when the ``.chi`` headers have them) from the pipeline's ``results/filelist.txt`` and/or
  the ``.chi`` headers, plus ``chi_file``;
* for every log table ``Name`` its columns as ``"<column> (<Name>)"`` and the time of the
  log row used, ``"time (<Name>)"`` (Unix seconds, after all shifts).

Time handling
-------------
Numeric log times are seconds since the table's ``TimeEpoch``: ``Mac`` = 1904-01-01 00:00
UTC (LabVIEW time stamps; ``unix = mac - 2082844800`` exactly), ``Unix`` = 1970-01-01 UTC.
Text times (ISO-8601) without a zone are local time, like the detector headers.  Then, for
each table, ``t = t_epoch - TimeOffset(table) - TimeOffset(global) + shift`` where ``shift``
is 0 unless a synchronisation is requested:

* ``FirstImageCorrelation`` (``saxsdmerge -l/--syncfirst``): ``shift`` makes the first row of
  that table coincide with the first image;
* ``ZeroImageCorrelation`` (``saxsdmerge -z/--synczero``): ``shift`` makes the first row of
  that table coincide with the zero image (file name matching ``ZeroImagePattern``,
  default ``*zero*``).

The shift applies to all log tables (they share one clock).  Each image then gets, from
every table, the last row whose time is at or before the image time (previous-value
interpolation; images before a table's first row get empty values).

:func:`merge_data` is a pure function of the configuration and the files; the server's
``mergedata`` command and ``saxsdmerge`` both call it.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from saxsdog.config import SchemaDoc
from saxsdog.errors import ConfigFieldError, SaxsdogError
from saxsdog.extras import import_optional
from saxsdog.io.atomic import atomic_output

__all__ = [
    "MAC_EPOCH_OFFSET",
    "MergeError",
    "MergeConfigError",
    "MergeResult",
    "mac_to_unix",
    "unix_to_mac",
    "load_schema",
    "validate_merge_config",
    "normalize_config",
    "default_config",
    "read_log_table",
    "read_filelist",
    "image_table",
    "merge",
    "merge_data",
    "write_merged",
    "read_merged",
    "sync_plot",
    "FORMAT_SUFFIXES",
]

#: Seconds from 1904-01-01T00:00:00Z (Mac / LabVIEW epoch) to 1970-01-01T00:00:00Z.
MAC_EPOCH_OFFSET = 2082844800

#: File suffix of each output format.
FORMAT_SUFFIXES = {"csv": ".csv", "json": ".json", "hdf": ".hdf", "exel": ".xlsx"}

_TIME_NAMES = ("time", "timestamp", "t", "date", "datetime", "date time", "time [s]", "time(s)",
               "time (s)", "time/s")

_PathLike = str | os.PathLike


class MergeError(SaxsdogError, ValueError):
    """The data could not be merged (missing file, unreadable table, no images...)."""


class MergeConfigError(MergeError, ConfigFieldError):
    """A merge configuration is invalid.

    Attributes
    ----------
    path
        JSON path of the offending field, e.g. ``$.LogDataTables[0].TimeEpoch``.
    value
        The offending value (``None`` when missing).
    expected
        What would have been accepted.
    """

    what = "merge configuration"


# --------------------------------------------------------------------------- #
# Epochs
# --------------------------------------------------------------------------- #


def mac_to_unix(t: Any) -> Any:
    """Seconds since 1904-01-01 UTC (Mac / LabVIEW) to seconds since 1970-01-01 UTC."""
    return t - MAC_EPOCH_OFFSET


def unix_to_mac(t: Any) -> Any:
    """Inverse of :func:`mac_to_unix`."""
    return t + MAC_EPOCH_OFFSET


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


@lru_cache(maxsize=1)
def _doc() -> SchemaDoc:
    """The merge configuration's schema document (loaded on first use)."""
    return SchemaDoc("datamerge.schema.json", MergeConfigError, "merge configuration",
                     alternatives=[("OutputFileName", "OutputFileBaseName"), ("TimeEpoch", "TimeEpoc"),
                                   ("exel", "excel")])


def load_schema() -> dict[str, Any]:
    """The Data Consolidation JSON Schema (draft 2020-12), a fresh copy."""
    return _doc().schema


def validate_merge_config(config: Any) -> None:
    """Validate a merge configuration against the shipped schema.

    Unknown keys are refused with a "did you mean" suggestion; keys starting with ``x-``
    are private notes.

    Raises
    ------
    MergeConfigError
        Naming the JSON path of the most relevant violation, its value and what was expected.
    """
    if not isinstance(config, Mapping):
        raise MergeConfigError("a merge configuration must be a JSON object", "$", config,
                               "a JSON object")
    _doc().check(dict(config))


def normalize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate, resolve the original spellings and fill in the defaults.

    Returns
    -------
    dict
        A new configuration: ``TimeEpoc`` → ``TimeEpoch``, ``OutputFileBaseName`` →
        ``OutputFileName``, ``excel`` → ``exel``, numeric strings → floats, defaults added.

    Raises
    ------
    MergeConfigError
        The configuration is invalid (the message names the JSON path).
    """
    validate_merge_config(config)
    conf = copy.deepcopy(dict(config))
    if "OutputFileBaseName" in conf:
        conf.setdefault("OutputFileName", conf["OutputFileBaseName"])
        del conf["OutputFileBaseName"]
    for table in conf.get("LogDataTables", []) or []:
        if "TimeEpoc" in table:
            table.setdefault("TimeEpoch", table["TimeEpoc"])
            del table["TimeEpoc"]
    formats = conf.get("OutputFormats")
    if isinstance(formats, dict) and "excel" in formats:
        formats["exel"] = bool(formats.pop("excel")) or bool(formats.get("exel", False))
    conf = _doc().with_defaults(conf)
    conf["TimeOffset"] = float(conf["TimeOffset"])
    names: dict[str, int] = {}
    for k, table in enumerate(conf["LogDataTables"]):
        table["TimeOffset"] = float(table["TimeOffset"])
        if table["Name"] in names:
            raise MergeConfigError(
                f"log table name {table['Name']!r} is already used by table {names[table['Name']]}",
                f"$.LogDataTables[{k}].Name", table["Name"], "a unique name per table")
        names[table["Name"]] = k
    return conf


def default_config() -> dict[str, Any]:
    """A complete configuration with every default (no log tables)."""
    return normalize_config({})


# --------------------------------------------------------------------------- #
# Reading tables
# --------------------------------------------------------------------------- #


def _looks_numeric(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _split(line: str, sep: str | None) -> list[str]:
    return [t.strip() for t in (line.split(sep) if sep else line.split())]


def _detect_sep(line: str) -> str | None:
    for sep in ("\t", ",", ";"):
        if sep in line:
            return sep
    return None


def read_log_table(path: _PathLike | io.StringIO, time_column: str | int | None = None):
    """Read one log table (text/CSV with a header line and a time column).

    The delimiter (tab, comma, semicolon or white space) is detected from the header line.
    Lines starting with ``#`` are comments; a comment line right before the first data line
    serves as the header when there is no other (``# time<TAB>value``).

    Parameters
    ----------
    path
        The file (or a text buffer).
    time_column
        Name or index of the time column; default: the first column named like ``time``
        (``Time``, ``timestamp``, ``t``, ``date``, ...), else the first column.

    Returns
    -------
    pandas.DataFrame
        The columns as read (numbers as floats where possible, names stripped), with the time
        column moved first and renamed ``"time"``.  Rows keep their file order.

    Raises
    ------
    MergeError
        The file is missing, empty or has no header.
    """
    import pandas as pd

    label = getattr(path, "name", None) or str(path)
    try:
        text = path.getvalue() if isinstance(path, io.StringIO) else Path(path).read_text(
            encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise MergeError(f"log file not found: {label}") from None
    except OSError as exc:
        raise MergeError(f"cannot read log file {label}: {exc}") from None
    lines = [ln.rstrip("\r\n") for ln in text.splitlines()]
    header: str | None = None
    last_comment: str | None = None
    data_start = None
    for i, ln in enumerate(lines):
        s = ln.strip()
        if not s:
            continue
        if s.startswith("#"):
            last_comment = s.lstrip("#").strip()
            continue
        sep = _detect_sep(s)
        tokens = _split(s, sep)
        if header is None and all(_looks_numeric(t) for t in tokens if t):
            if last_comment is None:
                raise MergeError(f"log file {label} has no header line with column names")
            header = last_comment
            data_start = i
        elif header is None:
            header = s
            data_start = i + 1
        break
    if header is None or data_start is None:
        raise MergeError(f"log file {label} is empty")
    sep = _detect_sep(header)
    names = _split(header, sep)
    body = [ln for ln in lines[data_start:] if ln.strip() and not ln.lstrip().startswith("#")]
    # Duplicate or empty names would make columns ambiguous.
    seen: dict[str, int] = {}
    clean = []
    for k, n in enumerate(names):
        n = n or f"column{k}"
        if n in seen:
            seen[n] += 1
            n = f"{n}.{seen[n]}"
        else:
            seen[n] = 0
        clean.append(n)
    try:
        df = pd.read_csv(io.StringIO("\n".join(body)), sep=sep if sep else r"\s+", header=None,
                         names=clean, engine="python", skipinitialspace=True)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
        raise MergeError(f"log file {label} cannot be parsed as a table: {exc}") from None
    col = _time_column(df, time_column, label)
    df = df[[col] + [c for c in df.columns if c != col]].rename(columns={col: "time"})
    return df


def _time_column(df, time_column, label: str):
    if time_column is not None:
        if isinstance(time_column, int):
            if time_column >= len(df.columns):
                raise MergeError(f"log file {label} has no column {time_column} (it has "
                                 f"{len(df.columns)})")
            return df.columns[time_column]
        if time_column not in df.columns:
            raise MergeError(f"log file {label} has no column {time_column!r} (columns: "
                             f"{', '.join(map(str, df.columns))})")
        return time_column
    for c in df.columns:
        if str(c).strip().lower() in _TIME_NAMES:
            return c
    for c in df.columns:
        if "time" in str(c).lower():
            return c
    return df.columns[0]


def _to_unix(values, epoch: str, label: str) -> np.ndarray:
    """Time column → Unix seconds (float64)."""
    import pandas as pd

    num = pd.to_numeric(values, errors="coerce")
    if num.notna().all():
        t = num.to_numpy(dtype=np.float64)
        return mac_to_unix(t) if epoch == "Mac" else t
    out = np.empty(len(values), dtype=np.float64)
    for k, v in enumerate(values):
        out[k] = _parse_time(v, epoch, label)
    return out


def _parse_time(v: Any, epoch: str, label: str) -> float:
    try:
        x = float(v)
        return float(mac_to_unix(x)) if epoch == "Mac" else x
    except (TypeError, ValueError):
        pass
    try:
        dt = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    except ValueError:
        raise MergeError(f"{label}: cannot read time value {v!r} (expected seconds since the "
                         f"{epoch} epoch or an ISO-8601 date)") from None
    return dt.timestamp()  # naive = local time, as the detector headers


def read_filelist(path: _PathLike):
    """Read the pipeline's ``results/filelist.txt`` (tab separated).

    Returns
    -------
    pandas.DataFrame
        Columns ``file`` (as written, ``path#frame`` for frames of stacks), ``output``,
        ``I0``, ``I1``, ``I2``, ``image_time`` (floats; empty → NaN), then the classifiers'
        columns (``Guinier.Rg``, ``CorMap.P_adjusted`` ...): numbers as floats, ``True``/``False``
        as 1.0/0.0, text columns (``Guinier.status``, ``alarms``) as text.
    """
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise MergeError(f"file list not found: {path}") from None
    except Exception as exc:  # noqa: BLE001
        raise MergeError(f"file list {path} cannot be read: {exc}") from None
    for c in df.columns:
        if c in ("file", "output"):
            continue
        text = df[c].str.strip()
        if c in ("I0", "I1", "I2", "image_time"):
            df[c] = pd.to_numeric(text, errors="coerce")
            continue
        given = text[text != ""]
        if given.isin(["True", "False"]).all() and len(given):
            df[c] = text.map({"True": 1.0, "False": 0.0})  # empty -> NaN
        elif pd.to_numeric(given, errors="coerce").notna().all():
            df[c] = pd.to_numeric(text, errors="coerce")  # a number column (empty -> NaN)
    return df


# --------------------------------------------------------------------------- #
# Images
# --------------------------------------------------------------------------- #


def _find_images(directory: Path, pattern: str, recursive: bool) -> list[Path]:
    from saxsdog.io.images import iter_images

    if not directory.is_dir():
        raise MergeError(f"image directory not found: {directory}")
    return sorted(Path(p) for p in iter_images(directory, recursive=recursive, pattern=pattern))


def _image_rows_from_files(paths: Sequence[Path]) -> list[dict[str, Any]]:
    from saxsdog.io.images import read_header

    rows = []
    for p in paths:
        try:
            header = read_header(p)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the merge
            header = {"error": str(exc)}
        row: dict[str, Any] = {"file": p.name, "path": str(p)}
        ts = header.get("timestamp")
        if ts is None:
            ts = p.stat().st_mtime
            row["time_source"] = "mtime"
        else:
            row["time_source"] = "header"
        row["image_time"] = float(ts)
        for k, v in header.items():
            if k != "timestamp" and not isinstance(v, Mapping):  # "header": the raw fields, not a column
                row.setdefault(k, v)
        rows.append(row)
    return rows


def _image_rows_from_dicts(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for k, item in enumerate(items):
        row = dict(item)
        path = row.get("path") or row.get("file") or row.get("name")
        if path is None:
            raise MergeError(f"image record {k} has no 'file', 'path' or 'name'")
        row.setdefault("path", str(path))
        row["file"] = os.path.basename(str(row.get("file") or path))
        row.pop("name", None)
        t = row.pop("timestamp", None)
        if row.get("image_time") is None:
            row["image_time"] = t
        if row.get("image_time") is None and row.get("date"):
            row["image_time"] = _parse_time(row["date"], "Unix", f"image record {k}")
        if row.get("image_time") is None:
            raise MergeError(f"image record {k} ({row['file']}) has no time: give 'timestamp', "
                             "'image_time' or 'date'")
        row["image_time"] = float(row["image_time"])
        row.setdefault("time_source", "given")
        rows.append(row)
    return rows


def _key(path: str) -> str:
    """Comparable form of an image path (``file#0`` is the file itself)."""
    s, frame = str(path), ""
    if "#" in s:
        s, frame = s.rsplit("#", 1)
        frame = "" if frame == "0" else "#" + frame
    return os.path.normcase(os.path.abspath(s)) + frame


#: ``file output I0 I1 I2 image_time``: the original's columns of results/filelist.txt.
_FILELIST_BASE_COLUMNS = 6


def _add_parameters(rows: list[dict[str, Any]], filelist, chi_dir: Path | None) -> None:
    """Fill I0/I1/I2 (and more) from the file list and the .chi headers."""
    import pandas as pd

    from saxsdog.io.chi import read_chi

    by_path: dict[str, Mapping[str, Any]] = {}
    by_name: dict[str, Mapping[str, Any]] = {}
    if filelist is not None:
        for rec in filelist.to_dict("records"):
            f = str(rec.get("file", ""))
            by_path[_key(f)] = rec
            by_name.setdefault(os.path.basename(f.split("#")[0]), rec)
    for row in rows:
        rec = by_path.get(_key(row["path"])) or by_name.get(row["file"])
        if rec is not None:
            for c in ("I0", "I1", "I2"):
                if c in rec and not pd.isna(rec[c]):
                    row.setdefault(c, float(rec[c]))
            # the classifiers' columns: the file list also has the coordinator's values
            # (CorMap, averaging, alarms) that the workers' .chi headers cannot have
            for c in list(rec)[_FILELIST_BASE_COLUMNS:]:
                v = rec[c]
                if isinstance(v, (int, float)):
                    if not pd.isna(v):
                        row.setdefault(c, float(v))
                elif isinstance(v, str) and v != "":
                    row.setdefault(c, v)
            out = rec.get("output")
            if isinstance(out, str) and out.endswith(".chi"):
                row.setdefault("chi_file", out)
        candidates = []
        if row.get("chi_file"):
            candidates.append(Path(row["chi_file"]))
        stem = os.path.splitext(row["file"])[0]
        if chi_dir is not None:
            candidates.append(chi_dir / f"{stem}.chi")
        candidates.append(Path(row["path"]).with_suffix(".chi"))
        for chi_path in candidates:
            if chi_path.is_file():
                try:
                    params = read_chi(chi_path).parameters or {}
                except (OSError, ValueError):
                    continue
                row["chi_file"] = str(chi_path)
                for k, v in params.items():
                    if isinstance(v, (int, float)) or v is None:
                        row.setdefault(k, float("nan") if v is None else float(v))
                break


def image_table(images: Any = None, *, directory: _PathLike | None = None, pattern: str = "*",
                recursive: bool = True, filelist: _PathLike | None = None,
                chi_directory: _PathLike | None = None):
    """The image part of the merge: one row per image, sorted by image time.

    Parameters
    ----------
    images
        A list of dicts (``file``/``path``, ``timestamp``/``image_time``/``date`` and any
        other values), or ``None`` to read the image headers in *directory*.
    directory, pattern, recursive
        Where the images are (when *images* is ``None``).
    filelist
        The pipeline's ``results/filelist.txt``: integral parameters and, when there is
        neither *images* nor *directory*, the list of images and their times.
    chi_directory
        Folder of the ``.chi`` files (``<stem>.chi``); ``.chi`` files beside the images and
        those named in the file list are found without it.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    fl = read_filelist(filelist) if filelist is not None else None
    if images is not None:
        rows = _image_rows_from_dicts(images)
    elif directory is not None:
        rows = _image_rows_from_files(_find_images(Path(directory), pattern, recursive))
    elif fl is not None:
        rows = []
        for rec in fl.to_dict("records"):
            f = str(rec["file"])
            rows.append({"file": os.path.basename(f), "path": f,
                         "image_time": float(rec.get("image_time", float("nan"))),
                         "time_source": "filelist"})
    else:
        raise MergeError("no images: give image records, an image directory or a file list")
    if not rows:
        raise MergeError(f"no images found in {directory}" if directory is not None else
                         "no images given")
    _add_parameters(rows, fl, Path(chi_directory) if chi_directory is not None else None)
    df = pd.DataFrame(rows)
    first = [c for c in ("file", "path", "image_time", "date", "exposure_time") if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    df = df.sort_values("image_time", kind="stable").reset_index(drop=True)
    return df


# --------------------------------------------------------------------------- #
# Merging
# --------------------------------------------------------------------------- #


@dataclass
class MergeResult:
    """Everything a merge produced.

    Attributes
    ----------
    table
        The merged table (one row per image).
    logs
        Each log table after epoch conversion, offsets and the synchronisation shift
        (``time`` in Unix seconds), by name.
    images
        The image table before the join.
    shift
        Seconds added to all log times by FirstImageCorrelation / ZeroImageCorrelation.
    sync_table
        Name of the table used for the synchronisation (or for the sync plot), if any.
    config
        The normalised configuration.
    """

    table: Any
    logs: dict[str, Any] = field(default_factory=dict)
    images: Any = None
    shift: float = 0.0
    sync_table: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def write(self, output: _PathLike | None = None) -> dict[str, Path]:
        """Write the table in the configuration's ``OutputFormats`` (with its ``HDFOptions``).

        Parameters
        ----------
        output
            Base name the formats' suffixes are appended to; the configuration's
            ``OutputFileName`` by default.

        Returns
        -------
        dict
            Format name → written path (empty when no format is set).
        """
        formats = self.config.get("OutputFormats") or {}
        if not any(formats.values()):
            return {}
        hdf = self.config.get("HDFOptions") or {}
        return write_merged(self.table, output if output is not None else self.config["OutputFileName"],
                            formats, include_chi=bool(hdf.get("IncludeCHI")),
                            include_tif=bool(hdf.get("IncludeTIF")))


def _resolve(base: Path, p: str, root: Path | None, what: str) -> Path:
    """``p`` relative to ``base``; with a ``root``, refuse anything (symlinks followed) outside it."""
    path = Path(os.path.expanduser(p)) if root is None else Path(p)  # no ~ on a server
    if not path.is_absolute():
        path = base / path
    path = Path(os.path.normpath(path))
    if root is not None:
        real = Path(os.path.realpath(path))
        top = Path(os.path.realpath(root))
        if real != top and top not in real.parents:
            raise MergeError(f"{what} {p!r} is outside the base directory")
    return path


def _queue_outputs(directory: Path) -> tuple[Path, Path]:
    """Where saxsdog with default options puts the file list and the curves of ``directory``."""
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.naming import results_dir

    results = results_dir(directory, QueueOptions())
    return results / "filelist.txt", results.parent


def _inside(path: Path, root: Path | None) -> bool:
    if root is None:
        return True
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == top or top in real.parents


def _log_paths(table: Mapping[str, Any], base: Path, root: Path | None, k: int,
               uploads: Mapping[str, _PathLike] | None) -> list[Path]:
    out = []
    for j, f in enumerate(table["Files"]):
        where = f"$.LogDataTables[{k}].Files[{j}]"
        local = f.get("LocalPath") or ""
        if local and uploads is not None:
            # server mode: a LocalPath is a file on the client, sent along with the request
            if local not in uploads:
                raise MergeError(f"log file {local!r} ({where}.LocalPath, on the client) was not attached "
                                 "to the request")
            out.append(Path(uploads[local]))
            continue
        if local:
            p = local
        else:
            remote = f.get("RemotePath")
            p = os.sep.join(remote) if isinstance(remote, list) else str(remote)
        out.append(_resolve(base, p, root, f"log file {where}"))
    return out


def _load_table(table: Mapping[str, Any], paths: Sequence[Path]):
    import pandas as pd

    parts = []
    for p in paths:
        df = read_log_table(p, table.get("TimeColumn"))
        df["time"] = _to_unix(df["time"], table["TimeEpoch"], str(p))
        parts.append(df)
    df = pd.concat(parts, ignore_index=True, sort=False) if len(parts) > 1 else parts[0]
    df = df[df["time"].notna()].sort_values("time", kind="stable").reset_index(drop=True)
    df["time"] = df["time"] - table["TimeOffset"]
    return df


def merge(config: Mapping[str, Any], base_dir: _PathLike = ".", images: Any = None, *,
          confine: bool = False, confine_to: _PathLike | None = None,
          uploads: Mapping[str, _PathLike] | None = None) -> MergeResult:
    """Merge log tables with the image data; everything :func:`merge_data` does, with details.

    Parameters
    ----------
    config
        The Data Consolidation configuration (validated here).
    base_dir
        Relative paths in the configuration (log files, ``Images``) resolve against it; it is
        also the image directory when the configuration names none.
    images
        Image records (list of dicts) or an image directory, overriding the configuration.
    confine
        Refuse paths outside *base_dir* (server mode).
    confine_to
        Refuse paths outside this folder instead (a server whose relative paths resolve
        against the queue's directory but which may read anything under its base).
    uploads
        Server mode: the log files the client attached, by their ``LocalPath``.  A
        ``LocalPath`` is then looked up here (never on the server's disk) and one that was
        not attached is an error; ``RemotePath`` names files on the server.

    Returns
    -------
    MergeResult

    Raises
    ------
    MergeConfigError
        Invalid configuration.
    MergeError
        Missing files, unreadable tables, no images, no zero image for ZeroImageCorrelation.
    """
    import pandas as pd

    conf = normalize_config(config)
    base = Path(base_dir)
    root = Path(confine_to) if confine_to is not None else (base if confine else None)
    img_conf = conf.get("Images") or {}
    filelist = (_resolve(base, img_conf["FileList"], root, "$.Images.FileList")
                if img_conf.get("FileList") else None)
    chi_dir = (_resolve(base, img_conf["ChiDirectory"], root, "$.Images.ChiDirectory")
               if img_conf.get("ChiDirectory") else None)
    if isinstance(images, (str, os.PathLike)):
        directory: Path | None = _resolve(base, str(images), root, "image directory")
        images = None
    elif images is None and img_conf.get("Directory"):
        directory = _resolve(base, img_conf["Directory"], root, "$.Images.Directory")
    elif images is None and filelist is None:
        directory = base
    else:
        directory = None
    if directory is not None and (filelist is None or chi_dir is None):
        # By default, the outputs of a saxsdog run over the folder with default options:
        # the integral parameters (I0, I1, I2) in ../work/results/filelist.txt and the curves
        # in ../work (only where a server may read them).
        default_list, default_chi = _queue_outputs(directory)
        if filelist is None and default_list.is_file() and _inside(default_list, root):
            filelist = default_list
        if chi_dir is None and default_chi.is_dir() and _inside(default_chi, root):
            chi_dir = default_chi
    imgs = image_table(images, directory=directory, pattern=img_conf.get("Pattern", "*"),
                       recursive=img_conf.get("Recursive", True), filelist=filelist,
                       chi_directory=chi_dir)

    logs: dict[str, Any] = {}
    for k, table in enumerate(conf["LogDataTables"]):
        df = _load_table(table, _log_paths(table, base, root, k, uploads))
        df["time"] = df["time"] - conf["TimeOffset"]
        logs[table["Name"]] = df

    shift = 0.0
    sync_name = None
    zero = next((t for t in conf["LogDataTables"] if t.get("ZeroImageCorrelation")), None)
    first = next((t for t in conf["LogDataTables"] if t.get("FirstImageCorrelation")), None)
    if zero is not None:
        sync_name = zero["Name"]
        pattern = conf["ZeroImagePattern"]
        hit = imgs[imgs["file"].map(lambda f: fnmatch.fnmatch(str(f).lower(), pattern.lower()))]
        if hit.empty:
            raise MergeError(f"ZeroImageCorrelation: no image matches {pattern!r}")
        if logs[sync_name].empty:
            raise MergeError(f"ZeroImageCorrelation: log table {sync_name!r} has no rows")
        shift = float(hit["image_time"].iloc[0]) - float(logs[sync_name]["time"].iloc[0])
    elif first is not None:
        sync_name = first["Name"]
        if logs[sync_name].empty:
            raise MergeError(f"FirstImageCorrelation: log table {sync_name!r} has no rows")
        shift = float(imgs["image_time"].min()) - float(logs[sync_name]["time"].iloc[0])
    if shift:
        for df in logs.values():
            df["time"] = df["time"] + shift
    if sync_name is None and logs:
        sync_name = next(iter(logs))

    merged = imgs.copy()
    order = np.argsort(merged["image_time"].to_numpy(), kind="stable")
    merged = merged.iloc[order].reset_index(drop=True)
    for name, df in logs.items():
        right = df.rename(columns={c: f"{c} ({name})" for c in df.columns})
        right = right.sort_values(f"time ({name})", kind="stable")
        key = f"time ({name})"
        left = merged[["image_time"]].copy()
        left["_row"] = np.arange(len(left))
        left = left.sort_values("image_time", kind="stable")
        valid = left["image_time"].notna()
        joined = pd.merge_asof(left[valid], right, left_on="image_time", right_on=key,
                               direction="backward", allow_exact_matches=True)
        joined = joined.set_index("_row").reindex(np.arange(len(merged)))
        for c in right.columns:
            merged[c] = joined[c].to_numpy()
    return MergeResult(table=merged, logs=logs, images=imgs, shift=shift, sync_table=sync_name,
                       config=conf)


def merge_data(config: Mapping[str, Any], base_dir: _PathLike = ".", images: Any = None, *,
               confine: bool = False):
    """Merge log tables with image metadata and integral parameters into one table.

    Parameters
    ----------
    config
        The Data Consolidation configuration (see ``schemas/datamerge.schema.json``).
    base_dir
        Relative paths in *config* resolve against it; default image directory.
    images
        Image records (list of dicts with ``file``/``path`` and ``timestamp``/``date``) or
        an image directory, instead of the configuration's.
    confine
        Refuse any path outside *base_dir* (server mode).

    Returns
    -------
    pandas.DataFrame
        One row per image, sorted by image time.
    """
    return merge(config, base_dir, images, confine=confine).table


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #


def _atomic(path: Path, writer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        writer(tmp)


def _records(df) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            elif v is not None and not isinstance(v, (str, int, float, bool)):
                try:
                    import pandas as pd

                    v = None if pd.isna(v) else str(v)
                except (TypeError, ValueError):
                    v = str(v)
            clean[str(k)] = v
        out.append(clean)
    return out


def _write_hdf(df, path: Path, include_chi: bool, include_tif: bool) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["creator"] = "saxsdog saxsdmerge"
        g = f.create_group("LogData")
        g.attrs["columns"] = json.dumps([str(c) for c in df.columns])
        g.attrs["rows"] = len(df)
        for k, c in enumerate(df.columns):
            col = df[c]
            name = f"{k:03d} " + str(c).replace("/", "\u2215")
            if col.dtype.kind in "fiub":
                ds = g.create_dataset(name, data=col.to_numpy())
            else:
                values = ["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v)
                          for v in col.tolist()]
                ds = g.create_dataset(name, data=values, dtype=h5py.string_dtype())
            ds.attrs["column"] = str(c)
        if include_chi and "chi_file" in df.columns:
            graphs = f.create_group("Graphs")
            for file, chi in zip(df["file"], df["chi_file"]):
                if isinstance(chi, str) and os.path.isfile(chi):
                    graphs.create_dataset(str(file).replace("/", "\u2215"),
                                          data=Path(chi).read_text(encoding="latin-1"),
                                          dtype=h5py.string_dtype())
        if include_tif and "path" in df.columns:
            from saxsdog.io.images import read_image

            imgs = f.create_group("Images")
            for file, p in zip(df["file"], df["path"]):
                if isinstance(p, str) and os.path.isfile(p):
                    imgs.create_dataset(str(file).replace("/", "\u2215"), data=read_image(p).data,
                                        compression="gzip", compression_opts=4)


def _format_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".json": "json", ".hdf": "hdf", ".h5": "hdf", ".hdf5": "hdf",
            ".xlsx": "exel", ".xls": "exel"}.get(suffix)


def write_merged(df, output: _PathLike, formats: Mapping[str, bool] | Iterable[str] | None = None,
                 *, include_chi: bool = False, include_tif: bool = False) -> dict[str, Path]:
    """Write the merged table, atomically, in one or more formats.

    Parameters
    ----------
    df
        The merged table.
    output
        Either a file name whose suffix names the format (``.csv``, ``.json``, ``.hdf``/
        ``.h5``, ``.xlsx``/``.xls``) when *formats* is ``None``, or a base name to which each
        format's suffix (:data:`FORMAT_SUFFIXES`) is appended.
    formats
        ``{"csv": True, ...}`` as in the configuration's ``OutputFormats``, or a list of names
        (``csv``, ``json``, ``hdf``, ``exel``/``excel``/``xlsx``).
    include_chi, include_tif
        HDF5 only: add the ``.chi`` files (as text, group ``/Graphs``) and the images (group
        ``/Images``).

    Returns
    -------
    dict
        Format name → written path.

    Raises
    ------
    MergeError
        Unknown format or suffix.
    """
    output = Path(output)
    if formats is None:
        fmt = _format_of(output)
        if fmt is None:
            raise MergeError(f"{output}: unknown output format {output.suffix!r} (use .csv, "
                             ".json, .hdf, .h5 or .xlsx)")
        targets = {fmt: output}
    else:
        names = [k for k, v in formats.items() if v] if isinstance(formats, Mapping) else list(formats)
        targets = {}
        for n in names:
            key = {"excel": "exel", "xlsx": "exel", "xls": "exel", "h5": "hdf", "hdf5": "hdf"}.get(
                n.lower(), n.lower())
            if key not in FORMAT_SUFFIXES:
                raise MergeError(f"unknown output format {n!r} (use csv, json, hdf, exel)")
            targets[key] = output.with_name(output.name + FORMAT_SUFFIXES[key])
    written = {}
    for fmt, path in targets.items():
        if fmt == "csv":
            _atomic(path, lambda p: df.to_csv(p, index=False))
        elif fmt == "json":
            _atomic(path, lambda p: p.write_text(json.dumps(_records(df), indent=1,
                                                             allow_nan=False)))
        elif fmt == "hdf":
            _atomic(path, lambda p: _write_hdf(df, p, include_chi, include_tif))
        elif fmt == "exel":
            import_optional("openpyxl", "merge", "Excel output")  # else pandas' own ImportError, mid-write
            _atomic(path, lambda p: df.to_excel(p, index=False, sheet_name="LogData",
                                                engine="openpyxl"))
        written[fmt] = path
    return written


def read_merged(path: _PathLike):
    """Read a merged table written by :func:`write_merged` (any of the four formats)."""
    import pandas as pd

    path = Path(path)
    fmt = _format_of(path)
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "json":
        return pd.DataFrame(json.loads(path.read_text()))
    if fmt == "exel":
        return pd.read_excel(path, sheet_name="LogData", engine="openpyxl")
    if fmt == "hdf":
        import h5py

        with h5py.File(path, "r") as f:
            g = f["LogData"]
            columns = json.loads(g.attrs["columns"])
            data = {}
            for name in sorted(g.keys()):
                ds = g[name]
                values = ds[()]
                if ds.dtype.kind in "OS":
                    values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
                data[ds.attrs["column"]] = values
            return pd.DataFrame({c: data[c] for c in columns})
    raise MergeError(f"{path}: unknown format")


# --------------------------------------------------------------------------- #
# The time-synchronisation check plot
# --------------------------------------------------------------------------- #


def _signal_column(df) -> str | None:
    """The log column to plot: a shutter duration if there is one, else the first numeric."""
    import pandas as pd

    numeric = [c for c in df.columns if c != "time" and pd.api.types.is_numeric_dtype(df[c])]
    for c in numeric:
        if any(w in str(c).lower() for w in ("duration", "exposure", "shutter")):
            return c
    return numeric[0] if numeric else None


def sync_plot(result: MergeResult, path: _PathLike, column: str | None = None) -> Path:
    """Plot the exposure times of the images against the (shifted) log signal over time.

    The manual's check of the time synchronisation: the shutter log's durations (or another
    log column) and the images' exposure times should line up on the same time axis.

    Parameters
    ----------
    result
        A :class:`MergeResult`.
    path
        PNG (or any matplotlib format) to write.
    column
        Log column to plot; default: of the sync table, a column named like ``Duration``,
        ``exposure`` or ``shutter``, else its first numeric column.

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(10, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    imgs = result.images
    t_img = imgs["image_time"].to_numpy(dtype=float)
    t0 = float(np.nanmin(t_img)) if t_img.size else 0.0
    exposure = (imgs["exposure_time"].to_numpy(dtype=float) if "exposure_time" in imgs.columns
                else np.zeros(t_img.size))
    exposure = np.where(np.isfinite(exposure), exposure, 0.0)
    # Lane 1: the images' exposures as bars [image time, image time + exposure].
    ax.broken_barh([(t - t0, max(e, 1e-3)) for t, e in zip(t_img, exposure)], (1.05, 0.8),
                   facecolors="tab:red", alpha=0.7)
    ax.plot(t_img - t0, np.full(t_img.size, 1.45), "|", color="darkred", markersize=14,
            label="images (header time, exposure)")
    labels = {1.45: "images"}
    if result.sync_table and result.sync_table in result.logs:
        df = result.logs[result.sync_table]
        col = column or _signal_column(df)
        t_log = df["time"].to_numpy(dtype=float) - t0
        if col is not None and any(w in str(col).lower() for w in ("duration", "exposure", "shutter")):
            # Lane 0: the shutter openings [log time, log time + duration].
            dur = np.nan_to_num(df[col].to_numpy(dtype=float))
            ax.broken_barh([(t, max(d, 1e-3)) for t, d in zip(t_log, dur)], (0.05, 0.8),
                           facecolors="tab:blue", alpha=0.7)
            ax.plot(t_log, np.full(t_log.size, 0.45), "|", color="navy", markersize=14,
                    label=f"{col} ({result.sync_table})")
        elif col is not None:
            y = df[col].to_numpy(dtype=float)
            lo, hi = np.nanmin(y), np.nanmax(y)
            scaled = 0.05 + 0.8 * (y - lo) / (hi - lo) if hi > lo else np.full(y.size, 0.45)
            ax.step(t_log, scaled, where="post", color="tab:blue",
                    label=f"{col} ({result.sync_table}), scaled")
        labels[0.45] = f"log {result.sync_table!r}"
    ax.set_yticks(list(labels), list(labels.values()))
    ax.set_ylim(-0.1, 2.0)
    start = datetime.fromtimestamp(t0).isoformat(timespec="seconds") if t_img.size else ""
    ax.set_xlabel(f"time [s] since the first image ({start})")
    title = "Time synchronisation check: shutter openings and image exposures should coincide"
    if result.shift:
        title += f"\n(log times shifted by {result.shift:+.3f} s)"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _atomic(path, lambda p: fig.savefig(p, format=path.suffix.lstrip(".") or "png"))
    return path
