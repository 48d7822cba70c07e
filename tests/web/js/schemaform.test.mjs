// The calibration form's pure part (static/schemaform.js), against the shipped schema.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  addableProperties, exclusiveGroups, groupProblems, itemLabels, makeDefault, parentPath, parseValue,
  problemList, slotText, toPath, typeOf, unitOf,
} from "../../../src/saxsdog/server/static/schemaform.js";

const schema = JSON.parse(readFileSync(new URL("../../../src/saxsdog/schemas/calibration.schema.json", import.meta.url)));
const calJson = (() => {
  try { return JSON.parse(readFileSync(new URL("../../../../shared/data/cal.json", import.meta.url))); } catch (e) { return null; }
})();

test("types", () => {
  assert.equal(typeOf({ enum: ["x", "y"] }), "enum");
  assert.equal(typeOf({ type: ["null", "number"] }), "number");
  assert.equal(typeOf({ properties: {} }), "object");
  assert.equal(typeOf({ items: {} }), "array");
  assert.equal(typeOf(undefined), "any");
});

test("a new calibration holds the required and defaulted fields", () => {
  const cal = makeDefault(schema);
  // Version 2 adds the Corrections and Normalization blocks, whose fields all have defaults.
  assert.deepEqual(Object.keys(cal).sort(), ["Corrections", "Directory", "GISAXSmode", "Geometry", "Live-Filelisting",
    "Masks", "Normalization", "OverwriteFiles", "Slices", "Threads", "Title", "Wavelength"]
    .filter(k => k in schema.properties).sort());
  assert.equal(cal.Corrections.SolidAngle, true, "a new calibration corrects the solid angle");
  assert.equal(cal.Wavelength, schema.properties.Wavelength.default);
  assert.deepEqual(cal.Geometry.BeamCenter, schema.properties.Geometry.properties.BeamCenter.default);
  assert.ok(!("DetectorDistanceMM" in cal.Geometry), "only one spelling of the distance");
  assert.equal(cal.Masks.length, 1);
  assert.equal(cal.Masks[0].MaskFile, schema.properties.Masks.items.properties.MaskFile.default);
});

test("alternative spellings are found in the schema", () => {
  const groups = exclusiveGroups(schema.properties.Geometry);
  assert.deepEqual(groups, [["DedectorDistanceMM", "DetectorDistanceMM"], ["Imagesize", "ImageSize"]]);
});

test("only properties that keep the file valid are offered", () => {
  const geometry = schema.properties.Geometry;
  const original = { BeamCenter: [1, 2], PixelSizeMicroM: [172], DedectorDistanceMM: 1000, Imagesize: [10, 10] };
  assert.deepEqual(addableProperties(geometry, original), ["Tilt"]);
  const modern = { BeamCenter: [1, 2], PixelSizeMicroM: [172], DetectorDistanceMM: 1000, ImageSize: [10, 10] };
  assert.deepEqual(addableProperties(geometry, modern), ["Tilt"], "the file's own spelling is kept");
  assert.deepEqual(addableProperties(geometry, {}),
    ["Tilt", "BeamCenter", "DedectorDistanceMM", "PixelSizeMicroM", "Imagesize"], "none yet: the original's spelling");
  if (calJson) assert.deepEqual(addableProperties(geometry, calJson.Geometry), []);
  assert.deepEqual(addableProperties(schema, { Geometry: {}, Masks: [], Wavelength: 1, PolarizationCorrection: {} })
    .includes("PolarizationCorrection"), false);
});

test("every number of the calibration has a unit, and the beam centre names its axes", () => {
  // Units and item names come from the schema's x-unit / x-itemLabels annotations only.
  const missing = [];
  const walk = (s, path) => {
    if (!s) return;
    const t = typeOf(s);
    if (t === "object") for (const [k, sub] of Object.entries(s.properties || {})) walk(sub, path + "." + k);
    else if (t === "array" && typeOf(s.items) === "object") walk(s.items, path + "[]");
    else if ((t === "number" || t === "integer" || (t === "array" && ["number", "integer"].includes(typeOf(s.items))))
      && !unitOf(s)) missing.push(path);
  };
  walk(schema, "$");
  assert.deepEqual(missing, []);
  const geometry = schema.properties.Geometry.properties;
  for (const [a, b] of exclusiveGroups(schema.properties.Geometry)) {
    assert.equal(unitOf(geometry[a]), unitOf(geometry[b]), `both spellings of ${a} have one unit`);
    assert.deepEqual(itemLabels(geometry[a], 2), itemLabels(geometry[b], 2), `both spellings of ${a} name their items`);
  }
  assert.equal(unitOf(schema.properties.Wavelength), "Å");
  assert.equal(unitOf(schema.properties.Masks.items.properties.qStart), "nm⁻¹");
  assert.deepEqual(itemLabels(geometry.BeamCenter, 2), ["vertical", "horizontal"]);
  assert.deepEqual(itemLabels(geometry.PixelSizeMicroM, 2), ["vertical", "horizontal"]);
  assert.equal(itemLabels(geometry.PixelSizeMicroM, 1), null, "one pixel size: square, no names");
  assert.equal(unitOf({ "x-unit": "keV" }), "keV");
  assert.equal(unitOf({}), null, "no table behind the schema");
  assert.equal(itemLabels({}, 2), null);
  assert.deepEqual(itemLabels({ "x-itemLabels": ["a", "b"] }, 2), ["a", "b"]);
});

test("typed values and their messages", () => {
  const distance = schema.properties.Geometry.properties.DedectorDistanceMM;
  assert.deepEqual(parseValue(distance, " 1031.5 "), { value: 1031.5, error: null });
  assert.deepEqual(parseValue(distance, "-5"), { value: -5, error: "must be > 0" });
  assert.deepEqual(parseValue(distance, "abc"), { value: "abc", error: '"abc" is not a number' });
  assert.deepEqual(parseValue(distance, ""), { value: "", error: "a number is required" });
  const over = schema.properties.Masks.items.properties.Oversampling;
  assert.equal(parseValue(over, "2.5").error, "must be a whole number");
  assert.equal(parseValue(over, "16").error, "must be ≤ 15");
  assert.equal(parseValue(over, "0").error, "must be ≥ 1");
  assert.equal(parseValue(schema.properties.Geometry.properties.Tilt.properties.TiltAngleDeg, "90").error, "must be < 90");
  assert.deepEqual(parseValue({ type: "string", minLength: 2 }, "a"), { value: "a", error: "at least 2 characters" });
});

test("paths and problem lists", () => {
  assert.equal(toPath(["Masks", 0, "Phi-mode"]), "$.Masks[0].Phi-mode");
  assert.equal(parentPath("$.Masks[0].Phi-mode"), "$.Masks[0]");
  assert.equal(parentPath("$.Masks[0]"), "$.Masks");
  assert.equal(parentPath("$.Masks"), "$");
  assert.equal(parentPath("$"), "$");
  const server = groupProblems([
    { path: "$.Geometry", message: "exactly one of DedectorDistanceMM or DetectorDistanceMM" },
    { path: "$.Wavelength", message: "bad value -1: expected > 0" },
    { path: "$.Geometry", message: "exactly one of Imagesize or ImageSize" },
  ]);
  assert.deepEqual(server["$.Geometry"].length, 2);
  const list = problemList(server, { "$.Wavelength": "must be > 0" });
  assert.deepEqual(list, [
    ["$.Geometry", "exactly one of DedectorDistanceMM or DetectorDistanceMM; exactly one of Imagesize or ImageSize"],
    ["$.Wavelength", "must be > 0"],
  ]);
  assert.equal(slotText("$.Geometry", "$.Geometry.Tilt.X", "unknown"), "$.Geometry.Tilt.X: unknown");
  assert.equal(slotText("$.Wavelength", "$.Wavelength", "must be > 0"), "must be > 0");
});
