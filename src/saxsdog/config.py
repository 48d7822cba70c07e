"""Configuration files in one place: schema checks, defaults, format versions and spellings.

Every JSON configuration saxsdog reads (the calibration, the Data Consolidation
configuration of ``saxsdmerge``/``mergedata``, the network file) is described by a JSON
Schema shipped in ``saxsdog/schemas``.  :class:`SchemaDoc` wraps one of them and is the
only code that turns schema violations into messages:

* :meth:`SchemaDoc.problems` lists every violation as a :class:`Problem` (JSON path,
  message, offending value, what was expected), for the web page's live validation;
* :meth:`SchemaDoc.check` raises the most relevant one as a :class:`ConfigFieldError`
  (or the subclass the document names, e.g. :class:`CalibrationError`);
* :meth:`SchemaDoc.with_defaults` fills in the schema's defaults, following ``$ref``.

**Unknown keys are refused**, as the original SAXSDOG schema did (``additionalProperties:
false``): a misspelled optional key such as ``PolarisationCorrection`` or ``Tiltt`` would
otherwise be ignored silently and give wrong curves.  The message names the JSON path and
suggests the closest known key ("did you mean 'PolarizationCorrection'?").  Keys starting
with ``x-`` (e.g. ``"x-comment"``, ``"x-beamtime"``) are private annotations: every object
of the shipped schemas accepts them and saxsdog ignores them.

**Versions and spellings** (:class:`Normalizer`).  A configuration file without a
``"Version"`` is format version 1, the original's format, and loads unchanged.  Loading
runs, in this order: the migration functions from the file's version up to the current one
(``migrations[1]`` turns a version-1 document into a version-2 one, as pyFAI's
``integration_config`` does), the schema
check (on the file's own spellings, so messages name the keys as the user wrote them), the
mapping of the original's spellings to the corrected names used inside saxsdog
(``DedectorDistanceMM`` → ``DetectorDistanceMM``, ``Imagesize`` → ``ImageSize``), the
``"Version"`` stamp and the defaults.

**Writing back** (:meth:`Normalizer.for_file`): a version-1 document is written in the
original's spellings (``DedectorDistanceMM``, ``Imagesize``) and *without* a ``"Version"``
key, because the original SAXSDOG refuses any key its schema does not list; so calibrations
saxsdog writes (``saxsconverter`` output, the page's Save JSON) stay readable by the
original.  Later versions, which the original cannot read anyway, are written with their
``"Version"``; but a document that was loaded from version 1 and whose newer fields still
hold what the migration put there is written as version 1 again (``Normalizer(...,
newer_fields=...)``: the fields dropped to try that; it is done when loading the result
gives the same document back), so the original keeps reading files saxsdog rewrites.

**Calibration format versions.**  Version 2 adds three top-level blocks (see the schema's
descriptions): ``Corrections`` (solid angle, dark, flat, negative and dummy pixels, error
model, sigma clipping), ``Normalization`` (exposure time, monitor, transmission, thickness,
absolute scale) and ``Background``.  The migration from version 1 (:func:`calibration_v1_to_v2`)
sets ``Corrections.SolidAngle`` to false unless the file says otherwise, so a file of the
original's gives the same q and I as before; the other fields take the schema's defaults
(in particular ``ErrorModel`` ``"poisson"``, the exact counting error; ``"legacy"`` gives the
original's error column).

>>> from saxsdog.config import CALIBRATION
>>> cal = CALIBRATION.load({"Geometry": {"BeamCenter": [1, 2], "DedectorDistanceMM": 1000,
...     "PixelSizeMicroM": [172], "Imagesize": [10, 20]}, "Masks": [], "Wavelength": 1.54})
>>> cal["Version"], cal["Geometry"]["DetectorDistanceMM"], cal["Geometry"]["ImageSize"]
(2, 1000, [10, 20])
>>> cal["Corrections"]["SolidAngle"], cal["Corrections"]["ErrorModel"]
(False, 'poisson')
>>> sorted(CALIBRATION.for_file(cal)["Geometry"])[:3]
['BeamCenter', 'DedectorDistanceMM', 'Imagesize']
>>> "Version" in CALIBRATION.for_file(cal), "Corrections" in CALIBRATION.for_file(cal)
(False, False)
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import CalibrationError, ConfigFieldError
from .schemas import expected_text, json_path, load_schema, validator

__all__ = [
    "PRIVATE_PREFIX",
    "MAX_IMAGE_PIXELS",
    "Problem",
    "SchemaDoc",
    "Normalizer",
    "CALIBRATION",
    "CALIBRATION_SPELLINGS",
    "CALIBRATION_V2_FIELDS",
    "calibration_v1_to_v2",
    "calibration_in_saxsdog_spellings",
    "calibration_field_path",
    "calibration_image_size",
    "calibration_problems",
    "suggest",
]

#: Keys starting with this are private annotations, accepted everywhere and ignored.
PRIVATE_PREFIX = "x-"

#: Largest image a calibration may describe (2**27 pixels, e.g. 16384 × 8192): operators of
#: larger images take minutes and tens of GB to build, so such a size is a typo.
MAX_IMAGE_PIXELS = 2 ** 27

#: The original's spellings (left) and the names saxsdog uses inside (right), per object.
CALIBRATION_SPELLINGS: dict[tuple[str, ...], dict[str, str]] = {
    ("Geometry",): {"DedectorDistanceMM": "DetectorDistanceMM", "Imagesize": "ImageSize"},
}

_VALUE_LIMIT = 80


def _short(value: Any, limit: int = _VALUE_LIMIT) -> str:
    """A value for a message: JSON where possible, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: Any, limit: int = _VALUE_LIMIT) -> str:
    """``repr`` of a value (as Python messages show it), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expected(error: Any) -> str:
    """What was expected; a pattern or format is explained by its schema's description."""
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator in ("pattern", "format") and desc:
        return desc
    return expected_text(error)


def suggest(name: str, known: Iterable[str]) -> str | None:
    """The known key closest to a misspelled ``name`` (case-insensitive), or ``None``."""
    known = [k for k in known if isinstance(k, str)]
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


@dataclass(frozen=True)
class Problem:
    """One violation of a configuration's schema.

    Attributes
    ----------
    path
        JSON path of the field, e.g. ``$.Geometry.DedectorDistanceMM``.
    message
        What is wrong, e.g. ``bad value -5`` or ``unknown field 'Tiltt' (did you mean 'Tilt'?)``.
    value
        The offending value (``None`` for a missing field or a structural problem).
    expected
        What would have been accepted, in plain words.
    kind
        ``"missing"``, ``"unknown"``, ``"value"`` (a bad value: the message shows it),
        ``"form"`` (an object of the wrong shape, e.g. both spellings of one field) or
        ``"limit"`` (a check beyond the schema, e.g. the pixel count of an image).
    """

    path: str
    message: str
    value: Any = None
    expected: str = ""
    kind: str = "value"

    def error(self, error_type: type[ConfigFieldError] = ConfigFieldError) -> ConfigFieldError:
        """This problem as an exception of ``error_type``."""
        return error_type(self.message, self.path, self.value, self.expected)

    def as_dict(self) -> dict[str, Any]:
        """The web page's form: ``{"path", "message", "value", "expected"}``.

        A bad value's message includes what was expected; ``value`` is kept only when it
        is a scalar (the page shows it beside the field).
        """
        message = self.message
        if self.kind == "value":  # the value as JSON, as the page shows it
            message = f"bad value {_short(self.value)}" + (f": expected {self.expected}" if self.expected else "")
        small = isinstance(self.value, (int, float, str, bool)) or self.value is None
        value = self.value if small and not (isinstance(self.value, str) and len(self.value) > 200) else None
        return {"path": self.path, "message": message, "value": value, "expected": self.expected}


class SchemaDoc:
    """A configuration document type backed by one of the shipped JSON Schemas.

    Parameters
    ----------
    schema_name
        File in ``saxsdog/schemas``, e.g. ``"calibration.schema.json"``.
    error_type
        Exception raised by :meth:`check` (a :class:`ConfigFieldError` subclass).
    what
        What the document is, for messages ("calibration").
    alternatives
        Pairs of keys that are two spellings of one field: a default is never added for
        one when the other is present.
    extra_checks
        Checks a schema cannot express (e.g. the pixel count of an image size): called
        with a schema-valid document, each returns a list of :class:`Problem`.
    """

    def __init__(self, schema_name: str, error_type: type[ConfigFieldError] = ConfigFieldError,
                 what: str = "configuration", alternatives: Iterable[tuple[str, str]] = (),
                 extra_checks: Sequence[Callable[[Any], list[Problem]]] = ()):
        self.schema_name = schema_name
        self.error_type = error_type
        self.what = what
        self._alternative: dict[str, str] = {}
        for a, b in alternatives:
            self._alternative[a], self._alternative[b] = b, a
        self._extra_checks = list(extra_checks)
        self._schema = load_schema(schema_name)

    @property
    def schema(self) -> dict[str, Any]:
        """A fresh copy of the schema (safe to modify or send)."""
        return copy.deepcopy(self._schema)

    # -- checking ------------------------------------------------------------------------
    def _errors(self, instance: Any) -> list[Any]:
        return list(validator(self.schema_name).iter_errors(instance))

    def _translate(self, error: Any) -> list[Problem]:
        """One jsonschema error as problems (an object with two unknown keys gives two)."""
        parts = list(error.absolute_path)
        v = error.validator
        expected = _expected(error)
        if v == "required":
            missing = [f for f in error.validator_value
                       if isinstance(error.instance, dict) and f not in error.instance]
            return [Problem(json_path(parts + [m]), f"missing required field {m!r}", None, expected,
                            "missing") for m in missing]
        if v in ("additionalProperties", "unevaluatedProperties"):
            return self._unknown_keys(error, parts)
        if v in ("oneOf", "anyOf") and isinstance(error.instance, dict):
            return [Problem(json_path(parts), error.schema.get("description", error.message), None,
                            expected, "form")]
        return [Problem(json_path(parts), f"bad value {_short_repr(error.instance)}", error.instance, expected)]

    def _unknown_keys(self, error: Any, parts: list[Any]) -> list[Problem]:
        known = list((error.schema.get("properties") or {}).keys())
        patterns = list((error.schema.get("patternProperties") or {}).keys())
        problems = []
        for key in error.instance:
            if key in known or (isinstance(key, str) and key.startswith(PRIVATE_PREFIX)
                                and "^x-" in patterns):
                continue
            close = suggest(key, known) if isinstance(key, str) else None
            hint = f" (did you mean {close!r}?)" if close else ""
            expected = ("one of the fields " + ", ".join(known) if known else "no fields")
            if "^x-" in patterns:
                expected += f"; private notes go under a key starting with {PRIVATE_PREFIX!r}"
            problems.append(Problem(json_path(parts + [key]), f"unknown field {key!r}{hint}",
                                    error.instance[key], expected, "unknown"))
        return problems

    def _extra(self, instance: Any) -> list[Problem]:
        out: list[Problem] = []
        for check in self._extra_checks:
            try:
                out.extend(check(instance))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                continue  # the schema reports the malformed part
        return out

    def problems(self, instance: Any) -> list[Problem]:
        """Every violation, sorted by JSON path (duplicates removed); empty when valid."""
        out: list[Problem] = []
        seen: set[tuple[str, str]] = set()
        for error in self._errors(instance):
            for problem in self._translate(error):
                if (problem.path, problem.message) not in seen:
                    seen.add((problem.path, problem.message))
                    out.append(problem)
        if not out:
            out = self._extra(instance)
        return sorted(out, key=lambda p: p.path)

    def first_problem(self, instance: Any) -> Problem | None:
        """The most relevant violation, or ``None``.

        An unknown key comes first (a misspelled key often causes the other errors, e.g. a
        "missing" field that is there under a wrong name); otherwise jsonschema's
        ``best_match`` decides.
        """
        import jsonschema

        errors = self._errors(instance)
        for error in errors:
            if error.validator in ("additionalProperties", "unevaluatedProperties"):
                found = self._translate(error)
                if found:
                    return found[0]
        best = jsonschema.exceptions.best_match(errors)
        if best is not None:
            found = self._translate(best)
            if found:
                return found[0]
            other = [p for e in errors for p in self._translate(e)]
            return other[0] if other else None
        extra = self._extra(instance)
        return extra[0] if extra else None

    def check(self, instance: Any) -> None:
        """Raise the first problem as :attr:`error_type`; return quietly when valid."""
        if not isinstance(instance, dict) and self._schema.get("type") == "object":
            raise self.error_type(f"a {self.what} must be a JSON object", "$",
                                  _short(instance), "a JSON object")
        problem = self.first_problem(instance)
        if problem is not None:
            raise problem.error(self.error_type)

    # -- defaults ------------------------------------------------------------------------
    def resolve(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """A subschema with its local ``$ref`` (``#/$defs/...``) merged in."""
        out = dict(schema)
        while "$ref" in out:
            ref = out.pop("$ref")
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ValueError(f"{self.schema_name}: only local $ref are supported, not {ref!r}")
            target: Any = self._schema
            for part in ref[2:].split("/"):
                target = target[part]
            out = {**target, **out}
        return out

    def subschema(self, *parts: str | int) -> dict[str, Any]:
        """The schema of the field at ``parts`` (an int or ``"*"`` stands for an array item)."""
        schema = self.resolve(self._schema)
        for part in parts:
            if isinstance(part, int) or part == "*":
                schema = self.resolve(schema["items"])
            else:
                schema = self.resolve(schema["properties"][part])
        return schema

    def with_defaults(self, instance: Any, schema: Mapping[str, Any] | None = None) -> Any:
        """A copy of ``instance`` with the schema's defaults filled in, recursively.

        ``schema`` is the subschema ``instance`` follows (default: the whole schema).  A
        default is not added for a key whose alternative spelling is present.
        """
        return self._fill(copy.deepcopy(instance), self._schema if schema is None else schema)

    def _fill(self, instance: Any, schema: Mapping[str, Any]) -> Any:
        schema = self.resolve(schema)
        if isinstance(instance, dict) and "properties" in schema:
            for key, sub in schema["properties"].items():
                sub = self.resolve(sub)
                if key not in instance and "default" in sub and self._alternative.get(key) not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
                if key in instance:
                    instance[key] = self._fill(instance[key], sub)
        elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
            return [self._fill(item, schema["items"]) for item in instance]
        return instance

    def defaults(self) -> dict[str, Any]:
        """The top-level fields that have a default, with their (filled) defaults."""
        out: dict[str, Any] = {}
        for key, sub in (self._schema.get("properties") or {}).items():
            sub = self.resolve(sub)
            if "default" in sub:
                out[key] = self._fill(copy.deepcopy(sub["default"]), sub)
        return out


def _walk(doc: Any, parts: tuple[str, ...]) -> list[dict[str, Any]]:
    """The objects at ``parts`` of ``doc`` (``"*"`` stands for every item of a list)."""
    nodes = [doc]
    for part in parts:
        nxt = []
        for node in nodes:
            if part == "*" and isinstance(node, list):
                nxt.extend(node)
            elif isinstance(node, dict) and part in node:
                nxt.append(node[part])
        nodes = nxt
    return [n for n in nodes if isinstance(n, dict)]


class Normalizer:
    """Versions, migrations and spellings of one configuration type.

    Parameters
    ----------
    doc
        The document type (schema, checks, defaults).
    spellings
        Per object path (``"*"`` for list items): the original's key → the key used inside.
    current_version
        The format version :meth:`load` produces.
    migrations
        ``migrations[n]`` turns a version-``n`` document into a version-``n + 1`` one.
    version_key
        Name of the version field.
    newer_fields
        Per object path (``"*"`` for list items): the fields that version 1 does not have.
        :meth:`for_file` drops them to try writing a document as version 1, and does when
        loading the result gives the document back (nothing a user set is lost).
    """

    def __init__(self, doc: SchemaDoc, spellings: Mapping[tuple[str, ...], Mapping[str, str]] | None = None,
                 current_version: int = 1,
                 migrations: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
                 version_key: str = "Version",
                 newer_fields: Mapping[tuple[str, ...], Iterable[str]] | None = None):
        self.doc = doc
        self.spellings = {k: dict(v) for k, v in (spellings or {}).items()}
        self.current_version = current_version
        self.migrations = dict(migrations or {})
        self.version_key = version_key
        self.newer_fields = {k: tuple(v) for k, v in (newer_fields or {}).items()}
        missing = [n for n in range(1, current_version) if n not in self.migrations]
        if missing:
            raise ValueError(f"no migration from version(s) {missing} to the next")

    def version_of(self, raw: Mapping[str, Any]) -> int:
        """The format version of a document: its ``Version``, or 1 when there is none.

        Raises
        ------
        ConfigFieldError
            A version that is not a whole number, or newer than this saxsdog reads.
        """
        version = raw.get(self.version_key, 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self.doc.error_type(f"bad format version {_short(version)}", f"$.{self.version_key}",
                                      version, f"a whole number from 1 to {self.current_version}")
        if version > self.current_version:
            raise self.doc.error_type(
                f"this {self.doc.what} is format version {version}; this saxsdog reads versions up "
                f"to {self.current_version} (update saxsdog)", f"$.{self.version_key}", version,
                f"a version up to {self.current_version}")
        return version

    def migrate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``raw`` migrated to the current version, without its ``Version``.

        The version is the normalizer's business, not the schema's: the schema describes
        the fields of the current version only (so the web form never offers a
        ``Version`` field, which the original would refuse).
        """
        if not isinstance(raw, Mapping):
            raise self.doc.error_type(f"a {self.doc.what} must be a JSON object", "$", _short(raw),
                                      "a JSON object")
        doc = copy.deepcopy(dict(raw))
        version = self.version_of(doc)
        doc.pop(self.version_key, None)
        while version < self.current_version:
            doc = self.migrations[version](doc)
            version += 1
        return doc

    def check(self, raw: Any) -> None:
        """Raise the first problem of a document (any supported version), else return."""
        self.doc.check(self.migrate(raw))

    def problems(self, raw: Any) -> list[Problem]:
        """Every problem of a document (any supported version), sorted by path."""
        if not isinstance(raw, Mapping):
            return [Problem("$", f"a {self.doc.what} must be a JSON object", None, "a JSON object", "form")]
        try:
            doc = self.migrate(raw)
        except ConfigFieldError as exc:
            return [Problem(exc.path, exc.message, exc.value, exc.expected, "form")]
        return self.doc.problems(doc)

    def respell(self, doc: dict[str, Any], reverse: bool = False) -> dict[str, Any]:
        """Rename the original's spellings in place (``reverse``: back to the original's)."""
        for parts, names in self.spellings.items():
            mapping = {v: k for k, v in names.items()} if reverse else names
            for node in _walk(doc, parts):
                renames = {old: new for old, new in mapping.items() if old in node and new not in node}
                if renames:  # rebuilt in place, so each key keeps its position (files stay diffable)
                    items = [(renames.get(key, key), value) for key, value in node.items()]
                    node.clear()
                    node.update(items)
        return doc

    def file_key(self, doc: Any, parts: Sequence[str], name: str) -> str:
        """How a field is spelled in a document as written: the original's spelling, unless
        the document uses saxsdog's.

        ``parts`` is the path of the object holding the field (as in :attr:`spellings`),
        ``name`` the field in saxsdog's spelling.  For messages about a field, so they name
        it as the user wrote it (or, when it is missing, as the original's manual does).
        """
        names = self.spellings.get(tuple(parts), {})
        original = next((old for old, new in names.items() if new == name), name)
        nodes = _walk(doc, tuple(parts))
        if original != name and nodes and name in nodes[0] and original not in nodes[0]:
            return name
        return original

    def load(self, raw: Any) -> dict[str, Any]:
        """Migrate, check, respell, stamp the version and fill in defaults.

        Returns
        -------
        dict
            A new document in saxsdog's spellings with ``Version`` and every default.

        Raises
        ------
        ConfigFieldError
            Of the document's :attr:`SchemaDoc.error_type`, naming the JSON path.
        """
        doc = self.migrate(raw)
        self.doc.check(doc)
        self.respell(doc)
        doc[self.version_key] = self.current_version
        return self.doc.with_defaults(doc)

    def as_version_1(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """A loaded document (any version) as a version-1 one, or ``None`` when it needs more.

        The :attr:`newer_fields` are dropped; the result counts when :meth:`load` turns it
        back into ``config`` (the newer fields held what the migration from version 1 puts
        there).  The result is in saxsdog's spellings, without ``Version``.
        """
        if not self.newer_fields:
            return None
        doc = copy.deepcopy(dict(config))
        doc.pop(self.version_key, None)
        for parts, names in self.newer_fields.items():
            for node in _walk(doc, parts):
                for name in names:
                    node.pop(name, None)
        try:
            again = self.load(doc)
        except ConfigFieldError:
            return None
        return doc if again == dict(config) else None

    def for_file(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a loaded document as it is written to a file.

        Version 1 (the original's format) is written in the original's spellings and
        without ``Version``, so the original SAXSDOG reads it.  A later version is
        written as version 1 when it holds nothing version 1 cannot say (see
        :meth:`as_version_1`: a version-1 file loaded and written back unchanged stays
        the original's file); otherwise with its ``Version``.
        """
        doc = copy.deepcopy(dict(config))
        version = doc.get(self.version_key, 1)
        if version != 1:
            older = self.as_version_1(doc)
            if older is not None:
                doc, version = older, 1
        if version == 1:
            doc.pop(self.version_key, None)
            self.respell(doc, reverse=True)
        return doc


# --------------------------------------------------------------------------- calibration

def _image_size_problems(cal: Any) -> list[Problem]:
    geometry = cal.get("Geometry") if isinstance(cal, dict) else None
    if not isinstance(geometry, dict):
        return []
    for key in ("Imagesize", "ImageSize"):
        size = geometry.get(key)
        if (isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) for n in size)
                and size[0] * size[1] > MAX_IMAGE_PIXELS):
            return [Problem(f"$.Geometry.{key}", f"image size {size[0]}x{size[1]} "
                            f"({size[0] * size[1]:,} pixels) is larger than any detector",
                            size, f"at most {MAX_IMAGE_PIXELS:,} pixels", "limit")]
    return []


def _calibration_doc() -> SchemaDoc:
    pairs = [pair for names in CALIBRATION_SPELLINGS.values() for pair in names.items()]
    return SchemaDoc("calibration.schema.json", CalibrationError, "calibration", pairs,
                     extra_checks=[_image_size_problems])


#: Fields of calibration format version 2 that version 1 (the original's) does not have,
#: per object path (``"*"``: every list item).
CALIBRATION_V2_FIELDS: dict[tuple[str, ...], tuple[str, ...]] = {
    (): ("Corrections", "Normalization", "Background"),
    ("Masks", "*"): ("Binning", "PointsPerDecade", "Unit", "RadialRange", "AzimuthRange", "PhiBins", "Cake"),
    ("Slices", "*"): ("Reference",),
}


def calibration_v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """Migrate a version-1 calibration (the original's format) to version 2.

    Version 1 knew no solid-angle correction, so ``Corrections.SolidAngle`` becomes false
    (unless the document already says otherwise): q and I stay those of the original.
    Every other new field takes the schema's default when the document is loaded.
    """
    doc = copy.deepcopy(doc)
    corrections = doc.get("Corrections")
    if corrections is None:
        doc["Corrections"] = {"SolidAngle": False}
    elif isinstance(corrections, dict):  # a malformed block is left to the schema check
        corrections.setdefault("SolidAngle", False)
    return doc


#: Calibrations: schema check, defaults, versions and the original's spellings.
CALIBRATION = Normalizer(_calibration_doc(), CALIBRATION_SPELLINGS, current_version=2,
                         migrations={1: calibration_v1_to_v2}, newer_fields=CALIBRATION_V2_FIELDS)


def calibration_in_saxsdog_spellings(calibration: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a calibration in file form with saxsdog's spellings (no check, no defaults).

    For code that reads a calibration as the user wrote it (converters, previews): it can
    then read ``Geometry.DetectorDistanceMM`` and ``Geometry.ImageSize`` whichever spelling
    the file used.
    """
    return CALIBRATION.respell(copy.deepcopy(dict(calibration)))


def calibration_field_path(calibration: Any, *parts: str) -> str:
    """The JSON path of a calibration field, spelled as in ``calibration``.

    ``parts`` name the field in saxsdog's spelling; the result uses the original's
    spelling unless the calibration uses saxsdog's.

    >>> calibration_field_path({"Geometry": {}}, "Geometry", "ImageSize")
    '$.Geometry.Imagesize'
    >>> calibration_field_path({"Geometry": {"ImageSize": [2, 3]}}, "Geometry", "ImageSize")
    '$.Geometry.ImageSize'
    """
    parts = tuple(parts)
    if not parts:
        return "$"
    return json_path([*parts[:-1], CALIBRATION.file_key(calibration, parts[:-1], parts[-1])])


def calibration_image_size(calibration: Any) -> tuple[int, int] | None:
    """``Geometry.ImageSize`` of a calibration (any spelling) as ``(rows, cols)``.

    Returns ``None`` when the calibration gives no image size.

    Raises
    ------
    CalibrationError
        The field is there but not two positive whole numbers (the path is spelled as
        in ``calibration``).
    """
    if not isinstance(calibration, Mapping):
        return None
    geometry = calibration_in_saxsdog_spellings(calibration).get("Geometry")
    if not isinstance(geometry, Mapping) or "ImageSize" not in geometry:
        return None
    size = geometry["ImageSize"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(n, (int, float)) and not isinstance(n, bool)
                       and float(n).is_integer() and n >= 1 for n in size)):
        raise CalibrationError("malformed", calibration_field_path(calibration, "Geometry", "ImageSize"),
                               size, "[rows, columns], positive integers")
    return int(size[0]), int(size[1])


def calibration_problems(calibration: Any) -> list[dict[str, Any]]:
    """Every problem of a calibration, for the web page's live validation.

    Returns
    -------
    list of dict
        ``{"path": "$.Geometry.DedectorDistanceMM", "message": ..., "value": ...,
        "expected": ...}``, sorted by path; empty when the calibration is valid.
    """
    return [p.as_dict() for p in CALIBRATION.problems(calibration)]
