"""saxsdog.config: one schema document type, strict keys, versions, spellings, shipped defaults."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from saxsdog import Calibration, CalibrationError
from saxsdog.config import (CALIBRATION, MAX_IMAGE_PIXELS, Normalizer, SchemaDoc, calibration_problems,
                            suggest)
from saxsdog.errors import ConfigFieldError
from saxsdog.testing import small_calibration as small_cal




# --------------------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("mutate,path,suggestion", [
    # both were ignored before: curves without polarization correction / without tilt
    (lambda c: c.__setitem__("PolarisationCorrection", {"Fraction": 0.95, "Angle": 0.0}),
     "$.PolarisationCorrection", "PolarizationCorrection"),
    (lambda c: c["Geometry"].__setitem__("Tiltt", c["Geometry"].pop("Tilt")), "$.Geometry.Tiltt", "Tilt"),
    (lambda c: c["Masks"][0].__setitem__("Oversampeling", 3), "$.Masks[0].Oversampeling", "Oversampling"),
    (lambda c: c["Geometry"]["Tilt"].__setitem__("TiltRotDegree", 3), "$.Geometry.Tilt.TiltRotDegree",
     "TiltRotDeg"),
    (lambda c: c.__setitem__("Slices", [{"Direction": "x", "Plane": "InPlane", "CutPosition": 3, "Maskref": 0}]),
     "$.Slices[0].Maskref", "MaskRef"),
    (lambda c: c.__setitem__("PolarizationCorrection", {"Fraction": 0.9, "Angle": 0, "angel": 1}),
     "$.PolarizationCorrection.angel", "Angle"),
    (lambda c: c.__setitem__("wavelength", 1.0), "$.wavelength", "Wavelength"),
])
def test_unknown_keys_are_refused_with_path_and_suggestion(mutate, path, suggestion):
    cal = small_cal()
    mutate(cal)
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, cache=False)
    assert info.value.path == path
    assert f"did you mean {suggestion!r}" in str(info.value)
    assert [p["path"] for p in calibration_problems(cal) if p["path"] == path]


def test_unknown_key_without_a_close_name_lists_the_fields():
    with pytest.raises(CalibrationError, match=r"unknown field 'Zebra'.*one of the fields.*Wavelength"):
        Calibration(small_cal(Zebra=1), cache=False)


def test_x_keys_are_private_notes():
    cal = small_cal(**{"x-comment": "beamtime 2026", "x-by": {"name": "me"}})
    cal["Geometry"]["x-measured"] = "with a ruler"
    cal["Masks"][0]["x-note"] = "no mask"
    plain = Calibration(small_cal(), cache=False)
    noted = Calibration(cal, cache=False)
    assert noted.config["x-comment"] == "beamtime 2026"
    image = np.arange(64 * 48, dtype=np.float64).reshape(64, 48)
    assert np.array_equal(plain.integrate(image)[1], noted.integrate(image)[1])


def test_suggest():
    assert suggest("PolarisationCorrection", ["PolarizationCorrection", "Masks"]) == "PolarizationCorrection"
    assert suggest("imagesize", ["Imagesize", "ImageSize"]) in ("Imagesize", "ImageSize")
    assert suggest("Zebra", ["Masks", "Wavelength"]) is None


def test_merge_configuration_is_strict_too():
    from saxsdog.merge import MergeConfigError, normalize_config

    with pytest.raises(MergeConfigError) as info:
        normalize_config({"TimeOfset": 3})
    assert info.value.path == "$.TimeOfset" and "did you mean 'TimeOffset'" in str(info.value)
    conf = normalize_config({"x-note": "kept", "LogDataTables": [{"Files": [{"LocalPath": "a.log"}]}]})
    assert conf["x-note"] == "kept"
    assert conf["LogDataTables"][0]["Name"] == "log"  # a default behind "$ref": "#/$defs/logTable"


# --------------------------------------------------------------------------- the problems list (page)

def test_calibration_problems_lists_every_problem_for_the_page(data_dir):
    cal = json.loads((data_dir / "cal.json").read_text())
    assert calibration_problems(cal) == []
    cal["Geometry"]["DedectorDistanceMM"] = -5
    cal["Masks"][0]["Oversampling"] = "three"
    cal["Masks"][0]["Oversampeling"] = 3
    del cal["Wavelength"]
    problems = calibration_problems(cal)
    by_path = {p["path"]: p for p in problems}
    assert [p["path"] for p in problems] == sorted(by_path)
    assert "-5" in by_path["$.Geometry.DedectorDistanceMM"]["message"]
    assert "> 0" in by_path["$.Geometry.DedectorDistanceMM"]["message"]
    assert by_path["$.Geometry.DedectorDistanceMM"]["value"] == -5
    assert "integer" in by_path["$.Masks[0].Oversampling"]["message"]
    assert "did you mean 'Oversampling'" in by_path["$.Masks[0].Oversampeling"]["message"]
    assert "missing" in by_path["$.Wavelength"]["message"]
    assert set(problems[0]) == {"path", "message", "value", "expected"}
    both = json.loads((data_dir / "cal.json").read_text())
    both["Geometry"]["DetectorDistanceMM"] = 1000.0  # both spellings at once
    assert [p["path"] for p in calibration_problems(both)] == ["$.Geometry"]
    assert calibration_problems([1, 2])[0]["path"] == "$"
    assert calibration_problems({**cal, "Version": 7})[0]["path"] == "$.Version"


def test_a_long_value_is_cut_in_messages():
    cal = small_cal(Title=["x" * 10_000])
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, cache=False)
    assert info.value.path == "$.Title" and len(str(info.value)) < 300


# --------------------------------------------------------------------------- image size bounds

def test_huge_image_size_is_refused_at_validation():
    cal = small_cal()
    cal["Geometry"]["Imagesize"] = [40000, 40000]
    start = time.perf_counter()
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, cache=False)
    assert time.perf_counter() - start < 2.0  # no operator is built
    assert info.value.path in ("$.Geometry.Imagesize[0]", "$.Geometry.Imagesize[1]")
    assert "16384" in str(info.value)
    assert calibration_problems(cal)[0]["path"].startswith("$.Geometry.Imagesize")


def test_image_pixel_count_is_bounded():
    cal = small_cal()
    cal["Geometry"]["ImageSize"] = [16384, 16384]
    del cal["Geometry"]["Imagesize"]
    with pytest.raises(CalibrationError) as info:
        Calibration(cal, cache=False)
    assert info.value.path == "$.Geometry.ImageSize" and f"{MAX_IMAGE_PIXELS:,}" in str(info.value)
    assert calibration_problems(cal)[0]["path"] == "$.Geometry.ImageSize"
    cal["Geometry"]["ImageSize"] = [4362, 4148]  # Eiger 16M
    CALIBRATION.check(cal)


# --------------------------------------------------------------------------- versions and spellings

@pytest.mark.slow
def test_files_without_version_are_version_1_and_load_unchanged(data_dir):
    raw = json.loads((data_dir / "cal.json").read_text())
    cal = Calibration(data_dir / "cal.json", cache=False)
    assert cal.raw == raw and "Version" not in cal.raw
    assert cal.config["Version"] == 2  # migrated from 1 (the original's format)
    assert cal.config["Corrections"]["SolidAngle"] is False  # so q and I stay the original's
    g = cal.config["Geometry"]
    assert g["DetectorDistanceMM"] == 1031.657 and g["ImageSize"] == [1043, 981]
    assert "DedectorDistanceMM" not in g and "Imagesize" not in g
    explicit = Calibration({**raw, "Version": 1}, base_dir=data_dir, cache=False)
    assert explicit.config == cal.config


@pytest.mark.parametrize("version,fragment", [(3, "update saxsdog"), (0, "whole number"),
                                              ("1", "whole number"), (True, "whole number")])
def test_unsupported_versions_are_refused(version, fragment):
    with pytest.raises(CalibrationError) as info:
        Calibration(small_cal(Version=version), cache=False)
    assert info.value.path == "$.Version" and fragment in str(info.value)


def test_written_back_in_the_original_spellings_without_version(data_dir, tmp_path):
    from saxsdog.calibration import calibration_for_file

    raw = json.loads((data_dir / "cal.json").read_text())
    cal = Calibration(data_dir / "cal.json", cache=False)
    assert calibration_for_file(cal.config) == raw  # cal.json already lists every default
    modern = small_cal()
    g = modern["Geometry"]
    g["DetectorDistanceMM"], g["ImageSize"] = g.pop("DedectorDistanceMM"), g.pop("Imagesize")
    out = calibration_for_file(Calibration(modern, cache=False).config)
    assert "Version" not in out
    assert out["Geometry"]["DedectorDistanceMM"] == 300.0 and out["Geometry"]["Imagesize"] == [64, 48]
    assert "DetectorDistanceMM" not in out["Geometry"] and "ImageSize" not in out["Geometry"]
    # what saxsdog writes loads again to the same configuration
    (tmp_path / "out.json").write_text(json.dumps(out))
    assert Calibration(tmp_path / "out.json", cache=False).config == Calibration(modern, cache=False).config


def test_file_form_in_saxsdog_spellings_for_readers():
    from saxsdog.config import calibration_in_saxsdog_spellings

    raw = small_cal()
    view = calibration_in_saxsdog_spellings(raw)
    assert view["Geometry"]["DetectorDistanceMM"] == 300.0 and view["Geometry"]["ImageSize"] == [64, 48]
    assert raw == small_cal() and "Version" not in view


def test_migrations_run_from_the_file_version_up():
    def one_to_two(doc):
        doc = copy.deepcopy(doc)
        doc["Title"] = doc.get("Title", "") + " (migrated)"
        return doc

    v2 = Normalizer(CALIBRATION.doc, CALIBRATION.spellings, current_version=2, migrations={1: one_to_two})
    loaded = v2.load(small_cal(Title="old"))
    assert loaded["Version"] == 2 and loaded["Title"] == "old (migrated)"
    assert v2.for_file(loaded)["Version"] == 2  # later versions keep their Version
    assert "DetectorDistanceMM" in v2.for_file(loaded)["Geometry"]
    with pytest.raises(ValueError, match="no migration"):
        Normalizer(CALIBRATION.doc, current_version=3, migrations={1: one_to_two})


def test_schema_doc_error_type_and_first_problem():
    doc = SchemaDoc("calibration.schema.json")
    cal = small_cal()
    del cal["Wavelength"]
    cal["Geometry"]["Tiltt"] = {}
    problem = doc.first_problem(cal)
    assert problem.path == "$.Geometry.Tiltt"  # the unknown key first: a misspelling explains the rest
    with pytest.raises(ConfigFieldError):
        doc.check(cal)
    assert {p.path for p in doc.problems(cal)} == {"$.Geometry.Tiltt", "$.Wavelength"}


# --------------------------------------------------------------------------- shipped defaults

def _schema_defaults_agree(doc: SchemaDoc, value, schema, path="$", skip=()):
    """Paths where ``value`` differs from a default of ``schema``."""
    out = []
    schema = doc.resolve(schema)
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            sub = doc.resolve(sub)
            where = f"{path}.{key}"
            if key in value and where not in skip:
                if "default" in sub and not isinstance(sub["default"], dict) and value[key] != sub["default"]:
                    out.append(where)
                out += _schema_defaults_agree(doc, value[key], sub, where, skip)
            elif "default" in sub and where not in skip and key not in ("DetectorDistanceMM", "ImageSize"):
                out.append(where + " (missing)")
    return out


def test_fit2d_converter_template_equals_the_schema_defaults():
    from saxsdog.io.fit2d import default_calibration

    template = default_calibration()
    CALIBRATION.check(template)
    doc = CALIBRATION.doc
    # the converter names its output on purpose
    assert _schema_defaults_agree(doc, template, doc.schema,
                                  skip={"$.Title", "$.Corrections", "$.Normalization"}) == []
    # the template is a version-1 file (the original reads it): loading adds the version-2
    # blocks as the migration puts them, and writing back drops them again
    filled = doc.with_defaults(template)
    assert {k: v for k, v in filled.items() if k not in ("Corrections", "Normalization")} == template
    assert CALIBRATION.for_file(CALIBRATION.load(template)) == template


def test_every_schema_default_is_a_valid_value():
    doc = CALIBRATION.doc
    full = doc.with_defaults(small_cal(Slices=[{"Direction": "x", "Plane": "InPlane", "CutPosition": 3}],
                                       PolarizationCorrection={"Fraction": 0.9, "Angle": 0.0}))
    CALIBRATION.check(full)
    assert full["Slices"][0]["MaskRef"] == 0 and full["Threads"] == 2
    assert set(doc.defaults()) >= {"Title", "Slices", "Wavelength", "Threads", "GISAXSmode"}


#: Words of a schema that are neither validation keywords nor ``x-`` annotations.
_SCHEMA_ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples",
                       "then", "else"}  # then/else: read by jsonschema's "if"


def _schema_keywords(schema, where="$"):
    """``(where, keyword)`` of every keyword of a schema (property names are not keywords)."""
    if isinstance(schema, list):
        return [kw for i, sub in enumerate(schema) for kw in _schema_keywords(sub, f"{where}[{i}]")]
    if not isinstance(schema, dict):
        return []
    out = [(where, key) for key in schema]
    for key, sub in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            for name, part in sub.items():
                out += _schema_keywords(part, f"{where}.{key}.{name}")
        elif key in ("items", "allOf", "anyOf", "oneOf", "not", "additionalProperties", "if", "then", "else"):
            out += _schema_keywords(sub, f"{where}.{key}")
    return out


@pytest.mark.parametrize("name", ["calibration.schema.json", "datamerge.schema.json", "network.schema.json",
                                  "leash_request.schema.json", "leash_response.schema.json"])
def test_schema_words_are_keywords_or_x_annotations(name):
    # A misspelled keyword ("maximun") would be ignored by jsonschema like an annotation:
    # only x- words may be unknown to it.
    import jsonschema

    from saxsdog.schemas import load_schema

    try:
        schema = load_schema(name)
    except FileNotFoundError:
        pytest.skip(f"{name} is not shipped")
    known = set(jsonschema.validators.validator_for(schema).VALIDATORS) | _SCHEMA_ANNOTATIONS
    unknown = [f"{where}: {kw}" for where, kw in _schema_keywords(schema)
               if kw not in known and not kw.startswith("x-")]
    assert unknown == []


def _without_x_keywords(schema):
    """The schema without its ``x-`` keywords (property names are kept, whatever they are)."""
    if isinstance(schema, list):
        return [_without_x_keywords(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {name: _without_x_keywords(sub) for name, sub in value.items()}
        elif not key.startswith("x-"):
            out[key] = _without_x_keywords(value)
    return out


def test_unit_and_item_label_annotations_do_not_change_the_checks(tmp_path):
    """``x-unit`` / ``x-itemLabels`` in the calibration schema are annotations for the page:
    not keys a calibration may hold, never suggested for a misspelled key, and the checks
    are those of the schema without them."""
    import jsonschema

    schema = CALIBRATION.doc.schema
    geometry = schema["properties"]["Geometry"]["properties"]
    assert geometry["BeamCenter"]["x-itemLabels"] == ["vertical", "horizontal"]
    assert geometry["DedectorDistanceMM"]["x-unit"] == geometry["DetectorDistanceMM"]["x-unit"] == "mm"
    bare = _without_x_keywords(schema)
    assert '"x-unit":' not in json.dumps(bare) and '"^x-": true' in json.dumps(bare)  # private notes stay allowed
    plain = jsonschema.Draft202012Validator(bare)
    bad = [small_cal(Wavelength=-1), small_cal(unit="mm"), small_cal(xunit=1),
           small_cal(Geometry={"BeamCenter": [1, 2, 3], "unit": "pixels"}), small_cal()]
    bad[-1]["Geometry"]["Imagesize"] = [0, "x"]
    for cal in bad:
        ours = sorted((e.json_path, e.message) for e in CALIBRATION.doc._errors(cal))
        assert ours == sorted((e.json_path, e.message) for e in plain.iter_errors(cal))
        for problem in calibration_problems(cal):
            assert "x-unit" not in problem["message"] + problem["expected"]
            assert "x-itemLabels" not in problem["message"] + problem["expected"]
    with pytest.raises(CalibrationError) as info:
        Calibration(small_cal(unit="mm"), cache=False)
    assert info.value.path == "$.unit" and "x-unit" not in str(info.value)
    noted = small_cal(**{"x-unit": "my note"})  # an instance key starting with x- is a private note
    noted["Geometry"]["x-itemLabels"] = ["mine"]
    assert Calibration(noted, cache=False).config["x-unit"] == "my note"


def _js_function(source: str, name: str) -> str | None:
    m = re.search(rf"(?:export\s+)?function {name}\s*\(", source)
    if not m:
        return None
    i = source.index("{", m.end())
    depth = 0
    for j in range(i, len(source)):
        depth += {"{": 1, "}": -1}.get(source[j], 0)
        if depth == 0:
            return re.sub(r"^export\s+", "", source[m.start():j + 1])
    return None


def test_page_defaults_equal_the_schema_defaults(tmp_path):
    """The page's "defaults" button (makeDefault over the schema) gives a valid calibration
    whose fields are the schema's defaults."""
    node = shutil.which("node") or shutil.which("nodejs")
    static = Path(__import__("saxsdog.server", fromlist=["x"]).__file__).parent / "static"
    sources = "\n".join(p.read_text() for p in sorted(static.rglob("*.js")) + sorted(static.rglob("*.mjs")))
    parts = [_js_function(sources, n) for n in ("typeOf", "clone", "makeDefault")]
    if node is None or None in parts:
        pytest.skip("node or the page's makeDefault not found")
    script = tmp_path / "defaults.js"
    script.write_text("\n".join(parts) + "\nconst fs = require('fs');\n"
                      "const schema = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
                      "process.stdout.write(JSON.stringify(makeDefault(schema)));\n")
    (tmp_path / "schema.json").write_text(json.dumps(CALIBRATION.doc.schema))
    run = subprocess.run([node, str(script), str(tmp_path / "schema.json")], capture_output=True,
                         text=True, check=False, timeout=60)
    assert run.returncode == 0, run.stderr
    page = json.loads(run.stdout)
    assert calibration_problems(page) == []
    doc = CALIBRATION.doc
    assert _schema_defaults_agree(doc, page, doc.schema) == []


def test_saxsconverter_writes_the_original_spellings(tmp_path):
    from saxsdog.cli.converter import main

    template = small_cal()
    g = template["Geometry"]
    g["DetectorDistanceMM"], g["ImageSize"] = g.pop("DedectorDistanceMM"), g.pop("Imagesize")
    (tmp_path / "t.json").write_text(json.dumps(template))
    fit2d = ("INFO: Refined Beam centre =      30.000     40.000 (pixels)\n"
             "INFO: Refined sample to detector distance =     2000.5 mm\n")
    (tmp_path / "fit2d.txt").write_text(fit2d)
    assert main(["-t", str(tmp_path / "t.json"), str(tmp_path / "fit2d.txt"), "-o", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["Geometry"]["DedectorDistanceMM"] == 2000.5 and out["Geometry"]["Imagesize"] == [64, 48]
    assert "DetectorDistanceMM" not in out["Geometry"] and "ImageSize" not in out["Geometry"]
    assert "Version" not in out


# --------------------------------------------------------------------------- one module knows the spellings

def test_respelling_keeps_each_key_in_its_place(data_dir):
    # a renamed key used to move to the end of its object, so a file saxsdog wrote back
    # differed from the one it read (and diffs of calibrations showed moved lines)
    from saxsdog.calibration import calibration_for_file

    raw = json.loads((data_dir / "cal.json").read_text())
    cal = Calibration(data_dir / "cal.json", cache=False)
    written = calibration_for_file(cal.config)
    assert json.dumps(written, indent=4) == json.dumps(raw, indent=4)
    positions = [list(raw["Geometry"]).index(k) for k in ("DedectorDistanceMM", "Imagesize")]
    assert [list(cal.config["Geometry"]).index(k) for k in ("DetectorDistanceMM", "ImageSize")] == positions


def test_image_size_and_field_paths_in_the_file_spelling():
    from saxsdog.config import calibration_field_path, calibration_image_size

    original = small_cal()
    modern = small_cal()
    g = modern["Geometry"]
    g["DetectorDistanceMM"], g["ImageSize"] = g.pop("DedectorDistanceMM"), g.pop("Imagesize")
    loaded = Calibration(original, cache=False).config
    for cal in (original, modern, loaded):
        assert calibration_image_size(cal) == (64, 48)
    assert calibration_field_path(original, "Geometry", "ImageSize") == "$.Geometry.Imagesize"
    assert calibration_field_path(modern, "Geometry", "ImageSize") == "$.Geometry.ImageSize"
    assert calibration_field_path({}, "Geometry", "DetectorDistanceMM") == "$.Geometry.DedectorDistanceMM"
    assert calibration_field_path(modern, "Geometry", "BeamCenter") == "$.Geometry.BeamCenter"
    del g["ImageSize"]
    assert calibration_image_size(modern) is None and calibration_image_size(None) is None
    for cal, path in ((original, "$.Geometry.Imagesize"), (small_cal(), "$.Geometry.Imagesize")):
        cal["Geometry"]["Imagesize"] = [64, 0]
        with pytest.raises(CalibrationError) as info:
            calibration_image_size(cal)
        assert info.value.path == path and info.value.value == [64, 0]
    g["ImageSize"] = [2.5, 3]
    with pytest.raises(CalibrationError) as info:
        calibration_image_size(modern)
    assert info.value.path == "$.Geometry.ImageSize"


def test_demo_writes_its_calibration_in_the_original_spellings(tmp_path):
    from saxsdog import demo

    path = demo.make_dataset(tmp_path, n_images=0)
    written = json.loads(path.read_text())
    assert list(written["Geometry"]) == ["Tilt", "DedectorDistanceMM", "BeamCenter", "Imagesize",
                                         "PixelSizeMicroM"]
    assert Calibration(path, cache=False).geometry.shape == demo.SHAPE
    assert CALIBRATION.load(written) == CALIBRATION.load(demo.CALIBRATION)


#: Where the original's spellings belong: the one module that maps them, and the schema of
#: the file format (which must name the keys a file holds).
_SPELLING_HOMES = {"config.py", "schemas/calibration.schema.json"}


def test_only_the_config_module_knows_the_original_spellings():
    import saxsdog

    package = Path(saxsdog.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*")):
        if path.suffix not in (".py", ".js", ".html", ".css", ".json") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(package).as_posix()
        if rel in _SPELLING_HOMES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(r"DedectorDistanceMM|Imagesize", line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == [], ("only saxsdog.config maps the original's spellings; read "
                             "Calibration.config or saxsdog.config's helpers instead:\n" + "\n".join(offenders))


# --------------------------------------------------------------------------- format version 2

def test_version_1_migrates_to_2_without_solid_angle_and_writes_back_as_1(tmp_path):
    raw = small_cal()
    loaded = CALIBRATION.load(raw)
    assert loaded["Version"] == 2 and loaded["Corrections"]["SolidAngle"] is False
    assert loaded["Corrections"]["ErrorModel"] == "poisson" and loaded["Corrections"]["MaskNegative"] is True
    assert loaded["Normalization"] == {"ExposureTime": None, "Monitor": None, "Transmission": None,
                                       "ThicknessMM": None, "AbsoluteScale": None}
    # unchanged new blocks: written as the original's file (no Version, no new blocks)
    out = CALIBRATION.for_file(loaded)
    v1_defaults = {k: v for k, v in CALIBRATION.doc.with_defaults(raw).items()
                   if k not in ("Corrections", "Normalization")}
    assert out == v1_defaults  # the original's spellings, every version-1 default
    assert "Version" not in out and "Corrections" not in out and "Normalization" not in out
    assert "DedectorDistanceMM" in out["Geometry"]
    # a changed block makes it a version-2 file, in saxsdog's spellings, that loads back the same
    changed = copy.deepcopy(loaded)
    changed["Corrections"]["ErrorModel"] = "legacy"
    out2 = CALIBRATION.for_file(changed)
    assert out2["Version"] == 2 and out2["Corrections"]["ErrorModel"] == "legacy"
    assert "DetectorDistanceMM" in out2["Geometry"]
    assert CALIBRATION.load(out2) == changed
    changed = copy.deepcopy(loaded)
    changed["Normalization"]["ExposureTime"] = "header"
    assert CALIBRATION.for_file(changed)["Version"] == 2
    changed = copy.deepcopy(loaded)
    changed["Background"] = {"File": "empty.chi"}
    assert CALIBRATION.load(CALIBRATION.for_file(changed)) == CALIBRATION.load(changed)


def test_version_2_defaults_correct_the_solid_angle():
    cal = small_cal(Version=2)
    loaded = CALIBRATION.load(cal)
    assert loaded["Corrections"]["SolidAngle"] is True
    out = CALIBRATION.for_file(loaded)
    assert out["Version"] == 2 and out["Corrections"]["SolidAngle"] is True
    # a file without Version but with a Corrections block keeps what it says
    assert CALIBRATION.load(small_cal(Corrections={"SolidAngle": True}))["Corrections"]["SolidAngle"] is True
    assert CALIBRATION.load(small_cal(Corrections={"DarkFile": "d.tif"}))["Corrections"]["SolidAngle"] is False


@pytest.mark.parametrize("block,field,value,path", [
    ("Normalization", "Transmission", 0, "$.Normalization.Transmission"),
    ("Normalization", "Transmission", -0.5, "$.Normalization.Transmission"),
    ("Normalization", "Transmission", 1.5, "$.Normalization.Transmission"),
    ("Normalization", "ExposureTime", "headers", "$.Normalization.ExposureTime"),
    ("Normalization", "ExposureTime", 0, "$.Normalization.ExposureTime"),
    ("Normalization", "Monitor", {"Heder": "I0"}, "$.Normalization.Monitor"),
    ("Normalization", "ThicknessMM", 0, "$.Normalization.ThicknessMM"),
    ("Normalization", "AbsoluteScale", -1, "$.Normalization.AbsoluteScale"),
    ("Corrections", "ErrorModel", "gauss", "$.Corrections.ErrorModel"),
    ("Corrections", "SigmaClip", {"Sigma": 0}, "$.Corrections.SigmaClip.Sigma"),
    ("Corrections", "SigmaClip", {"Sigma": 3, "Cycles": 0}, "$.Corrections.SigmaClip.Cycles"),
    ("Corrections", "SolidAngel", True, "$.Corrections.SolidAngel"),
])
def test_version_2_fields_are_checked(block, field, value, path):
    cal = small_cal(Version=2, **{block: {field: value}})
    with pytest.raises(CalibrationError) as info:
        CALIBRATION.load(cal)
    assert info.value.path.startswith(path), (info.value.path, str(info.value))
    assert any(p["path"].startswith(path) for p in calibration_problems(cal))


def test_version_2_accepts_every_form_it_documents():
    cal = small_cal(Version=2, Corrections={"SolidAngle": False, "DarkFile": "dark.tif", "FlatFile": "flat.edf",
                                            "MaskNegative": False, "DummyValue": -1, "ErrorModel": "azimuthal",
                                            "SigmaClip": {"Sigma": 4, "Cycles": 3}},
                    Normalization={"ExposureTime": "header", "Monitor": {"Header": "Flux"},
                                   "Transmission": 0.7, "ThicknessMM": 1.5, "AbsoluteScale": 12.5},
                    Background={"File": "empty.chi", "Scale": 0.98, "ExposureTime": 10, "Transmission": 0.8,
                                "Monitor": None})
    loaded = CALIBRATION.load(cal)
    assert loaded["Background"]["Scale"] == 0.98 and loaded["Normalization"]["ExposureTime"] == "header"
    assert CALIBRATION.load(CALIBRATION.for_file(loaded)) == loaded
    assert CALIBRATION.load(small_cal(Version=2, Normalization={"ExposureTime": {"Header": "count_time"}}))
    assert CALIBRATION.load(small_cal(Version=2, Background={"File": "b.tif"}))["Background"]["Scale"] == 1.0
    with pytest.raises(CalibrationError) as info:
        CALIBRATION.load(small_cal(Version=2, Background={"Scale": 2}))
    assert info.value.path == "$.Background.File"


def test_a_calibration_using_a_version_2_mode_is_written_as_version_2():
    from saxsdog.config import CALIBRATION

    raw = {"Geometry": {"BeamCenter": [5, 5], "DedectorDistanceMM": 1000, "PixelSizeMicroM": [172],
                        "Imagesize": [10, 10]}, "Masks": [{"MaskFile": ""}], "Wavelength": 1.54}
    plain = CALIBRATION.for_file(CALIBRATION.load(raw))
    assert "Version" not in plain  # nothing of version 2 used: the original still reads it
    logbins = {**raw, "Masks": [{"MaskFile": "", "Binning": "log", "PointsPerDecade": 50,
                                 "RadialRange": [0.1, 3]}]}
    out = CALIBRATION.for_file(CALIBRATION.load(logbins))
    assert out["Version"] == 2 and out["Masks"][0]["Binning"] == "log"
    sliced = {**raw, "Slices": [{"Direction": "x", "Plane": "Vertical", "CutPosition": 3, "Reference": "horizon"}]}
    assert CALIBRATION.for_file(CALIBRATION.load(sliced))["Version"] == 2
