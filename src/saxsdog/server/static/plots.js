// The Plots tab: the latest curve with its error bands, and number formatting shared by the tabs.

import { classifierTableRows } from "./alarms.js";
import { command } from "./api.js";
import { drawCakes } from "./cake.js";
import { $, el } from "./dom.js";
import { S } from "./state.js";

export const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

export function plotConf() { return { displaylogo: false, responsive: true }; }

export function hexToRgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

export function fmtTime(t) {
  if (t === null || t === undefined) return "–";
  return new Date(t * 1000).toLocaleString();
}

/** A number to `digits` significant digits (exponent form for very small and large ones). */
export function fmtNum(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toString();
}

/** Pixel counts of a frame's parameters: whole numbers, never rounded to significant digits. */
const COUNT_KEYS = new Set(["dummy_pixels", "rejected_pixels"]);

/** A parameter's table text: a count in full (73,671, not 73670), other values by {@link fmtNum}. */
export function paramText(key, v) {
  return COUNT_KEYS.has(key) && Number.isInteger(v) ? v.toLocaleString() : fmtNum(v);
}

/** A .chi column label in matplotlib mathtext (`q [$nm^{-1}$]`) as plain text (`q [nm⁻¹]`). */
export function plainLabel(text) {
  const sup = { "-": "⁻", "0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶", "7": "⁷", "8": "⁸", "9": "⁹" };
  return String(text)
    .replace(/\^\{([-0-9]+)\}/g, (_, d) => [...d].map(c => sup[c] || c).join(""))
    .replace(/\\AA/g, "Å").replace(/\\(circ|deg)/g, "°").replace(/\\([A-Za-z]+)/g, "$1")
    .replace(/[$]/g, "").replace(/\s+/g, " ").trim();
}

/** Whether a graph is a background-subtracted curve (it follows the integrators' graphs). */
export function isSubtracted(g) {
  return Boolean(g && g.conf && g.conf.subtracted);
}

/** The integrator a graph belongs to: its own index, or for a subtracted curve `conf.of`. */
export function integratorIndex(g, i) {
  return isSubtracted(g) && Number.isInteger(g.conf.of) ? g.conf.of : i;
}

export function graphName(g, i) {
  const conf = g.conf || {};
  const k = integratorIndex(g, i);
  return `${g.kind || "Radial"} ${k}` + (conf.Name ? ` (${conf.Name})` : "") + (isSubtracted(g) ? " − background" : "");
}

/** The intensity axis label of a graph: its `unit` when the server sends one, else its column label. */
export function intensityLabel(g) {
  if (g && g.unit) return `Intensity (${g.unit})`;
  if (g && g.columnLabels && g.columnLabels[1]) return plainLabel(g.columnLabels[1]);
  return "Intensity (counts/pixel)";
}

/** The frame's dummy-pixel count (first integrator), from its graph or its parameters; null if unknown. */
export function dummyCount(msg) {
  const g = msg && msg.graphs && msg.graphs[0];
  if (g && Number.isFinite(g.dummy_pixels)) return g.dummy_pixels;
  const first = msg && msg.IntegralParameters ? Object.values(msg.IntegralParameters)[0] : null;
  return first && Number.isFinite(first.dummy_pixels) ? first.dummy_pixels : null;
}

/** The frame's count of pixel entries sigma clipping rejected (first integrator); null without clipping. */
export function rejectedCount(msg) {
  const g = msg && msg.graphs && msg.graphs[0];
  if (g && Number.isFinite(g.rejected_pixels)) return g.rejected_pixels;
  const first = msg && msg.IntegralParameters ? Object.values(msg.IntegralParameters)[0] : null;
  return first && Number.isFinite(first.rejected_pixels) ? first.rejected_pixels : null;
}

/**
 * The Plotly traces of a result's graphs: per curve its error bands and its line; a
 * background-subtracted curve is drawn dashed in its integrator's colour.  Points a log axis
 * cannot show are left out (no gaps: the bands are filled polygons).
 */
export function buildTraces(graphs, { logx = false, logy = true, bandP = true, bandS = false } = {}) {
  const traces = [];
  let xlabel = "q [nm⁻¹]", ylabel = "Intensity (counts/pixel)";
  graphs.forEach((g, gi) => {
    const keep = g.array[0].map((q, k) => q !== null && g.array[1][k] !== null &&
      (!logx || q > 0) && (!logy || g.array[1][k] > 0));
    const [x, I, err, std] = g.array.map(col => col ? col.filter((_, k) => keep[k]) : col);
    const sub = isSubtracted(g);
    const group = "g" + gi;
    const color = COLORS[integratorIndex(g, gi) % COLORS.length];
    if (g.columnLabels && g.columnLabels[0]) xlabel = plainLabel(g.columnLabels[0]);
    if (!sub || gi === 0) ylabel = intensityLabel(g);
    const band = (e, alpha, what) => {
      if (!e) return;
      const lo = I.map((v, k) => { const d = e[k] ?? 0; return logy ? Math.max(v - d, v * 0.1) : v - d; });
      const hi = I.map((v, k) => v + (e[k] ?? 0));
      traces.push({ x, y: lo, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: group });
      traces.push({ x, y: hi, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: hexToRgba(color, alpha),
        name: `${what}`, hoverinfo: "skip", legendgroup: group, showlegend: false });
    };
    if (bandS) band(std, 0.15, "standard deviation");
    if (bandP) band(err, sub ? 0.2 : 0.35, "error");
    traces.push({ x, y: I, mode: "lines", name: graphName(g, gi),
      line: { color, width: 1.5, ...(sub ? { dash: "dash" } : {}) }, legendgroup: group });
  });
  return { traces, xlabel, ylabel };
}

export function onResult(msg) {
  S.latest = msg;
  if (S.activeTab === "plots") drawPlot();
  else updatePlotInfo();
}

/** Ask for the latest curve (when the page has none from the live connection). */
export async function refreshPlot() {
  try {
    const r = await command("plot", undefined, undefined, { background: true, key: "plot" });
    if (r.result === "Error" || !r.data.graphs || !r.data.graphs.length) return;
    if (S.latest && S.latest.filename === r.data.filename) return;
    S.latest = { type: "result", filename: r.data.filename, time: null, IntegralParameters: r.data.IntegralParameters,
      graphs: r.data.graphs };
    if (S.activeTab === "plots") drawPlot(); else updatePlotInfo();
  } catch (e) { /* the connection badge tells */ }
}

function updatePlotInfo() {
  const m = S.latest;
  if (!m) return;
  $("#plot-file").textContent = m.filename + (m.frame ? ` #${m.frame}` : "");
  $("#plot-time").textContent = (m.time ? "image time " + fmtTime(m.time) : "") +
    (m.processed_at ? ` · processed ${fmtTime(m.processed_at)}` : "");
  const dummies = dummyCount(m);
  if (dummies) $("#plot-time").textContent += ` · ${dummies.toLocaleString()} dummy pixel(s) excluded`;
  const rejected = rejectedCount(m);
  if (rejected !== null) $("#plot-time").textContent += ` · ${rejected.toLocaleString()} pixel(s) rejected by sigma clipping`;
  const params = m.IntegralParameters || {};
  const keys = ["I0", "I1", "I2", "correlation_length"];
  if (Object.values(params).some(p => p && p.dummy_pixels !== undefined)) keys.push("dummy_pixels");
  if (Object.values(params).some(p => p && p.rejected_pixels !== undefined)) keys.push("rejected_pixels");
  $("#plot-params").replaceChildren(
    el("tr", {}, el("th", { text: "integrator" }), keys.map(k => el("th", { text: k === "I2" ? "I2 (invariant)" : k.replace("_", " ") }))),
    ...Object.entries(params).map(([name, p]) => el("tr", {}, el("td", { text: name }),
      keys.map(k => el("td", { text: paramText(k, p && p[k]) })))));
  // the classifiers' values of this frame (Guinier.Rg, CorMap.P_adjusted, its alarms ...)
  const extra = classifierTableRows(params);
  const table = $("#plot-classifiers");
  if (!table) return;
  table.hidden = !extra.length;
  table.replaceChildren(
    el("tr", {}, el("th", { text: "integrator" }), el("th", { text: "classifier value" }), el("th", { text: "" })),
    ...extra.map(([name, k, v]) => el("tr", { class: k === "alarms" ? "alarm" : "" },
      el("td", { text: name }), el("td", { text: k }), el("td", { text: fmtNum(v) }))));
}

export function drawPlot() {
  const m = S.latest;
  if (!m || !window.Plotly) return;
  updatePlotInfo();
  const logx = $("#logx").checked, logy = $("#logy").checked;
  const bandP = $("#band-poisson").checked, bandS = $("#band-std").checked;
  const { traces, xlabel, ylabel } = buildTraces(m.graphs, { logx, logy, bandP, bandS });
  const layout = {
    margin: { l: 70, r: 20, t: 30, b: 50 },
    xaxis: { title: { text: xlabel }, type: logx ? "log" : "linear" },
    yaxis: { title: { text: ylabel }, type: logy ? "log" : "linear", exponentformat: "power" },
    legend: { x: 1, xanchor: "right", y: 1 },
    uirevision: `${logx}-${logy}`,
  };
  Plotly.react("plot-main", traces, layout, plotConf());
  drawCakes(m, logy);  // cake maps as small images below the curves
}
