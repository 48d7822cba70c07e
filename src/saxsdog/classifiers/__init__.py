"""Live classifiers: named scalars per frame (Rg, I(0), Porod exponent, CorMap P, ROI sums ...).

The calibration lists which run::

    "Classifiers": [{"Kind": "Guinier"},
                    {"Kind": "Porod", "QRange": [1.5, 3.0]},
                    {"Kind": "CorMap", "Reference": "previous", "Alarm": {"Below": 0.01}},
                    {"Kind": "ROI", "Name": "beamstop", "Rectangle": [500, 540, 400, 440]},
                    {"Kind": "mypackage.classifiers:Crystallinity"}]

``Kind`` is a registered name (:func:`known_kinds`: the built-ins and the ``saxsdog.classifiers``
entry point group) or a ``"module:Class"`` path; ``Name`` (default the kind) prefixes the
output keys (``"Guinier.Rg"``); ``Alarm`` ``{"Above": x, "Below": y, "Key": field}`` marks
frames whose value (default: the classifier's primary field) leaves the range.

The integral parameters are always the first classifier (``IntegralParameters``, bare keys
``I0`` ... ``correlation_length``): a calibration without ``Classifiers`` gives exactly the
parameters, and the bytes, of before.

Where they run, where the values go
-----------------------------------
Curve and image classifiers run in the workers, in :meth:`saxsdog.calibration.Calibration.curves`,
so their values are in every output of the frame: the ``.chi`` header's parameters line (and
so the merge tables), NXcanSAS (per frame and run files, ``parameters`` collection), history,
the ledger and ``plotdata`` (one column per key), and ``results/filelist.txt`` (one column per
key after the original's six).  Curve classifiers run on every radial (q) integrator's curve
(on its background-subtracted curve, :attr:`Curve.subtracted`, when the calibration subtracts a
background; the integral parameters stay on the original's curve); image classifiers, and the
``cake`` ones (``CakeROI``, on a ``Cake`` entry's map), add their keys to the first integrator's.

*Stateful* classifiers (CorMap), ``Average``, ``Scan`` and the alarms run once, in the
coordinator (:class:`saxsdog.pipeline.classify_sink.ClassifySink`), in the order the frames
were taken; their values reach history, the ledger, ``plotdata``, the file list and NXcanSAS
run files, but not the per-frame ``.chi``/``.h5`` files, which the workers wrote already.
Frames in alarm carry ``alarms`` (a text, ``""`` when none, in the first integrator's
parameters, whenever an ``Alarm`` is configured), are counted in ``stat``'s ``alarms`` and shown
by the page (banner, red points).  ``Average`` writes ``results/averages/<group>.chi``
(see :mod:`saxsdog.classifiers.average`), ``Scan`` ``results/scan_maps.h5``
(see :mod:`saxsdog.classifiers.scan`).

Writing a classifier
--------------------
Subclass :class:`Classifier`, set ``kind``, ``description``, ``units`` (field → unit),
``primary``, ``options`` (field → default) and ``input`` (``"curve"``, ``"image"`` or ``"cake"``), and
implement ``compute(data, metadata, integrator)`` returning the fields (``None`` and a
``status`` for what cannot be computed).  Register it with :func:`register`, in the
``saxsdog.classifiers`` entry point group of your package (``Kind`` = the entry point's name),
or name it ``"package.module:Class"`` in the calibration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CalibrationError
from . import builtin  # noqa: F401  (registers the built-in kinds)
from .base import COMMON_FIELDS, ENTRY_POINT_GROUP, Classifier, ClassifierContext, classifier_class, known_kinds, \
    register, registry

__all__ = ["Classifier", "ClassifierContext", "ClassifierSet", "AlarmRule", "register", "registry", "known_kinds",
           "classifier_class", "build_classifiers", "ENTRY_POINT_GROUP", "COMMON_FIELDS"]


@dataclass(frozen=True)
class AlarmRule:
    """A frame is in alarm when ``key``'s value is above ``above`` or below ``below``."""

    key: str
    above: float | None = None
    below: float | None = None

    def check(self, parameters: Mapping[str, Any]) -> str | None:
        """The alarm's message for these parameters, or ``None``."""
        value = parameters.get(self.key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if self.above is not None and value > self.above:
            return f"{self.key}={value:.4g} above {self.above:g}"
        if self.below is not None and value < self.below:
            return f"{self.key}={value:.4g} below {self.below:g}"
        return None


def _alarm(classifier: Classifier, path: str) -> AlarmRule | None:
    spec = classifier.spec.get("Alarm")
    if spec is None:
        return None
    where = f"{path}.Alarm"
    if not isinstance(spec, Mapping) or not spec or set(spec) - {"Above", "Below", "Key"}:
        raise CalibrationError("invalid alarm", where, spec, '{"Above": number, "Below": number, "Key": field}')
    bounds = {}
    for name in ("Above", "Below"):
        v = spec.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise CalibrationError("not a number", f"{where}.{name}", v, "a number")
        bounds[name] = None if v is None else float(v)
    if bounds["Above"] is None and bounds["Below"] is None:
        raise CalibrationError("an alarm needs Above or Below", where, spec, "Above and/or Below")
    field_name = spec.get("Key", classifier.primary)
    if field_name not in classifier.units:
        raise CalibrationError(f"{classifier.kind} has no field {field_name!r}", f"{where}.Key", field_name,
                               f"one of {', '.join(classifier.units)}")
    return AlarmRule(classifier.key(field_name), bounds["Above"], bounds["Below"])


class ClassifierSet:
    """The classifiers of one calibration, split by where they run.

    Attributes
    ----------
    curve, image, cake
        Stateless classifiers run by the workers (on each radial curve, on the raw frame, on
        a cake map).
    stateful
        Classifiers run by the coordinator in frame order.
    alarms
        The ``Alarm`` rules of all of them.
    """

    def __init__(self, classifiers: Sequence[Classifier], alarms: Sequence[AlarmRule] = ()):
        self.all = list(classifiers)
        self.curve = [c for c in self.all if c.input == "curve" and not c.stateful]
        self.image = [c for c in self.all if c.input == "image" and not c.stateful]
        self.cake = [c for c in self.all if c.input == "cake" and not c.stateful]
        self.stateful = [c for c in self.all if c.stateful]
        self.alarms = list(alarms)
        #: Only the integral parameters: the integrators' own parameters are the result.
        self.default = [c.kind for c in self.all] == ["IntegralParameters"] and not self.alarms

    def keys(self) -> list[str]:
        """Every output key, in order."""
        return [k for c in self.all for k in c.keys()]

    def describe(self) -> list[dict[str, Any]]:
        """Each classifier's name, kind, description and units."""
        return [c.describe() for c in self.all]

    def apply(self, curves: Sequence[Any], integrators: Sequence[Any], image: np.ndarray | None,
              metadata: Mapping[str, Any] | None = None) -> None:
        """Add the stateless classifiers' values to the curves' ``parameters`` (in place)."""
        if self.default:
            return
        for curve, it in zip(curves, integrators):
            if getattr(it, "kind", "") != "Radial":
                continue
            # the sample's own scattering when a background is subtracted (Rg of the particles)
            subtracted = getattr(curve, "subtracted", None)
            targets = [curve] if subtracted is None else [curve, subtracted]
            for t in targets:
                t._classifier_scratch = {}
            try:
                params: dict[str, Any] = {}
                for c in self.curve:
                    source = subtracted if subtracted is not None and c.uses_subtracted else curve
                    params.update(c(source, metadata, it))
                curve.parameters = params
            finally:
                for t in targets:
                    del t._classifier_scratch
        if self.image and image is not None and curves:
            target = curves[0].parameters
            for c in self.image:
                target.update(c(image, metadata))
        if self.cake and curves:  # regions of a cake map: to the first integrator's, as the image's
            target = curves[0].parameters
            for c in self.cake:
                index = getattr(c, "mask", None)
                if index is not None and index < len(curves):
                    target.update(c(curves[index], metadata, integrators[index]))

    def check_alarms(self, parameters: Mapping[str, Any]) -> list[str]:
        """The messages of the alarms these parameters raise."""
        return [m for m in (a.check(parameters) for a in self.alarms) if m is not None]


def build_classifiers(entries: Sequence[Mapping[str, Any]] | None, context: ClassifierContext,
                      path: str = "$.Classifiers") -> ClassifierSet:
    """Build the calibration's ``Classifiers`` (``None``: only the integral parameters).

    Raises
    ------
    CalibrationError
        An unknown ``Kind`` (listing the known ones), an option out of range (a q range
        outside the curve, an ROI outside the detector), a duplicate ``Name``.
    """
    entries = list(entries or [])
    built: list[Classifier] = []
    alarms: list[AlarmRule] = []
    names: dict[str, str] = {}
    for i, spec in enumerate(entries):
        where = f"{path}[{i}]"
        if not isinstance(spec, Mapping) or "Kind" not in spec:
            raise CalibrationError("a classifier entry needs a Kind", where, spec,
                                   f'{{"Kind": one of {", ".join(known_kinds())}}}')
        cls = classifier_class(spec["Kind"], f"{where}.Kind")
        c = cls(spec, context, where)
        if c.name in names:
            raise CalibrationError(f"two classifiers are named {c.name!r} ({names[c.name]} and {where})",
                                   f"{where}.Name", c.name, "a Name of its own for each")
        names[c.name] = where
        built.append(c)
        rule = _alarm(c, where)
        if rule is not None:
            alarms.append(rule)
    if not any(c.kind == "IntegralParameters" for c in built):
        cls = classifier_class("IntegralParameters")
        built.insert(0, cls({"Kind": "IntegralParameters"}, context, f"{path}[-]"))
    else:  # always first: later classifiers may read them
        built.sort(key=lambda c: c.kind != "IntegralParameters")
    return ClassifierSet(built, alarms)
