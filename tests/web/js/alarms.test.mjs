// Classifier columns and the alarm banner (static/alarms.js) and their merge into the history.
import assert from "node:assert/strict";
import { test } from "node:test";

import { alarmBanner, classifierKeys, rowValues } from "../../../src/saxsdog/server/static/alarms.js";
import { historyRows, mergeHistory, newHistory } from "../../../src/saxsdog/server/static/history.js";

test("no alarm, no banner; otherwise the count and the latest frame's alarms", () => {
  assert.equal(alarmBanner({ alarms: 0 }), null);
  assert.equal(alarmBanner({}), null);
  assert.equal(alarmBanner({ alarms: 1, "latest alarm": { name: "run/a.tif", alarms: ["Guinier.Rg=7.1 above 5"] } }),
    "⚠ 1 frame in alarm: run/a.tif: Guinier.Rg=7.1 above 5");
  assert.equal(alarmBanner({ alarms: 3 }), "⚠ 3 frames in alarm");
});

test("classifier columns travel with their row; only numeric ones are offered for plotting", () => {
  const d = { path: ["a", "b"], frame: [0, 0], time: [1, 2], processed: [1, 2], I0: [1, 1], I1: [1, 1], I2: [1, 1],
    invariant: [1, 1], correlation_length: [1, 1], error: [null, null], alarms: ["", "Guinier.Rg=7 above 5"],
    "Guinier.Rg": [3.1, 7.0], "Guinier.status": ["ok", "ok"], "CorMap.P": [null, 0.5] };
  assert.deepEqual(rowValues(d, 1), { values: { "Guinier.Rg": 7.0, "Guinier.status": "ok", "CorMap.P": 0.5 },
    alarm: "Guinier.Rg=7 above 5" });
  const h = newHistory("t");
  mergeHistory(h, { history: d, until: 3, stat: { "images processed": 2 } });
  const rows = historyRows(h);
  assert.equal(rows[1].alarm, "Guinier.Rg=7 above 5");
  assert.equal(rows[0].values["Guinier.Rg"], 3.1);
  assert.deepEqual(classifierKeys(rows), ["CorMap.P", "Guinier.Rg"]);
});

test("an answer of a server without classifiers still merges", () => {
  const h = newHistory("t");
  mergeHistory(h, { history: { path: ["a"], frame: [0], time: [1], processed: [1], I0: [2], I1: [1], I2: [1],
    invariant: [1], correlation_length: [1], error: [null] }, until: 1 });
  assert.deepEqual(historyRows(h)[0].values, {});
  assert.equal(historyRows(h)[0].alarm, "");
});

test("a classifier as a scan map: each frame at its Scan.row and Scan.column", async () => {
  const { scanGrid } = await import("../../../src/saxsdog/server/static/alarms.js");
  const row = (r, c, v, alarm = "") => ({ values: { "Scan.row": r, "Scan.column": c, "ROI.sum": v }, alarm });
  assert.equal(scanGrid([{ values: { "ROI.sum": 1 } }], "ROI.sum"), null);  // no Scan block: no map
  const g = scanGrid([row(0, 0, 1), row(0, 2, 3), row(1, 1, 5, "ROI.sum=5 above 4"), { values: { "ROI.sum": 9 } }],
    "ROI.sum");
  assert.equal(g.rows, 2);
  assert.equal(g.cols, 3);
  assert.deepEqual(g.z, [[1, null, 3], [null, 5, null]]);
  assert.deepEqual(g.alarm, [[false, false, false], [false, true, false]]);
  assert.deepEqual(scanGrid([row(0, 0, "text")], "ROI.sum").z, [[null]]);
});

test("the Plots tab lists the latest frame's classifier values beside the integral parameters", async () => {
  const { classifierTableRows } = await import("../../../src/saxsdog/server/static/alarms.js");
  const params = { R0: { I0: 1, I1: 2, I2: 3, invariant: 3, correlation_length: 4, dummy_pixels: 0,
    "Guinier.Rg": 3.9, "Guinier.status": "ok", alarms: "" },
  R1: { I0: 1, "Porod.exponent": -4, alarms: "Porod.exponent=-4 below 0" } };
  assert.deepEqual(classifierTableRows(params), [["R0", "Guinier.Rg", 3.9], ["R0", "Guinier.status", "ok"],
    ["R1", "Porod.exponent", -4], ["R1", "alarms", "Porod.exponent=-4 below 0"]]);
  assert.deepEqual(classifierTableRows(undefined), []);
});

test("the live averaging's line: kept and rejected frames of the latest groups", async () => {
  const { averagesText } = await import("../../../src/saxsdog/server/static/alarms.js");
  assert.equal(averagesText({}), null);
  assert.equal(averagesText({ averages: {} }), null);
  const stat = { averages: {
    frames_000000: { group: "frames_000000", kept: 17, rejected: 3, complete: true },
    frames_000020: { group: "frames_000020", kept: 2, rejected: 0, complete: false } } };
  assert.equal(averagesText(stat), "Averages (results/averages/): frames_000020: 2 kept, 0 rejected (so far) · "
    + "frames_000000: 17 kept, 3 rejected");
});
