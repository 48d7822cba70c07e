"""The coordinator's classifiers: CorMap and the other stateful ones, averaging, and alarms.

The workers run the stateless classifiers (:meth:`saxsdog.calibration.Calibration.curves`);
what needs the frames in the order they were taken runs here, once, in the dispatcher
thread, before the other sinks see the record (so history, the ledger, the file list and the
run files get the values).

Order: frames arrive in the order workers finish them.  Each frame is compared with the
frame taken just before it among those already seen (by image time, then name), not with
whichever arrived last; a frame overtaken by its successor is still compared with its own
predecessor when that one arrived first (the usual case, since frames are submitted in order).
When the predecessor arrives after it, the frame is compared again and its values (and
alarms) are updated in place: history, the file list, the ledger (so ``plotdata`` sends the
row again) and the ``stat`` count show the corrected values; a run file keeps the first ones.
"""

from __future__ import annotations

import bisect
import copy
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..calibration import Calibration
from ..classifiers.average import Averager, AverageResult
from ..classifiers.scan import ScanMap
from .naming import make_output_folder, write_output_bytes
from .state import Record
from .tasks import ImageResult

log = logging.getLogger(__name__)

__all__ = ["ClassifySink", "needs_classify_sink", "needs_curves"]

#: Curves kept per integrator to find a late frame's predecessor.
KEEP_PREVIOUS = 64
#: Runs whose CorMap state is kept (frames of an older run coming back start afresh).
KEEP_RUNS = 8
#: Merged curves kept in memory (the latest groups; the files hold them all).
KEEP_AVERAGES = 100
#: Seconds between two writes of the scan maps while frames come (and once at the end).
SCAN_WRITE_INTERVAL = 2.0


def needs_classify_sink(calibration: Calibration) -> bool:
    """Whether the calibration has stateful classifiers, alarms or an ``Average`` block."""
    cs = getattr(calibration, "classifiers", None)
    return bool(cs is not None and (cs.stateful or cs.alarms)) or bool(calibration.config.get("Average")) \
        or bool(calibration.config.get("Scan"))


def needs_curves(calibration: Calibration) -> bool:
    """Whether the coordinator needs every frame's curves (stateful classifiers, ``Average``)."""
    cs = getattr(calibration, "classifiers", None)
    return bool(cs is not None and cs.stateful) or bool(calibration.config.get("Average"))


def _curve(graph: dict[str, Any]) -> SimpleNamespace:
    """A curve-like object (x, intensity, poisson, has_data) from a result's graph."""
    x, intensity, error = (np.asarray(a, dtype=np.float64) for a in graph["array"][:3])
    return SimpleNamespace(x=x, intensity=intensity, poisson=error, parameters={},
                           has_data=(error > 0) | (intensity != 0))


class ClassifySink:
    """Runs the stateful classifiers, the averaging and the alarms on each frame's result.

    Parameters
    ----------
    calibration
        The calibration (its :attr:`~saxsdog.calibration.Calibration.classifiers` and ``Average``).
    results
        Folder of the averaged curves (``<results>/averages/<group>.chi``).
    confine_to
        The server's base directory (outputs must resolve inside it).
    on_update
        Called with an earlier frame's result whose values changed (its predecessor arrived
        late) and its record's signature: the queue rewrites the frame's file-list row and
        ledger row.

    Attributes
    ----------
    alarms
        Frames that raised an alarm so far.
    latest_alarms
        The messages of the latest frame in alarm (with its name), for the page's banner.
    averages
        The latest merged curve of each of the last :data:`KEEP_AVERAGES` groups updated
        (:class:`~saxsdog.classifiers.average.AverageResult`), the most recent last.
    """

    name = "classifiers"

    def __init__(self, calibration: Calibration, results: Path | None = None, confine_to: Path | None = None,
                 on_update: Callable[[ImageResult, Any], None] | None = None):
        self.calibration = calibration
        self.on_update = on_update
        self.set = calibration.classifiers
        self.results = Path(results) if results is not None else None
        self.confine_to = confine_to
        self.radial = [k for k, it in enumerate(calibration.integrators) if it.kind == "Radial"]
        self.keys = [f"{it.kind[0]}{i}" for i, it in enumerate(calibration.integrators)]
        # per run (a detector stream's series is a run of its own): a copy of each stateful
        # classifier per radial integrator (their own "first" frame) and the frames seen
        self._runs: dict[str | None, tuple[dict[int, list[Any]], dict[int, list[tuple]]]] = {}
        spec = calibration.config.get("Average")
        self.averager = Averager(spec) if spec else None
        scan = calibration.config.get("Scan")
        self.scan = ScanMap(scan, self.set.keys()) if scan else None
        self._scan_written = 0.0  # monotonic time of the last write of the maps
        self._scan_dirty = False
        self.alarms = 0
        self.latest_alarms: dict[str, Any] | None = None
        self.averages: dict[str, AverageResult] = {}
        self._pending: list[AverageResult] = []  # merged curves not written yet (a full disk)
        self._written: set[str] = set()  # groups whose file this sink wrote
        self._failed_once = False

    # -- the Sink protocol ------------------------------------------------------------
    def record(self, rec: Record) -> None:
        if rec.state not in ("done", "failed", "partial"):
            return
        for r in rec.results:
            self.add(r, rec.signature, rec.run)
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Write the averaged curves waiting, and the scan maps at most every
        :data:`SCAN_WRITE_INTERVAL` seconds (raises ``OSError`` while the disk is full)."""
        while self._pending:
            self._write(self._pending[0])
            self._pending.pop(0)
        if self._scan_dirty and (final or time.monotonic() - self._scan_written >= SCAN_WRITE_INTERVAL):
            self._write_scan()

    def close(self) -> None:
        try:
            self.flush(final=True)
        except OSError as exc:
            log.error("cannot write %d averaged curve(s) or the scan maps: %s", len(self._pending), exc)

    # -- per frame --------------------------------------------------------------------
    @staticmethod
    def order_key(result: ImageResult) -> tuple:
        """Acquisition order: image time, then name (frames without a time sort last)."""
        t = result.image_time
        return (t if t is not None else float("inf"), result.name or result.path, result.frame)

    def _state(self, run: str | None) -> tuple[dict[int, list[Any]], dict[int, list[tuple]]]:
        """The stateful classifiers and frames seen of one run (the last :data:`KEEP_RUNS` runs)."""
        state = self._runs.pop(run, None)
        if state is None:
            clones = {k: [copy.copy(c) for c in self.set.stateful] for k in self.radial}
            for cs in clones.values():
                for c in cs:
                    c.reset()
            state = (clones, {k: [] for k in self.radial})
        self._runs[run] = state  # the latest used last
        while len(self._runs) > KEEP_RUNS:
            del self._runs[next(iter(self._runs))]
        return state

    def add(self, result: ImageResult, signature: Any = None, run: str | None = None) -> None:
        """Classify one frame's result (in place: its parameters and alarms); ``run`` names
        its run when not the queue's own (a stream's series: CorMap's first frame is per run).

        Never raises: a classifier, the averaging or the map that fails on a frame is logged
        (once) and the frame goes on to the other sinks; only writing (:meth:`flush`) may raise.
        """
        if result.error is not None or result.skipped:
            return
        try:
            self._add(result, signature, run)
        except Exception as exc:  # e.g. a broken stateful plug-in: never stop the queue for it
            if not self._failed_once:
                log.exception("the coordinator's classifiers failed on %s", result.name or result.path)
                self._failed_once = True
            else:
                log.debug("the coordinator's classifiers failed on %s: %s", result.name or result.path, exc)

    def _add(self, result: ImageResult, signature: Any, run: str | None) -> None:
        curves = result.curves
        if curves and (self.set.stateful or self.averager is not None):
            key = self.order_key(result)
            stateful, seen = self._state(run) if self.set.stateful else ({}, {})
            for k in self.radial:
                if k >= len(curves):
                    continue
                curve = _curve(curves[k])
                if self.set.stateful:
                    params = result.parameters.setdefault(self.keys[k], {})
                    previous = self._previous(seen[k], key)
                    for c in stateful[k]:
                        params.update(c(curve, {"previous": previous}))
                    self._remember(seen[k], stateful[k], k, key, curve, result, signature)
                if self.averager is not None and k == self.radial[0]:
                    average = self.averager.add(result.name or Path(result.path).name, curve.x,
                                                curve.intensity, curve.poisson)
                    for gone in self.averager.dropped:  # renamed: its earlier output is wrong now
                        self._forget_group(gone)
                    self.averager.dropped.clear()
                    if average is not None:
                        self.averages.pop(average.group, None)  # the latest updated last
                        self.averages[average.group] = average
                        while len(self.averages) > KEEP_AVERAGES:
                            del self.averages[next(iter(self.averages))]
                        self._pending = [p for p in self._pending if p.group != average.group] + [average]
        self._check_alarms(result)
        if self.scan is not None:
            merged: dict[str, Any] = {}
            for params in result.parameters.values():
                if isinstance(params, dict):
                    merged = {**params, **merged}  # the first integrator's value wins
            if self.scan.add(result.name or Path(result.path).name, merged):
                self._scan_dirty = True
                first = result.parameters.get(self.keys[0])
                if isinstance(first, dict) and self.scan.last_position is not None:
                    # the frame's place in the map, for history and the page's map
                    first["Scan.row"], first["Scan.column"] = self.scan.last_position

    def _check_alarms(self, result: ImageResult) -> None:
        if not self.set.alarms:
            return
        messages: list[str] = []
        for params in result.parameters.values():
            if isinstance(params, dict):
                messages += self.set.check_alarms(params)
        was = bool(result.alarms)
        result.alarms[:] = messages  # in place: the history's record holds this list
        first = result.parameters.get(self.keys[0])
        if isinstance(first, dict):
            first["alarms"] = "; ".join(messages)
        self.alarms += bool(messages) - was
        if messages:
            self.latest_alarms = {"name": result.name or result.path, "alarms": messages,
                                  "image_time": result.image_time}

    @staticmethod
    def _previous(seen: list[tuple], key: tuple) -> SimpleNamespace | None:
        i = bisect.bisect_left(seen, key, key=lambda e: e[0])
        return seen[i - 1][1] if i > 0 else None

    def _remember(self, seen: list[tuple], stateful: list[Any], k: int, key: tuple, curve: SimpleNamespace,
                  result: ImageResult, signature: Any) -> None:
        """Keep the frame's curve; a frame that arrived after its successor becomes that one's previous."""
        i = bisect.bisect_left(seen, key, key=lambda e: e[0])
        while i < len(seen) and seen[i][0] == key:  # the same frame processed again: the new one counts
            del seen[i]
        seen.insert(i, (key, curve, result, signature))
        if i + 1 < len(seen):  # its successor was compared with an older frame (or none): again
            _, later, later_result, later_signature = seen[i + 1]
            params = later_result.parameters.setdefault(self.keys[k], {})
            for c in stateful:
                if getattr(c, "reference", None) == "previous":
                    q, intensity = c.select(later)
                    ref_q, ref_i = c.select(curve)
                    fields = c.compare(q, intensity, ref_q, ref_i, c.comparisons or max(c.tested, 1))
                    params.update({c.key(f): v for f, v in fields.items()})
            self._check_alarms(later_result)
            if self.on_update is not None:
                try:
                    self.on_update(later_result, later_signature)
                except Exception:  # the row is rewritten at the file list's next write anyway
                    log.exception("cannot update the results of %s", later_result.name or later_result.path)
        if len(seen) > KEEP_PREVIOUS:
            del seen[0]

    # -- scan maps --------------------------------------------------------------------
    def scan_path(self) -> Path | None:
        """Where the scan maps are written (``<results>/scan_maps.h5``)."""
        return None if self.results is None or self.scan is None else self.results / "scan_maps.h5"

    def _write_scan(self) -> None:
        path = self.scan_path()
        if path is None or self.scan is None:
            self._scan_dirty = False
            return
        make_output_folder(path.parent, self.confine_to)
        write_output_bytes(path, self.scan.nexus_bytes(str(self.calibration.config.get("Title") or "scan")),
                           self.confine_to)
        self._scan_written = time.monotonic()
        self._scan_dirty = False

    # -- averaged curves --------------------------------------------------------------
    def _forget_group(self, group: str) -> None:
        self.averages.pop(group, None)
        self._pending = [p for p in self._pending if p.group != group]
        path = self.path_of(group)
        if path is not None and group in self._written:
            try:
                path.unlink()
            except OSError:
                pass
            self._written.discard(group)

    def path_of(self, group: str) -> Path | None:
        """Where a group's averaged curve is written."""
        if self.results is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", group).strip("._") or "group"
        return self.results / "averages" / f"{safe}.chi"

    def _write(self, merged: AverageResult) -> None:
        from ..io.chi import format_chi

        path = self.path_of(merged.group)
        if path is None:
            return
        make_output_folder(path.parent, self.confine_to)
        it = self.calibration.integrators[self.radial[0]] if self.radial else self.calibration.integrators[0]
        content = format_chi([merged.q, merged.intensity, merged.error], self.calibration.raw,
                             merged.summary(), [it.x_label, "Intensity (Count/Pixel)", "Error Margin"])
        write_output_bytes(path, content, self.confine_to)
        self._written.add(merged.group)
