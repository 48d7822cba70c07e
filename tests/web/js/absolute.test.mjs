// The Absolute scale panel's pure helpers.
import assert from "node:assert/strict";
import { test } from "node:test";

import { absoluteArgument, formatScale, latestCurveFile, withAbsoluteScale } from "../../../src/saxsdog/server/static/absolute.js";

test("latest curve: the newest entry's first curve output", () => {
  const files = {
    "run/a.tif": { state: "done", outputs: ["work/a.chi"] },
    "run/b.tif": { state: "done", outputs: ["work/b.png", "work/b.chi", "work/b_cp1.chi"] },
    "run/c.tif": { state: "failed", outputs: [] },
  };
  assert.equal(latestCurveFile(files), "work/b.chi");
  assert.equal(latestCurveFile({ "x.tif": { outputs: ["run.h5"] } }), "run.h5");
  assert.equal(latestCurveFile({}), null);
  assert.equal(latestCurveFile(undefined), null);
});

test("argument: water with temperature and q range", () => {
  assert.deepEqual(absoluteArgument({ curve: " work/w.chi ", standard: "water", temperature: "25", qMin: "0.1", qMax: "2" }).argument,
    { curve: "work/w.chi", standard: "water", temperature: 25, q_range: [0.1, 2] });
  assert.deepEqual(absoluteArgument({ curve: "w.chi", standard: "water", temperature: "" }).argument,
    { curve: "w.chi", standard: "water" });
});

test("argument: reference table text", () => {
  const made = absoluteArgument({ curve: "gc.chi", standard: "reference", reference: "0.1,1\n0.2,2\n" });
  assert.deepEqual(made.argument, { curve: "gc.chi", standard: "reference", reference: "0.1,1\n0.2,2\n" });
});

test("argument: errors name the field", () => {
  assert.match(absoluteArgument({ curve: "" }).error, /^Curve:/);
  assert.match(absoluteArgument({ curve: "w.chi", temperature: "120" }).error, /^Temperature: 120/);
  assert.match(absoluteArgument({ curve: "w.chi", standard: "reference" }).error, /^Reference table:/);
  assert.match(absoluteArgument({ curve: "w.chi", qMin: "2", qMax: "1" }).error, /^q range:/);
  assert.match(absoluteArgument({ curve: "w.chi", qMin: "0.1" }).error, /^q range:/);
});

test("the scale goes into Normalization, the rest untouched", () => {
  const cal = { Title: "t", Normalization: { ThicknessMM: 1 } };
  assert.deepEqual(withAbsoluteScale(cal, 0.5), { Title: "t", Normalization: { ThicknessMM: 1, AbsoluteScale: 0.5 } });
  assert.deepEqual(cal.Normalization, { ThicknessMM: 1 });
  assert.deepEqual(withAbsoluteScale({ Normalization: null }, 2), { Normalization: { AbsoluteScale: 2 } });
  assert.equal(formatScale(1.234567891e-4, 3.21e-7), "0.000123457 ± 3.2e-7");
});
