"""The classifier interface and its registry.

A classifier turns one curve (or one raw image) into a few named scalars.  Built-in kinds
register themselves with :func:`register`; a user's own come from the ``saxsdog.classifiers``
entry point group or from a ``"module:Class"`` path written as the calibration's ``Kind``.

Output keys
-----------
Every value a classifier returns is stored in :attr:`saxsdog.core.integrators.Curve.parameters`
under ``"<Name>.<field>"`` (``Name`` defaults to the ``Kind``: ``"Guinier.Rg"``,
``"CorMap.P"``), so two classifiers never clash and a column says where it came from.  The
integral parameters keep their historic bare keys (``I0``, ``I1``, ``I2``, ``invariant``,
``correlation_length``) so that existing outputs keep their bytes.

A value that could not be computed is ``None`` (JSON ``null``, NaN in NXcanSAS), never a
number, and the classifier's ``<Name>.status`` says why (``"ok"`` when it worked).
"""

from __future__ import annotations

import abc
import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import CalibrationError

__all__ = ["Classifier", "ClassifierContext", "register", "registry", "known_kinds", "classifier_class",
           "ENTRY_POINT_GROUP", "COMMON_FIELDS"]

log = logging.getLogger(__name__)

#: Entry point group where installed packages register their own classifiers (``Kind`` → class).
ENTRY_POINT_GROUP = "saxsdog.classifiers"
#: Fields every classifier entry may have (besides its own :attr:`Classifier.options`).
COMMON_FIELDS = ("Kind", "Name", "Alarm")

_REGISTRY: dict[str, type[Classifier]] = {}
_entry_points_loaded = False


@dataclass
class ClassifierContext:
    """What a classifier may check its options against when it is built.

    Attributes
    ----------
    shape
        Image shape ``(rows, cols)``.
    q
        Bin centres (nm⁻¹) of the first radial integrator, or ``None`` when there is none.
    q_map
        Callable giving the q of every pixel (nm⁻¹, image shape), for ROIs given in q.
    base_dir
        Folder relative file names resolve against (the calibration's).
    """

    shape: tuple[int, int]
    q: np.ndarray | None = None
    q_map: Callable[[], np.ndarray] | None = None
    base_dir: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Classifier(abc.ABC):
    """One classifier: a curve (or image) in, named scalars out.

    Subclasses set the class attributes and implement :meth:`compute`.  They are built once
    per calibration (in every worker), so :meth:`__init__` validates the options and
    precomputes what it can; :meth:`compute` must be cheap (the frame budget is ~1 ms).

    Parameters
    ----------
    spec
        The calibration entry (``{"Kind": ..., "Name": ..., ...}``).
    context
        What the options are checked against.
    path
        JSON path of the entry, for errors (``$.Classifiers[2]``).

    Attributes
    ----------
    kind
        Registry name (``"Guinier"``).
    input
        ``"curve"`` (gets a :class:`~saxsdog.core.integrators.Curve` of each radial
        integrator), ``"image"`` (gets the raw frame and its metadata) or ``"cake"`` (gets the
        curve of the ``Cake`` entry it names, with its :class:`~saxsdog.core.integrators.CakeIntegrator`).
    stateful
        Needs the frames in acquisition order (e.g. compares with the previous frame): runs
        once in the coordinator, not in the workers.
    description
        One line for the page and ``--help``.
    units
        Unit of each output field (``""`` for dimensionless).
    primary
        The field an ``Alarm`` applies to unless it names one (``"Key"``).
    options
        The entry's own fields (besides ``Kind``, ``Name``, ``Alarm``) → their defaults.
    """

    kind: ClassVar[str] = ""
    input: ClassVar[str] = "curve"
    stateful: ClassVar[bool] = False
    description: ClassVar[str] = ""
    units: ClassVar[dict[str, str]] = {}
    primary: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    #: Keys stored without the ``Name.`` prefix (only the integral parameters).
    bare_keys: ClassVar[bool] = False
    #: Computed on the background-subtracted curve when the calibration subtracts one
    #: (:attr:`Curve.subtracted`); the integral parameters keep the original's curve.
    uses_subtracted: ClassVar[bool] = True

    def __init__(self, spec: Mapping[str, Any], context: ClassifierContext, path: str = "$.Classifiers[0]"):
        self.spec = dict(spec)
        self.path = path
        self.context = context
        unknown = [k for k in self.spec if k not in COMMON_FIELDS and k not in self.options and not k.startswith("x-")]
        if unknown:
            allowed = ", ".join([*COMMON_FIELDS, *self.options]) or "none"
            raise CalibrationError(f"unknown field {unknown[0]!r} for a {self.kind} classifier",
                                   f"{path}.{unknown[0]}", self.spec[unknown[0]], f"one of {allowed}")
        self.name = str(self.spec.get("Name") or self.kind)
        self.settings = {k: self.spec.get(k, v) for k, v in self.options.items()}

    # -- what it produces ---------------------------------------------------------
    def key(self, field_name: str) -> str:
        """The :attr:`Curve.parameters` key of one output field."""
        return field_name if self.bare_keys else f"{self.name}.{field_name}"

    def keys(self) -> list[str]:
        """Every key this classifier writes (one per :attr:`units` entry)."""
        return [self.key(f) for f in self.units]

    def describe(self) -> dict[str, Any]:
        """Name, kind, description and the unit of each key (for the page and documentation)."""
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "units": {self.key(f): u for f, u in self.units.items()}, "stateful": self.stateful,
                "input": self.input}

    def empty(self, status: str) -> dict[str, Any]:
        """Every field ``None`` and ``status`` set: the result of a classifier that failed."""
        out: dict[str, Any] = dict.fromkeys(self.units)
        if "status" in self.units:
            out["status"] = status
        return out

    @abc.abstractmethod
    def compute(self, data: Any, metadata: Mapping[str, Any] | None = None,
                integrator: Any = None) -> dict[str, Any]:
        """The fields (without the ``Name.`` prefix) for one curve or image (every
        classifier implements it)."""

    def __call__(self, data: Any, metadata: Mapping[str, Any] | None = None,
                 integrator: Any = None) -> dict[str, Any]:
        """:meth:`compute` with keys prefixed; an exception becomes a failed result (logged once)."""
        try:
            fields = self.compute(data, metadata, integrator)
        except Exception as exc:  # a classifier must never lose the frame
            if not getattr(self, "_warned", False):
                log.warning("classifier %s failed: %s: %s", self.name, type(exc).__name__, exc)
                self._warned = True
            fields = self.empty(f"failed: {type(exc).__name__}: {exc}")
        return {self.key(k): _clean(v) for k, v in fields.items()}

    def reset(self) -> None:  # noqa: B027 - deliberately empty: stateless classifiers keep nothing
        """Forget the state kept between frames (a new run)."""

    # -- option helpers -----------------------------------------------------------
    def q_range(self, name: str, default: Sequence[float] | None) -> tuple[float, float] | None:
        """A ``[qmin, qmax]`` option, checked against the first radial curve's q."""
        value = self.settings.get(name, default)
        if value is None:
            return None
        where = f"{self.path}.{name}"
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or not value[0] < value[1]):
            raise CalibrationError("not a q range", where, value, "[qmin, qmax] in nm⁻¹ with qmin < qmax")
        q = self.context.q
        if q is not None and q.size and (value[1] <= float(q[0]) or value[0] >= float(q[-1])):
            raise CalibrationError(f"the q range lies outside the curve's q ({float(q[0]):.4g} to "
                                   f"{float(q[-1]):.4g} nm⁻¹)", where, value,
                                   f"a range overlapping [{float(q[0]):.4g}, {float(q[-1]):.4g}]")
        return float(value[0]), float(value[1])

    def number(self, name: str, minimum: float | None = None, maximum: float | None = None,
               integer: bool = False) -> float:
        """A numeric option, checked."""
        value = self.settings.get(name)
        where = f"{self.path}.{name}"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            assert isinstance(value, (int, float))
            if integer and int(value) != value:
                ok = False
            elif minimum is not None and value < minimum:
                ok = False
            elif maximum is not None and value > maximum:
                ok = False
        if not ok or not isinstance(value, (int, float)):
            bounds = "" if minimum is None else f" ≥ {minimum}"
            bounds += "" if maximum is None else f" ≤ {maximum}"
            raise CalibrationError("invalid value", where, value, ("an integer" if integer else "a number") + bounds)
        return int(value) if integer else float(value)

    def choice(self, name: str, choices: Sequence[str]) -> str:
        """A string option from a fixed list."""
        value = self.settings.get(name)
        if value not in choices:
            raise CalibrationError("invalid value", f"{self.path}.{name}", value, f"one of {', '.join(choices)}")
        return str(value)


def _clean(value: Any) -> Any:
    """Plain Python scalars for JSON; a non-finite float becomes ``None`` (never a number).

    Anything else a (user's) classifier returns (an array, a list) becomes its text: every
    destination (a ``.chi`` header, NXcanSAS, the ledger, the page) takes scalars only.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return str(value)


def register(cls: type[Classifier] | None = None, *, kind: str | None = None):
    """Register a classifier class under its ``kind`` (usable as a decorator)."""
    def add(c: type[Classifier]) -> type[Classifier]:
        name = kind or c.kind
        if not name:
            raise ValueError(f"{c.__name__} has no kind")
        if not issubclass(c, Classifier):
            raise TypeError(f"{c.__name__} is not a saxsdog Classifier")
        _REGISTRY[name] = c
        return c
    return add(cls) if cls is not None else add


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register(ep.load(), kind=ep.name)
        except Exception as exc:  # a broken plug-in must not stop saxsdog
            log.warning("cannot load the classifier %s from %s: %s", ep.name, ep.value, exc)


def registry() -> dict[str, type[Classifier]]:
    """Every registered classifier class by kind (built-ins and entry points).

    The built-ins register themselves when :mod:`saxsdog.classifiers` (the package, which
    any import of this module runs first) imports :mod:`saxsdog.classifiers.builtin`.
    """
    _load_entry_points()
    return dict(_REGISTRY)


def known_kinds() -> list[str]:
    """Sorted names of the registered kinds."""
    return sorted(registry())


def classifier_class(kind: Any, path: str = "$.Classifiers[0].Kind") -> type[Classifier]:
    """The class of a ``Kind``: a registered name or a ``"module:Class"`` path.

    Raises
    ------
    CalibrationError
        An unknown name (the message lists the known ones) or a path that does not import.
    """
    kinds = registry()
    if isinstance(kind, str) and kind in kinds:
        return kinds[kind]
    if isinstance(kind, str) and ":" in kind:
        module, _, attr = kind.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise CalibrationError(f"cannot load the classifier {kind!r}: {type(exc).__name__}: {exc}",
                                   path, kind, "an importable module:Class") from None
        if not (isinstance(obj, type) and issubclass(obj, Classifier)):
            raise CalibrationError(f"{kind!r} is not a saxsdog.classifiers.Classifier subclass", path, kind,
                                   "a Classifier subclass")
        return obj
    raise CalibrationError(f"unknown classifier {kind!r}", path, kind,
                           f"one of {', '.join(sorted(kinds))}, or a module:Class path")
