"""Averaging the frames of one sample, leaving out those that differ from its first frame.

The rule is the one of ESRF BM29's pipeline: every frame of a sample is compared with the
sample's first frame by CorMap; a frame whose Bonferroni-corrected probability (corrected by
the number of frames compared) is below ``Alpha`` is rejected; the rest are averaged, the
error of the mean being ``√(Σσᵢ²)/n``.

>>> avg = Averager({"Every": 10})                                    # doctest: +SKIP
>>> avg.add("img_00001.tif", q, I, err)   # -> the group's AverageResult
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from ..errors import CalibrationError

__all__ = ["Averager", "AverageResult", "average_frames"]

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class AverageResult:
    """The merged curve of one group."""

    group: str
    q: np.ndarray
    intensity: np.ndarray
    error: np.ndarray
    kept: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    complete: bool = False

    def summary(self) -> dict[str, Any]:
        """Counts and names, for the output's header and the page."""
        return {"group": self.group, "frames": len(self.kept) + len(self.rejected), "kept": len(self.kept),
                "rejected": len(self.rejected), "rejected_frames": list(self.rejected),
                "complete": self.complete}


def average_frames(intensities: np.ndarray, errors: np.ndarray, alpha: float = 0.01,
                   names: list[str] | None = None, select: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                                              list[int], dict[int, float]]:
    """Merge frames (rows) with rejection against the first.

    Parameters
    ----------
    intensities, errors
        ``(n_frames, n_bins)`` arrays, the first row being the reference.
    alpha
        Threshold of the corrected probability.
    select
        Boolean per bin: the bins compared (default all with a positive error in every frame).

    Returns
    -------
    (mean, error, kept_rows, adjusted_probability_by_row)
    """
    from .builtin import freesas

    gof = freesas("freesas.cormap").gof
    intensities = np.asarray(intensities, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    n = intensities.shape[0]
    if select is None:
        select = np.all(errors > 0, axis=0)
    ref = np.ascontiguousarray(intensities[0, select])
    kept = [0]
    probs: dict[int, float] = {}
    m = max(n - 1, 1)
    for i in range(1, n):
        p = min(1.0, float(gof(ref, np.ascontiguousarray(intensities[i, select])).P) * m)
        probs[i] = p
        if p >= alpha:
            kept.append(i)
    mean = intensities[kept].mean(axis=0)
    err = np.sqrt((errors[kept] ** 2).sum(axis=0)) / len(kept)
    return mean, err, kept, probs


class Averager:
    """Groups frames into samples (the calibration's ``Average``) and merges each group.

    Parameters
    ----------
    spec
        ``{"Every": N}`` | ``{"Pattern": regex}`` | ``{"Folder": true}``, plus ``Alpha`` and
        ``QRange``.
    path
        JSON path of the block, for errors.
    """

    def __init__(self, spec: Mapping[str, Any], path: str = "$.Average"):
        self.spec = dict(spec)
        modes = [k for k in ("Every", "Pattern", "Folder") if self.spec.get(k) not in (None, False)]
        if len(modes) != 1:
            raise CalibrationError("Average needs exactly one of Every, Pattern or Folder", path, self.spec,
                                   '{"Every": N} or {"Pattern": regex} or {"Folder": true}')
        self.mode = modes[0]
        self.alpha = float(self.spec.get("Alpha", 0.01))
        self.q_range = self.spec.get("QRange")
        self.every = int(self.spec["Every"]) if self.mode == "Every" else 0
        self.pattern: re.Pattern[str] | None = None
        if self.mode == "Pattern":
            try:
                self.pattern = re.compile(self.spec["Pattern"])
            except re.error as exc:
                raise CalibrationError(f"not a regular expression: {exc}", f"{path}.Pattern",
                                       self.spec["Pattern"], "a Python regular expression") from None
        self._seen = 0
        self._offset: int | None = None
        self._completed = False
        #: Groups that no longer exist (renamed when the start moved back): their outputs go.
        self.dropped: list[str] = []
        self._groups: dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]] = {}

    def group_of(self, name: str) -> str | None:
        """The group a frame (by name) belongs to, or ``None`` when it is not averaged.

        ``Every``: frames are counted by the last number in their name (the detector's frame
        number, counted from the first frame's, so frames finished out of order by the
        workers still fall in their own group), else in the order they arrive.
        """
        if self.mode == "Every":
            m = _LAST_NUMBER.search(name)
            if m is not None:
                position = int(m.group(1)) - (self._offset or 0)
            else:
                position = self._seen
            start = (position // self.every) * self.every
            return f"frames_{start + (self._offset if self._offset is not None else 1):06d}"
        if self.mode == "Pattern":
            assert self.pattern is not None
            m = self.pattern.search(name)
            if m is None:
                return None
            return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
        parent = str(PurePosixPath(name.replace("\\", "/")).parent)
        return "top" if parent in ("", ".") else parent

    def add(self, name: str, q: np.ndarray, intensity: np.ndarray, error: np.ndarray) -> AverageResult | None:
        """Add one frame; returns its group's merged curve (``None``: the frame is not averaged)."""
        if self.mode == "Every":
            m = _LAST_NUMBER.search(name)
            number = int(m.group(1)) if m is not None else None
            if number is not None and (self._offset is None or (number < self._offset and not self._completed)):
                # the first frame so far: the groups count from it (a frame overtaken by the
                # next one at the start of the run moves the start back)
                self._offset = number
                frames = [f for group in self._groups.values() for f in group]
                old = set(self._groups)
                self._groups.clear()
                for f in frames:
                    self._groups.setdefault(self.group_of(f[0]) or "", []).append(f)
                self.dropped += sorted(old - set(self._groups))
        group = self.group_of(name)
        if self.mode == "Every":
            self._seen += 1
        if group is None:
            return None
        frames = self._groups.setdefault(group, [])
        frames[:] = [f for f in frames if f[0] != name]  # a frame processed again replaces itself
        frames.append((name, np.asarray(q, dtype=np.float64), np.asarray(intensity, dtype=np.float64),
                       np.asarray(error, dtype=np.float64)))
        result = self.merge(group)
        if self.mode == "Every" and len(frames) >= self.every:
            result.complete = True
            self._completed = True
            del self._groups[group]  # done: memory stays bounded on long runs
        return result

    def merge(self, group: str) -> AverageResult:
        """The merged curve of a group so far."""
        frames = self._groups[group]
        q = frames[0][1]
        same = [f for f in frames if f[1].shape == q.shape]
        intensities = np.stack([f[2] for f in same])
        errors = np.stack([f[3] for f in same])
        select = np.all(errors > 0, axis=0)
        if self.q_range is not None:
            select &= (q >= self.q_range[0]) & (q <= self.q_range[1])
        if len(same) == 1:
            return AverageResult(group, q, intensities[0], errors[0], kept=[same[0][0]])
        mean, err, kept, probs = average_frames(intensities, errors, self.alpha, select=select)
        names = [f[0] for f in same]
        return AverageResult(group, q, mean, err, kept=[names[i] for i in kept],
                             rejected=[names[i] for i in range(len(names)) if i not in kept],
                             probabilities={names[i]: p for i, p in probs.items()})
