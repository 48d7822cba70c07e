// The Plots tab's cake image (static/cake.js): the heatmap of a result's cake preview.
import assert from "node:assert/strict";
import { test } from "node:test";

import { cakeFigure, continuousChi } from "../../../src/saxsdog/server/static/cake.js";

const graph = {
  kind: "Cake", conf: { Name: "map" }, columnLabels: ["Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)"],
  cake: { shape: [360, 1000], chi: [-90, 90], radial: [0.1, 0.2, 0.3], unit: "q_nm^-1",
    z: [[1, 10, null], [100, 0, 1000]] },
};

test("cake heatmap: axes, labels, gaps", () => {
  const { trace, layout } = cakeFigure(graph);
  assert.equal(trace.type, "heatmap");
  assert.deepEqual(trace.x, [0.1, 0.2, 0.3]);
  assert.deepEqual(trace.y, [-90, 90]);
  assert.deepEqual(trace.z, [[1, 10, null], [100, 0, 1000]]);
  assert.equal(layout.xaxis.title.text, "Scattering Vector q [nm⁻¹]");
  assert.match(layout.title.text, /360 × 1000 \(map\)/);
  assert.match(layout.yaxis.title.text, /clockwise/);
  assert.equal(layout.yaxis.autorange, "reversed");  // χ grows downwards, as on the image
});

test("cake heatmap: log scale leaves out what a log cannot show", () => {
  const { trace } = cakeFigure(graph, true);
  assert.deepEqual(trace.z, [[0, 1, null], [2, null, 3]]);
});

test("cake heatmap: a wrap-around sector keeps its rows in order", () => {
  // AzimuthRange [170, -170]: the χ centres wrap through 180° (pyFAI's range); the image's axis runs on
  assert.deepEqual(continuousChi([172.5, 177.5, -177.5, -172.5]), [172.5, 177.5, 182.5, 187.5]);
  assert.deepEqual(continuousChi([-90, 90]), [-90, 90]);
  const { trace } = cakeFigure({ ...graph, cake: { ...graph.cake, chi: [175, -175] } });
  assert.deepEqual(trace.y, [175, 185]);
});
