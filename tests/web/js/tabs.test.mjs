// Pure helpers of the Server, Consolidate and Plots tabs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { mergeCell, mergeLocalPaths, pickLocalFile } from "../../../src/saxsdog/server/static/merge.js";
import { fmtNum, plainLabel } from "../../../src/saxsdog/server/static/plots.js";
import { statRows, summarizeFiles } from "../../../src/saxsdog/server/static/server.js";

test("file list: counts, failures and the output folder", () => {
  const s = summarizeFiles({
    "run/a.tif": { state: "done", outputs: ["work/a.chi"], error: null },
    "run/b.tif": { state: "done", outputs: ["work/b.chi", "work/b_phi.chi"], error: null },
    "run/c.tif": { state: "failed", outputs: [], error: "not a 1043×981 image" },
    "run/d.tif": { state: "queued", outputs: [], error: null },
  });
  assert.deepEqual(s.counts, { done: 2, failed: 1, queued: 1 });
  assert.deepEqual(s.failed, [["run/c.tif", "failed", "not a 1043×981 image"]]);
  assert.deepEqual(s.outputFolders, ["work"]);
  assert.deepEqual(summarizeFiles({ "x.tif": { state: "done", outputs: ["x.chi"] } }).outputFolders, ["."]);
  assert.deepEqual(summarizeFiles({}).outputFolders, []);
});

test("queue table", () => {
  const rows = Object.fromEntries(statRows({ "images processed": 9, "frames per sec": 12.3456, "time interval": 4.6 }, true));
  assert.equal(rows.queue, "running");
  assert.equal(rows["images processed"], 9);
  assert.equal(rows["frames per second"], "12.3");
  assert.equal(rows["running for"], "5 s");
  assert.equal(rows.directory, "–");
});

test("merge: LocalPath files once each, matched by name or last component", () => {
  const conf = { LogDataTables: [{ Files: [{ LocalPath: "C:\\logs\\peak.log" }, { RemotePath: ["a"] }] },
    { Files: [{ LocalPath: "C:\\logs\\peak.log" }, { LocalPath: "/home/u/d.log" }] }, { Files: null }] };
  assert.deepEqual(mergeLocalPaths(conf), ["C:\\logs\\peak.log", "/home/u/d.log"]);
  assert.deepEqual(mergeLocalPaths(null), []);
  const files = [{ name: "peak.log" }, { name: "d.log" }];
  assert.equal(pickLocalFile("C:\\logs\\peak.log", files), files[0]);
  assert.equal(pickLocalFile("/home/u/d.log", files), files[1]);
  assert.equal(pickLocalFile("other.log", files), null);
  assert.equal(mergeCell(1391171212.3, true), "1391171212.300");
  assert.equal(mergeCell(1005, false), "1005");
  assert.equal(mergeCell(0.123456789, false), "0.123457");
  assert.equal(mergeCell(null, false), "");
  assert.equal(mergeCell("run/a.tif", false), "run/a.tif");
});

test("labels and numbers", () => {
  assert.equal(plainLabel("q [$nm^{-1}$]"), "q [nm⁻¹]");
  assert.equal(plainLabel("$\\chi$ [$\\deg$]"), "chi [°]");
  assert.equal(plainLabel("d [\\AA]"), "d [Å]");
  assert.equal(fmtNum(0.000123456), "1.235e-4");
  assert.equal(fmtNum(123456), "1.235e+5");
  assert.equal(fmtNum(3.14159), "3.142");
  assert.equal(fmtNum(null), "–");
});
