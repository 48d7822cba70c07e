// The History tab: integral parameters (and, with a Background, those of the subtracted curve),
// the dummy-pixel count and sigma clipping's rejected-pixel count of every image of the queue,
// fetched incrementally with `plotdata {since}` and merged by image (a re-processed image
// replaces its row).

import { classifierKeys, rowValues, scanGrid } from "./alarms.js";
import { command } from "./api.js";
import { $, $$, el } from "./dom.js";
import { COLORS, plotConf } from "./plots.js";
import { S } from "./state.js";

/** A new, empty history for the queue started at `key`. */
export function newHistory(key = null) {
  return { key, rows: new Map(), until: 0, lastCount: -1 };
}

/**
 * Merge one `plotdata` answer's `data` into `h`; returns how many rows it brought.
 *
 * Rows are keyed by path and frame; `h.until` moves on to the answer's `until`, and
 * `h.lastCount` to the server's count of processed images.
 */
export function mergeHistory(h, data) {
  const d = data.history;
  for (let i = 0; i < d.path.length; i++) {
    h.rows.set(d.path[i] + "#" + d.frame[i], {
      path: d.path[i], frame: d.frame[i], time: d.time[i], processed: d.processed[i],
      I0: d.I0[i], I2: d.I2[i], invariant: d.invariant[i], corr: d.correlation_length[i], error: d.error[i],
      ...rowValues(d, i),  // the classifiers' values and the frame's alarm text
    });
    const row = h.rows.get(d.path[i] + "#" + d.frame[i]);
    // pixels excluded as dummies in this frame (servers before issue 13 do not send the column)
    row.dummies = d.dummy_pixels ? d.dummy_pixels[i] ?? null : null;
    // pixel entries sigma clipping rejected (null without Corrections.SigmaClip)
    row.rejected = d.rejected_pixels ? d.rejected_pixels[i] ?? null : null;
    // the background-subtracted curve's parameters (only with a Background)
    row.sub = d.I0_sub ? { I0: d.I0_sub[i] ?? null, invariant: d.invariant_sub ? d.invariant_sub[i] ?? null : null,
      corr: d.correlation_length_sub ? d.correlation_length_sub[i] ?? null : null } : null;
  }
  h.until = data.until || h.until;
  h.lastCount = data.stat ? data.stat["images processed"] : h.rows.size;
  return d.path.length;
}

export function dirOf(path) {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : path.slice(0, i);
}

/** The rows without errors (of directory `dir`, all for ""), in image-time order. */
export function historyRows(h, dir = "") {
  const rows = [...h.rows.values()].filter(r => !r.error && (!dir || dirOf(r.path) === dir));
  rows.sort((a, b) => (a.time ?? a.processed ?? 0) - (b.time ?? b.processed ?? 0) || (a.path < b.path ? -1 : 1));
  return rows;
}

/** The counts `rows[i][key]` (`dummies`, `rejected`): `{ min, max, frames }` (frames with any), or null when none is known. */
export function countSummary(rows, key) {
  const counts = rows.map(r => r[key]).filter(v => Number.isFinite(v));
  if (!counts.length) return null;
  return { min: Math.min(...counts), max: Math.max(...counts), frames: counts.filter(v => v > 0).length };
}

/** The dummy-pixel counts of `rows`: `{ min, max, frames }` (frames with any), or null when none is known. */
export function dummySummary(rows) {
  return countSummary(rows, "dummies");
}

/** Sigma clipping's rejected-pixel counts of `rows`, as {@link dummySummary}; null without clipping. */
export function rejectedSummary(rows) {
  return countSummary(rows, "rejected");
}

/** Whether some row has the background-subtracted curve's parameters. */
export function hasSubtracted(rows) {
  return rows.some(r => r.sub && Number.isFinite(r.sub.I0));
}

function rangeText(s, what) {
  return s.min === s.max ? ` · ${s.min.toLocaleString()} ${what} per frame`
    : ` · ${s.min.toLocaleString()}–${s.max.toLocaleString()} ${what} per frame`;
}

/** The count line of the tab: images (of a directory) and, when known, the dummy-pixel and rejected-pixel ranges. */
export function countText(rows, dir = "") {
  let text = `${rows.length} image(s)` + (dir ? ` in ${dir}` : "");
  const d = dummySummary(rows);
  if (d) text += d.min === d.max ? ` · ${d.min.toLocaleString()} dummy pixel(s) per frame`
    : ` · ${d.min.toLocaleString()}–${d.max.toLocaleString()} dummy pixels per frame`;
  const r = rejectedSummary(rows);
  if (r) text += rangeText(r, "pixel(s) rejected by sigma clipping");
  return text;
}

export function historyDirs(h) {
  const dirs = new Set();
  for (const r of h.rows.values()) dirs.add(dirOf(r.path));
  return [...dirs].sort();
}

// ------------------------------------------------------------------ the tab

export let history = newHistory();
let lastFetch = 0;
let pendingTimer = null;

export function resetHistory(key) {
  history = newHistory(key);
  S.statSamples = S.statSamples.slice(-1);
  if (S.activeTab === "history") drawHistory();
}

/**
 * Fetch what is new (at most once a second unless `force`).  One request at a time: while one
 * is on its way, later calls share it; a request that times out is simply retried later.
 */
export async function refreshHistory(force = false) {
  const now = Date.now();
  if (!force && now - lastFetch < 1000) {
    if (pendingTimer === null) pendingTimer = setTimeout(() => { pendingTimer = null; refreshHistory(); }, 1000 - (now - lastFetch));
    return;
  }
  lastFetch = now;
  const h = history;
  try {
    const r = await command("plotdata", h.until ? { since: h.until } : undefined,
      undefined, { background: true, key: "plotdata" });
    if (r.result === "Error" || h !== history) return;
    mergeHistory(h, r.data);
    updateDirChoices();
    if (S.activeTab === "history") drawHistory();
    else $("#hist-count").textContent = `${h.rows.size} image(s)`;
  } catch (e) { /* the connection badge tells; the next statistics message asks again */ }
}

function updateDirChoices() {
  const sel = $("#hist-dir");
  const have = new Set($$("option", sel).map(o => o.value));
  for (const d of historyDirs(history)) if (!have.has(d)) sel.append(el("option", { value: d, text: d }));
}

/** A plot div made after `after` the first time it is needed (the counts' plots). */
function extraPlot(id, after) {
  if (!document.getElementById(id)) $("#" + after).after(el("div", { id, class: "plot" }));
  return id;
}

/** The plot of the dummy-pixel counts, made below the others the first time a count is known. */
function dummyPlot() {
  return extraPlot("hist-dummies", "hist-corr");
}

/** The plot of sigma clipping's rejected-pixel counts, after the dummy-pixel plot. */
function rejectedPlot() {
  return extraPlot("hist-rejected", document.getElementById("hist-dummies") ? "hist-dummies" : "hist-corr");
}

export function drawProgress() {
  if (!window.Plotly) return;
  const rows = [...history.rows.values()].filter(r => r.processed).sort((a, b) => a.processed - b.processed);
  const t0 = rows.length ? rows[0].processed : (S.statSamples[0] ? S.statSamples[0].t : 0);
  const samples = S.statSamples.filter(s => s.t >= t0 - 1);
  Plotly.react("hist-progress", [
    { x: rows.map(r => r.processed - t0), y: rows.map((_, i) => i + 1), mode: "lines", name: "images processed",
      line: { color: COLORS[0] } },
    { x: samples.map(s => s.t - t0), y: samples.map(s => s.fps), mode: "lines", name: "frames/s", yaxis: "y2",
      line: { color: COLORS[1], dash: "dot" } },
  ], {
    title: { text: "Progress", font: { size: 14 } }, margin: { l: 60, r: 60, t: 36, b: 44 },
    xaxis: { title: { text: "seconds since the first image" } },
    yaxis: { title: { text: "images" }, rangemode: "tozero" },
    yaxis2: { title: { text: "frames/s" }, overlaying: "y", side: "right", rangemode: "tozero" },
    legend: { x: 0, y: 1.0, bgcolor: "rgba(255,255,255,0.6)" }, uirevision: "p",
  }, plotConf());
}

export function drawHistory() {
  const dir = $("#hist-dir").value;
  const rows = historyRows(history, dir);
  $("#hist-count").textContent = countText(rows, dir);
  if (!window.Plotly) return;
  drawProgress();
  const byIndex = $("#hist-x").value === "index";
  const x = byIndex ? rows.map((_, i) => i) : rows.map(r => r.time !== null ? new Date(r.time * 1000) : null);
  const text = rows.map(r => r.path + (r.frame ? "#" + r.frame : ""));
  const subtracted = hasSubtracted(rows);
  const one = (div, key, title, color, ytitle, withSub = false) => {
    const traces = [{
      x, y: rows.map(r => r[key]), text, mode: "markers+lines", marker: { size: 4, color }, line: { width: 1, color },
      hovertemplate: "%{text}<br>%{y}<extra></extra>", name: withSub ? "curve" : key,
    }];
    // the background-subtracted curve's value, dashed as in the Plots tab
    if (withSub) traces.push({
      x, y: rows.map(r => (r.sub ? r.sub[key] : null)), text, mode: "markers+lines", name: "− background",
      marker: { size: 4, color }, line: { width: 1, color, dash: "dash" }, hovertemplate: "%{text}<br>%{y} (− background)<extra></extra>",
    });
    Plotly.react(div, traces, {
      title: { text: title, font: { size: 14 } }, margin: { l: 70, r: 20, t: 36, b: 44 },
      xaxis: { title: { text: byIndex ? "image number" : "image time" }, type: byIndex ? "linear" : "date" },
      yaxis: { title: { text: ytitle }, exponentformat: "power" }, uirevision: div, showlegend: withSub,
      legend: { x: 1, xanchor: "right", y: 1, bgcolor: "rgba(255,255,255,0.6)" },
    }, plotConf());
  };
  if (dummySummary(rows)) one(dummyPlot(), "dummies", "Dummy pixels per frame", COLORS[1], "pixels excluded");
  if (rejectedSummary(rows)) one(rejectedPlot(), "rejected", "Pixels rejected by sigma clipping per frame", COLORS[4],
    "pixel entries rejected");
  one("hist-i0", "I0", "Integral intensity I0", COLORS[0], "I0", subtracted);
  one("hist-i2", "invariant", "Invariant I2", COLORS[2], "I2", subtracted);
  one("hist-corr", "corr", "Correlation length", COLORS[3], "π·I1/I2 [nm]", subtracted);
  drawClassifier(rows, x, text, byIndex);
}

/** The chosen classifier's values, frames in alarm highlighted. */
function drawClassifier(rows, x, text, byIndex) {
  const sel = $("#hist-classifier");
  if (!sel) return;
  const keys = classifierKeys(rows);
  const have = $$("option", sel).map(o => o.value);
  for (const k of keys) if (!have.includes(k)) sel.append(el("option", { value: k, text: k }));
  const key = sel.value || keys[0];
  const div = $("#hist-classifier-plot");
  div.hidden = !key;
  drawScanMap(rows, key);
  if (!key) return;
  const alarm = rows.map(r => !!r.alarm);
  Plotly.react("hist-classifier-plot", [{
    x, y: rows.map(r => r.values[key] ?? null), text: rows.map((r, i) => text[i] + (r.alarm ? "<br>⚠ " + r.alarm : "")),
    mode: "markers+lines", line: { width: 1, color: COLORS[1] },
    marker: { size: alarm.map(a => a ? 9 : 4), color: alarm.map(a => a ? "#c62828" : COLORS[1]) },
    hovertemplate: "%{text}<br>%{y}<extra></extra>",
  }], {
    title: { text: key, font: { size: 14 } }, margin: { l: 70, r: 20, t: 36, b: 44 },
    xaxis: { title: { text: byIndex ? "image number" : "image time" }, type: byIndex ? "linear" : "date" },
    uirevision: "hist-classifier",
  }, plotConf());
}

/** The chosen classifier as a 2-D map of the raster scan (when the calibration has a Scan block). */
function drawScanMap(rows, key) {
  const div = $("#hist-scan-map");
  if (!div) return;
  const grid = key ? scanGrid(rows, key) : null;
  div.hidden = !grid;
  if (!grid) return;
  const marks = [];
  grid.alarm.forEach((line, r) => line.forEach((a, c) => { if (a) marks.push([c, r]); }));
  Plotly.react("hist-scan-map", [
    { z: grid.z, type: "heatmap", colorscale: "Viridis", colorbar: { title: { text: key } },
      hovertemplate: "row %{y}, column %{x}<br>%{z}<extra></extra>" },
    { x: marks.map(m => m[0]), y: marks.map(m => m[1]), mode: "markers", name: "alarm", showlegend: false,
      marker: { symbol: "x", size: 10, color: "#c62828" }, hoverinfo: "skip" },
  ], {
    title: { text: `${key}: scan map (${grid.rows} × ${grid.cols})`, font: { size: 14 } },
    margin: { l: 60, r: 20, t: 36, b: 44 },
    xaxis: { title: { text: "column" } }, yaxis: { title: { text: "row" }, autorange: "reversed", scaleanchor: "x" },
    uirevision: "hist-scan-map",
  }, plotConf());
}
