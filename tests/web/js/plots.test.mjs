// The Plots tab's pure logic (static/plots.js): the unit on the axis, the subtracted trace, the dummy count.
import assert from "node:assert/strict";
import { test } from "node:test";

import { buildTraces, COLORS, dummyCount, graphName, integratorIndex, intensityLabel, isSubtracted,
  paramText, rejectedCount }
  from "../../../src/saxsdog/server/static/plots.js";

const q = [0.1, 0.2, 0.3, 0.4];
const main = { kind: "Radial", conf: { Name: "", suffix: "" }, unit: "1/cm/sr", dummy_pixels: 73671,
  columnLabels: ["Scattering Vector  q [$nm^{-1}$]", "Intensity (1/cm/sr)", "Error Margin"],
  array: [q, [4, 3, 0, 1], [0.1, 0.1, 0, 0.1]] };
const second = { kind: "Radial", conf: { Name: "coarse", suffix: "_cR1" }, unit: "1/cm/sr",
  columnLabels: ["q", "Intensity (1/cm/sr)", "Error Margin"], array: [q, [5, 4, 3, 2], [0.1, 0.1, 0.1, 0.1]] };
const sub = { kind: "Radial", conf: { Name: "", suffix: "_sub", subtracted: true, of: 0 }, unit: "1/cm/sr",
  columnLabels: ["q", "Intensity (1/cm/sr)", "Error Margin"], array: [q, [2, -1, 0, 0.5], [0.2, 0.2, 0, 0.2]] };

test("the intensity axis shows the curve's unit; the original's label without one", () => {
  assert.equal(intensityLabel(main), "Intensity (1/cm/sr)");
  assert.equal(intensityLabel({ columnLabels: ["q", "Intensity (Count/Pixel)"] }), "Intensity (Count/Pixel)");
  assert.equal(intensityLabel({}), "Intensity (counts/pixel)");
  assert.equal(buildTraces([main]).ylabel, "Intensity (1/cm/sr)");
  assert.equal(buildTraces([main]).xlabel, "Scattering Vector q [nm⁻¹]");
});

test("a subtracted curve is a second, dashed trace in its integrator's colour", () => {
  assert.equal(isSubtracted(sub), true);
  assert.equal(isSubtracted(main), false);
  assert.equal(integratorIndex(sub, 2), 0);
  assert.equal(integratorIndex(second, 1), 1);
  assert.equal(graphName(sub, 2), "Radial 0 − background");
  assert.equal(graphName(second, 1), "Radial 1 (coarse)");
  const { traces } = buildTraces([main, second, sub], { logy: true, bandP: false });
  const lines = traces.filter(t => t.name && t.legendgroup && !t.fill);
  assert.deepEqual(lines.map(t => t.name), ["Radial 0", "Radial 1 (coarse)", "Radial 0 − background"]);
  assert.equal(lines[2].line.dash, "dash");
  assert.equal(lines[0].line.dash, undefined);
  assert.equal(lines[2].line.color, COLORS[0]);
  assert.equal(lines[1].line.color, COLORS[1]);
  // a log axis leaves out what it cannot show (the empty bin, the negative difference)
  assert.deepEqual(lines[0].x, [0.1, 0.2, 0.4]);
  assert.deepEqual(lines[2].x, [0.1, 0.4]);
  const linear = buildTraces([main, sub], { logy: false, bandP: true });
  assert.equal(linear.traces.length, 6, "two bands and a line per curve");
  assert.deepEqual(linear.traces[5].y, [2, -1, 0, 0.5]);
});

test("the dummy-pixel count comes from the first graph, else from the parameters", () => {
  assert.equal(dummyCount({ graphs: [main] }), 73671);
  assert.equal(dummyCount({ graphs: [second], IntegralParameters: { R0: { I0: 1, dummy_pixels: 12 } } }), 12);
  assert.equal(dummyCount({ graphs: [second], IntegralParameters: { R0: { I0: 1 } } }), null);
  assert.equal(dummyCount(null), null);
});

test("sigma clipping's rejected count comes from the first graph, else from the parameters; null without clipping", () => {
  assert.equal(rejectedCount({ graphs: [{ ...main, rejected_pixels: 37 }] }), 37);
  assert.equal(rejectedCount({ graphs: [second], IntegralParameters: { R0: { I0: 1, rejected_pixels: 0 } } }), 0);
  assert.equal(rejectedCount({ graphs: [main], IntegralParameters: { R0: { I0: 1, dummy_pixels: 3 } } }), null);
  assert.equal(rejectedCount(null), null);
});

test("pixel counts in the parameters' table are whole numbers, not rounded to four digits", () => {
  assert.equal(paramText("dummy_pixels", 73671), (73671).toLocaleString());
  assert.notEqual(paramText("dummy_pixels", 73671), "73670");
  assert.equal(paramText("rejected_pixels", 0), "0");
  assert.equal(paramText("I0", 36.8123), "36.81");
  assert.equal(paramText("rejected_pixels", undefined), "–");
});
