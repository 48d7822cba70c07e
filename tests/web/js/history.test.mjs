// The History tab's merge of incremental `plotdata` answers (static/history.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { countText, dirOf, dummySummary, hasSubtracted, historyDirs, historyRows, mergeHistory, newHistory,
  rejectedSummary }
  from "../../../src/saxsdog/server/static/history.js";

function answer(rows, until, processed) {
  const h = { path: [], frame: [], time: [], processed: [], I0: [], I1: [], I2: [], invariant: [],
    correlation_length: [], error: [] };
  for (const r of rows) {
    h.path.push(r.path); h.frame.push(r.frame ?? 0); h.time.push(r.time); h.processed.push(r.time + 1);
    h.I0.push(r.I0 ?? 1); h.I1.push(1); h.I2.push(1); h.invariant.push(2); h.correlation_length.push(3);
    h.error.push(r.error ?? null);
  }
  return { history: h, until, stat: { "images processed": processed } };
}

test("answers merge by image and frame; a re-processed image replaces its row", () => {
  const h = newHistory("t0");
  assert.equal(mergeHistory(h, answer([{ path: "run/a.tif", time: 2 }, { path: "run/b.tif", time: 1 }], 10.5, 2)), 2);
  assert.equal(h.until, 10.5);
  assert.equal(h.lastCount, 2);
  mergeHistory(h, answer([{ path: "run/a.tif", time: 2, I0: 7 }, { path: "run/s.h5", frame: 3, time: 3 }], 11, 3));
  assert.equal(h.rows.size, 3);
  assert.equal(h.rows.get("run/a.tif#0").I0, 7);
  mergeHistory(h, answer([], 0, 3));
  assert.equal(h.until, 11, "an empty answer keeps the position");
  assert.deepEqual(historyRows(h).map(r => r.path), ["run/b.tif", "run/a.tif", "run/s.h5"]);
});

test("rows with errors are not drawn; directories filter", () => {
  const h = newHistory();
  mergeHistory(h, answer([{ path: "a/x.tif", time: 1 }, { path: "b/y.tif", time: 2 }, { path: "z.tif", time: 3 },
    { path: "a/bad.tif", time: 4, error: "truncated" }], 5, 3));
  assert.deepEqual(historyRows(h, "a").map(r => r.path), ["a/x.tif"]);
  assert.deepEqual(historyRows(h).length, 3);
  assert.deepEqual(historyDirs(h), [".", "a", "b"]);
  assert.equal(dirOf("z.tif"), ".");
  assert.equal(dirOf("a/b/c.tif"), "a/b");
});

test("sixty images in three answers: all sixty", () => {
  const h = newHistory();
  for (let part = 0; part < 3; part++) {
    const rows = Array.from({ length: 20 }, (_, i) => ({ path: `run/img_${part * 20 + i}.tif`, time: part * 20 + i }));
    mergeHistory(h, answer(rows, 100 + part, (part + 1) * 20));
  }
  assert.equal(historyRows(h).length, 60);
  assert.equal(h.lastCount, 60);
});

test("the dummy-pixel count per frame is kept when the server sends it", () => {
  const h = newHistory();
  const a = answer([{ path: "run/a.tif", time: 1 }, { path: "run/b.tif", time: 2 }, { path: "run/c.tif", time: 3 }], 5, 3);
  a.history.dummy_pixels = [73671, 0, 73680];
  mergeHistory(h, a);
  const rows = historyRows(h);
  assert.deepEqual(rows.map(r => r.dummies), [73671, 0, 73680]);
  assert.deepEqual(dummySummary(rows), { min: 0, max: 73680, frames: 2 });
  assert.match(countText(rows), /^3 image\(s\) · 0.73,680 dummy pixels per frame$/);
  assert.match(countText(rows.slice(0, 1), "run"), /^1 image\(s\) in run · 73,671 dummy pixel\(s\) per frame$/);
});

test("an answer without the dummy column (an older server) has no count", () => {
  const h = newHistory();
  mergeHistory(h, answer([{ path: "run/a.tif", time: 1 }], 5, 1));
  assert.equal(historyRows(h)[0].dummies, null);
  assert.equal(dummySummary(historyRows(h)), null);
  assert.equal(countText(historyRows(h)), "1 image(s)");
});

test("sigma clipping's rejected-pixel count per frame is kept and summed up in the count line", () => {
  const h = newHistory();
  const a = answer([{ path: "run/a.tif", time: 1 }, { path: "run/b.tif", time: 2 }], 5, 2);
  a.history.dummy_pixels = [73671, 73671];
  a.history.rejected_pixels = [12, 40];
  mergeHistory(h, a);
  const rows = historyRows(h);
  assert.deepEqual(rows.map(r => r.rejected), [12, 40]);
  assert.deepEqual(rejectedSummary(rows), { min: 12, max: 40, frames: 2 });
  assert.match(countText(rows), /73,671 dummy pixel\(s\) per frame · 12–40 pixel\(s\) rejected by sigma clipping per frame$/);
  // the counts are not offered as classifier values
  assert.deepEqual(Object.keys(rows[0].values), []);
});

test("without sigma clipping there is no rejected count (the server sends nulls)", () => {
  const h = newHistory();
  const a = answer([{ path: "run/a.tif", time: 1 }], 5, 1);
  a.history.rejected_pixels = [null];
  mergeHistory(h, a);
  assert.equal(historyRows(h)[0].rejected, null);
  assert.equal(rejectedSummary(historyRows(h)), null);
  assert.equal(countText(historyRows(h)), "1 image(s)");
});

test("the background-subtracted curve's parameters are kept for the dashed traces", () => {
  const h = newHistory();
  const a = answer([{ path: "run/a.tif", time: 1 }, { path: "run/b.tif", time: 2 }], 5, 2);
  Object.assign(a.history, { I0_sub: [0.5, 0.25], I1_sub: [1, 1], I2_sub: [1, 1], invariant_sub: [1.5, 1.25],
    correlation_length_sub: [2.5, 2.25] });
  mergeHistory(h, a);
  const rows = historyRows(h);
  assert.ok(hasSubtracted(rows));
  assert.deepEqual(rows.map(r => r.sub), [{ I0: 0.5, invariant: 1.5, corr: 2.5 }, { I0: 0.25, invariant: 1.25, corr: 2.25 }]);
  assert.deepEqual(Object.keys(rows[0].values), []);
  const plain = newHistory();
  mergeHistory(plain, answer([{ path: "run/a.tif", time: 1 }], 5, 1));
  assert.ok(!hasSubtracted(historyRows(plain)));
});
