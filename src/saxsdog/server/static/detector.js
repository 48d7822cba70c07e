// The Detector tab: the live detector view (a frame in a log colour scale, zoom and pan, the mask
// over it, the pixel, value, q, 2θ and χ under the cursor), calibrant rings, the mask editor and
// calibrating from a calibrant image.  The pure parts live in geometry.js, colormap.js and
// maskeditor.js; this module only draws and wires.

import { command } from "./api.js";
import { renderForm, scheduleValidate, setCalibration } from "./calibration.js";
import { autoLimits, fitView, fmt, makeLut, panBy, pixelAt, renderRGBA, toImage, toScreen, unbin, zoomAt } from "./colormap.js";
import { $, el, readFile, say, toBase64 } from "./dom.js";
import { applyFit, geometryFromCalibration, pixelInfo, ringPoints, ringTwoTheta, withShape } from "./geometry.js";
import { MaskModel, countMasked, toNpy } from "./maskeditor.js";
import { S } from "./state.js";

const LUT = makeLut();
const RING_COLOR = "rgba(0, 230, 255, 0.9)";
const FIT_COLOR = "rgba(80, 255, 80, 0.95)";

/** The tab's state (also reachable from the console and tests as window.saxsdogLeash.detector). */
export const D = {
  frame: null,        // {path, frame, shape, binning, dataShape, data (Float32Array), min, max, metadata}
  full: null,         // Float32Array of the full-resolution values (binned frames: each block's value)
  view: null,
  model: null,        // MaskModel of the frame's shape
  tool: "pan",
  polygon: [],        // vertices [row, col] of the polygon being drawn
  drag: null,
  hover: null,        // continuous [row, col] under the cursor
  rings: null,        // {calibrant, d_spacings}
  fit: null,          // the pending calibrateimage answer
  imgCanvas: null,
  maskCanvas: null,
  loading: false,
  loadMs: null,       // how long the last frame took to arrive and be coloured
  lastFollow: 0,
};

function canvas() { return $("#det-canvas"); }

function geometry() {
  if (!D.frame) return null;
  try { return withShape(geometryFromCalibration(S.cal), D.frame.shape); } catch (e) { return { error: e.message }; }
}

// ------------------------------------------------------------------ frames

function decodeFloat32(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function b64Bytes(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** Fetch and show a frame: `image` relative to the base directory, or the queue's latest. */
export async function loadFrame(image, { quiet = false } = {}) {
  if (D.loading) return;
  D.loading = true;
  const t0 = performance.now();
  if (!quiet) say("#det-msg", "Loading the frame…");
  try {
    const arg = image ? { image } : {};
    const r = await command("detectorframe", arg, undefined, quiet ? { background: true, key: "detectorframe" } : {});
    if (r.result === "Error") { say("#det-msg", r.data.Error, "error"); return; }
    setFrame(r.data);
    D.loadMs = performance.now() - t0;  // request, decoding and colouring
    say("#det-msg", `${r.data.path}${r.data.nframes > 1 ? ` frame ${r.data.frame}` : ""}: ${r.data.shape[0]}×${r.data.shape[1]} pixels` +
      (r.data.binning > 1 ? `, shown binned ${r.data.binning}×${r.data.binning} (block maximum)` : "") +
      (r.data.negative ? `, ${r.data.negative} pixels without data (< 0)` : ""), "ok");
  } catch (e) {
    say("#det-msg", e.message, "error");
  } finally {
    D.loading = false;
  }
}

function setFrame(data) {
  const old = D.frame;
  const frame = { ...data, dataShape: data.data_shape, data: decodeFloat32(data.data) };
  D.frame = frame;
  D.full = unbin(frame.data, frame.dataShape, frame.binning, frame.shape);
  if (!D.model || D.model.shape[0] !== frame.shape[0] || D.model.shape[1] !== frame.shape[1]) {
    if (D.model) say("#mask-msg", `The frame is ${frame.shape[0]}×${frame.shape[1]}: a new, empty mask.`);
    D.model = new MaskModel(frame.shape);
    updateMaskCanvas();
  }
  if (!$("#det-min").value || !$("#det-max").value || !old) {
    const [lo, hi] = autoLimits(frame.data);
    $("#det-min").value = String(lo);
    $("#det-max").value = fmt(hi, 4);
  }
  renderImage();
  if (!old || old.shape[0] !== frame.shape[0] || old.shape[1] !== frame.shape[1] || !D.view) resetView();
  draw();
}

/** The frame's value at pixel (row, col) (of its block, when binned). */
function valueAt(row, col) {
  const f = D.frame;
  return f.data[Math.floor(row / f.binning) * f.dataShape[1] + Math.floor(col / f.binning)];
}

function renderImage() {
  const f = D.frame;
  if (!f) return;
  const lo = Number($("#det-min").value), hi = Number($("#det-max").value);
  const [h, w] = f.dataShape;
  if (!D.imgCanvas) D.imgCanvas = document.createElement("canvas");
  D.imgCanvas.width = w; D.imgCanvas.height = h;
  const ctx = D.imgCanvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  renderRGBA(f.data, Number.isFinite(lo) ? lo : 0, Number.isFinite(hi) ? hi : f.max, { log: $("#det-log").checked, lut: LUT, rgba: img.data });
  ctx.putImageData(img, 0, 0);
}

function updateMaskCanvas() {
  const m = D.model;
  if (!m) return;
  const [rows, cols] = m.shape;
  if (!D.maskCanvas) D.maskCanvas = document.createElement("canvas");
  D.maskCanvas.width = cols; D.maskCanvas.height = rows;
  const ctx = D.maskCanvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  const px = new Uint32Array(img.data.buffer);
  const red = new Uint32Array(Uint8ClampedArray.from([255, 40, 40, 120]).buffer)[0];
  for (let i = 0; i < m.mask.length; i++) if (m.mask[i]) px[i] = red;
  ctx.putImageData(img, 0, 0);
  $("#mask-count").textContent = `${countMasked(m.mask)} of ${m.mask.length} pixels masked`;
}

// ------------------------------------------------------------------ drawing

function sizeCanvas() {
  const c = canvas();
  const w = Math.max(200, Math.floor(c.parentElement.clientWidth));
  const h = Math.max(200, Math.min(Math.floor(window.innerHeight * 0.72), Math.round(w * 0.85)));
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; return true; }
  return false;
}

export function resetView() {
  if (!D.frame) return;
  sizeCanvas();
  const c = canvas();
  D.view = fitView(D.frame.shape[0], D.frame.shape[1], c.width, c.height);
  draw();
}

let drawPending = false;
export function draw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawNow(); });
}

function drawNow() {
  const c = canvas();
  const ctx = c.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, c.width, c.height);
  const f = D.frame;
  if (!f || !D.view) return;
  const v = D.view;
  ctx.setTransform(v.scale, 0, 0, v.scale, v.tx, v.ty);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(D.imgCanvas, 0, 0, f.shape[1], f.shape[0]);
  if (D.maskCanvas && $("#mask-show").checked) ctx.drawImage(D.maskCanvas, 0, 0);
  ctx.lineWidth = 1.5 / v.scale;
  const geo = geometry();
  if (D.rings && $("#det-rings").checked && geo && !geo.error) drawRings(ctx, geo, D.rings.d_spacings, RING_COLOR);
  if (D.fit) {
    try {
      const fg = withShape(geometryFromCalibration(applyFit(S.cal, D.fit.geometry)), f.shape);
      drawRings(ctx, fg, D.fit.rings.map(r => r.d_spacing), FIT_COLOR);
      ctx.fillStyle = "rgba(255, 255, 0, 0.9)";
      const p = D.fit.points, s = 2.5 / v.scale;
      for (let k = 0; k < p.row.length; k++) ctx.fillRect(p.col[k] - s / 2, p.row[k] - s / 2, s, s);
    } catch (e) { /* a fit without geometry is not drawn */ }
  }
  drawEditing(ctx, v);
}

function drawRings(ctx, geo, dSpacings, color) {
  ctx.strokeStyle = color;
  for (const d of dSpacings.slice(0, 40)) {
    const tth = ringTwoTheta(d, geo.wavelengthA);
    if (!(tth < Math.PI / 2)) continue;
    ctx.beginPath();
    let pen = false;
    for (const p of ringPoints(geo, tth, 720)) {
      if (p === null) { pen = false; continue; }
      if (pen) ctx.lineTo(p[1], p[0]); else { ctx.moveTo(p[1], p[0]); pen = true; }
    }
    ctx.stroke();
  }
}

function drawEditing(ctx, v) {
  ctx.strokeStyle = "#ffeb3b";
  ctx.setLineDash([6 / v.scale, 4 / v.scale]);
  const dr = D.drag;
  if (dr && dr.kind === "rect") {
    ctx.strokeRect(dr.p0[1], dr.p0[0], dr.p1[1] - dr.p0[1], dr.p1[0] - dr.p0[0]);
  } else if (dr && dr.kind === "circle") {
    ctx.beginPath();
    ctx.arc(dr.p0[1], dr.p0[0], Math.hypot(dr.p1[0] - dr.p0[0], dr.p1[1] - dr.p0[1]), 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (D.polygon.length) {
    ctx.beginPath();
    ctx.moveTo(D.polygon[0][1], D.polygon[0][0]);
    for (const p of D.polygon.slice(1)) ctx.lineTo(p[1], p[0]);
    if (D.hover) ctx.lineTo(D.hover[1], D.hover[0]);
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

// ------------------------------------------------------------------ cursor readout

function readout(row, col) {
  const box = $("#det-readout");
  const px = D.frame && pixelAt(D.frame.shape, row, col);
  if (!px) { box.dataset.row = ""; box.textContent = D.frame ? "outside the image" : "no frame shown"; return; }
  const [r, c] = px;
  const value = valueAt(r, c);
  const geo = geometry();
  const parts = [["row", r, String(r)], ["col", c, String(c)], ["value", value, value < 0 ? `${fmt(value)} (no data)` : fmt(value, 6)]];
  let note = "";
  if (geo && !geo.error && (geo.shape[0] !== D.frame.shape[0] || geo.shape[1] !== D.frame.shape[1])) {
    note = ` · the calibration's image size ${geo.shape[0]}×${geo.shape[1]} is not the frame's`;
  }
  if (geo && !geo.error) {
    const info = pixelInfo(geo, r, c);
    parts.push(["q", info.q, `${fmt(info.q, 5)} nm⁻¹`], ["tth", info.tth, `${fmt(info.tth, 5)}°`], ["chi", info.chi, `${fmt(info.chi, 4)}°`]);
  } else {
    note = ` · no geometry: ${geo ? geo.error : ""}`;
  }
  const label = { row: "row", col: "column", value: "value", q: "q", tth: "2θ", chi: "χ" };
  box.replaceChildren(...parts.flatMap(([k, raw, text], i) => [i ? " · " : "", `${label[k]} `,
    el("span", { id: `det-${k}`, "data-value": String(raw), text })]), note);
  box.dataset.row = String(r);
  box.dataset.col = String(c);
}

// ------------------------------------------------------------------ mouse

function eventPoint(ev) {
  const rect = canvas().getBoundingClientRect();
  const x = (ev.clientX - rect.left) * (canvas().width / rect.width), y = (ev.clientY - rect.top) * (canvas().height / rect.height);
  return { x, y, img: D.view ? toImage(D.view, x, y) : [0, 0] };
}

function maskValue() { return $("#mask-mode").value === "unmask" ? 0 : 1; }

function changed(note) {
  updateMaskCanvas();
  draw();
  if (note) say("#mask-msg", note, "ok");
  $("#mask-undo").disabled = !D.model.undoStack.canUndo;
  $("#mask-redo").disabled = !D.model.undoStack.canRedo;
}

function onDown(ev) {
  if (!D.frame || !D.view) return;
  const p = eventPoint(ev);
  canvas().focus();
  if (ev.button === 1 || ev.shiftKey || D.tool === "pan") { D.drag = { kind: "pan", x: p.x, y: p.y }; ev.preventDefault(); return; }
  if (ev.button !== 0) return;
  if (D.tool === "rect" || D.tool === "circle") D.drag = { kind: D.tool, p0: p.img, p1: p.img };
  else if (D.tool === "polygon") {
    const last = D.polygon[D.polygon.length - 1];
    if (!last || last[0] !== p.img[0] || last[1] !== p.img[1]) D.polygon.push(p.img);
    draw();
  }
}

function onMove(ev) {
  const p = eventPoint(ev);
  D.hover = p.img;
  if (D.frame) readout(p.img[0], p.img[1]);
  const dr = D.drag;
  if (dr && dr.kind === "pan") { D.view = panBy(D.view, p.x - dr.x, p.y - dr.y); dr.x = p.x; dr.y = p.y; }
  else if (dr) dr.p1 = p.img;
  if (dr || D.polygon.length) draw();
}

function onUp(ev) {
  const dr = D.drag;
  D.drag = null;
  if (!dr || dr.kind === "pan" || !D.model) return;
  const p1 = eventPoint(ev).img;
  const what = maskValue() ? "masked" : "unmasked";
  if (dr.kind === "rect") {
    const n = D.model.rect(dr.p0[0], dr.p0[1], p1[0], p1[1], maskValue());
    changed(`Rectangle: ${n} pixels ${what}.`);
  } else {
    const n = D.model.circle(dr.p0[0], dr.p0[1], Math.hypot(p1[0] - dr.p0[0], p1[1] - dr.p0[1]), maskValue());
    changed(`Circle: ${n} pixels ${what}.`);
  }
}

/** Close the polygon being drawn into the mask. */
export function finishPolygon() {
  const pts = D.polygon;
  D.polygon = [];
  if (pts.length < 3 || !D.model) { draw(); if (pts.length) say("#mask-msg", "A polygon needs three corners.", "error"); return; }
  const n = D.model.polygon(pts, maskValue());
  changed(`Polygon of ${pts.length} corners: ${n} pixels ${maskValue() ? "masked" : "unmasked"}.`);
}

function onWheel(ev) {
  if (!D.view) return;
  ev.preventDefault();
  const p = eventPoint(ev);
  D.view = zoomAt(D.view, p.x, p.y, ev.deltaY < 0 ? 1.25 : 0.8);
  draw();
}

function onKey(ev) {
  if (ev.key === "Enter" && D.polygon.length) { finishPolygon(); ev.preventDefault(); }
  else if (ev.key === "Escape") { D.polygon = []; D.drag = null; draw(); }
  else if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { undo(); ev.preventDefault(); }
}

// ------------------------------------------------------------------ mask editor actions

function needFrame() {
  if (D.model && D.frame) return true;
  say("#mask-msg", "Show a frame first: the mask takes its size.", "error");
  return false;
}

function undo() { if (D.model && D.model.undo()) changed("Undone."); }
function redo() { if (D.model && D.model.redo()) changed("Redone."); }

function threshold() {
  if (!needFrame()) return;
  const below = $("#mask-below").value.trim(), above = $("#mask-above").value.trim();
  const b = below === "" ? null : Number(below), a = above === "" ? null : Number(above);
  if ((b !== null && !Number.isFinite(b)) || (a !== null && !Number.isFinite(a))) { say("#mask-msg", "Thresholds must be numbers.", "error"); return; }
  if (b === null && a === null) { say("#mask-msg", "Give a value to mask below or above.", "error"); return; }
  const n = D.model.threshold(D.full, b, a);
  changed(`Threshold: ${n} pixels${b !== null ? ` below ${b}` : ""}${b !== null && a !== null ? " or" : ""}${a !== null ? ` above ${a}` : ""} masked` +
    (D.frame.binning > 1 ? " (binned frame: by blocks)" : "") + ".");
}

function dummies() {
  if (!needFrame()) return;
  const n = D.model.dummies(D.full);
  changed(`${n} dummy pixels (negative values) masked.`);
}

async function loadMaskFile(name, base64data) {
  const arg = { filenames: [name] };
  if (D.frame) arg.shape = D.frame.shape;
  const r = await command("maskdecode", arg, [base64data]);
  if (r.result === "Error") { say("#mask-msg", r.data.Error, "error"); return; }
  const mask = b64Bytes(r.data.mask);
  if (!D.model || D.model.shape[0] !== r.data.shape[0] || D.model.shape[1] !== r.data.shape[1]) D.model = new MaskModel(r.data.shape);
  D.model.replace(mask, "load " + name);
  changed(`Loaded ${name}: ${r.data.masked} pixels masked.`);
}

async function onMaskFile(ev) {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (!file) return;
  try { await loadMaskFile(file.name, toBase64(await readFile(file, "buffer"))); } catch (e) { say("#mask-msg", e.message, "error"); }
}

async function fromCalibrationMask() {
  const i = Number($("#mask-target").value || 0);
  const chosen = S.maskFiles[i];
  if (!chosen) { say("#mask-msg", `No mask file chosen for Masks[${i}] in the Calibration tab.`, "error"); return; }
  try { await loadMaskFile(chosen.name, chosen.data); } catch (e) { say("#mask-msg", e.message, "error"); }
}

function download(bytes, name, type = "application/octet-stream") {
  const a = el("a", { href: URL.createObjectURL(new Blob([bytes], { type })), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function saveMask() {
  if (!needFrame()) return;
  const fmtName = $("#mask-format").value;
  try {
    const r = await command("maskencode", { format: fmtName, shape: D.model.shape }, [toBase64(D.model.mask)]);
    if (r.result === "Error") { say("#mask-msg", r.data.Error, "error"); return; }
    const stem = ($("#mask-name").value.trim() || "mask").replace(/[^\w.-]+/g, "_").replace(/\.(msk|tiff?|edf|npy)$/i, "");
    download(b64Bytes(r.data.data), `${stem}.${fmtName}`);
    say("#mask-msg", `Saved ${stem}.${fmtName} (${r.data.masked} pixels masked).`, "ok");
  } catch (e) { say("#mask-msg", e.message, "error"); }
}

/** The edited mask goes with the calibration: it becomes the mask file of Masks[i] (NPY). */
function useForCalibration() {
  if (!needFrame()) return;
  const i = Number($("#mask-target").value || 0);
  const masks = Array.isArray(S.cal && S.cal.Masks) ? S.cal.Masks : [];
  if (!masks[i]) { say("#mask-msg", `The calibration has no Masks[${i}].`, "error"); return; }
  const name = ($("#mask-name").value.trim() || "mask").replace(/[^\w.-]+/g, "_").replace(/\.(msk|tiff?|edf|npy)$/i, "") + ".npy";
  const npy = toNpy(D.model.mask, D.model.shape);
  S.maskFiles[i] = { name, data: toBase64(npy), size: npy.length };
  masks[i].MaskFile = name;
  renderForm();
  scheduleValidate();
  say("#mask-msg", `The edited mask (${countMasked(D.model.mask)} pixels masked) is Masks[${i}]'s mask file ${name}: it is sent with the calibration.`, "ok");
}

function fillTargets() {
  const sel = $("#mask-target");
  const masks = Array.isArray(S.cal && S.cal.Masks) ? S.cal.Masks : [];
  const old = sel.value;
  sel.replaceChildren(...masks.map((m, i) => el("option", { value: String(i), text: `Masks[${i}] ${(m && m.Name) || ""}` })));
  if (old && Number(old) < masks.length) sel.value = old;
}

// ------------------------------------------------------------------ calibrant rings and calibration

async function loadCalibrants() {
  if ($("#calibrant").options.length) return;
  try {
    const r = await command("calibrants", {});
    if (r.result === "Error") { say("#calib-msg", r.data.Error, "error"); return; }
    const names = r.data.calibrants;
    $("#calibrant").replaceChildren(...names.map(n => el("option", { value: n, text: n })));
    if (names.includes("AgBh")) $("#calibrant").value = "AgBh";
  } catch (e) { say("#calib-msg", e.message, "error"); }
}

async function loadRings() {
  const name = $("#calibrant").value;
  if (!name) return;
  if (D.rings && D.rings.calibrant === name) { draw(); return; }
  try {
    const r = await command("calibrants", { name });
    if (r.result === "Error") { say("#calib-msg", r.data.Error, "error"); return; }
    D.rings = { calibrant: r.data.calibrant, d_spacings: r.data.d_spacings };
    draw();
  } catch (e) { say("#calib-msg", e.message, "error"); }
}

async function runCalibration() {
  const argument = { calibrant: $("#calibrant").value, template: S.cal };
  if (!argument.calibrant) { say("#calib-msg", "Choose a calibrant.", "error"); return; }
  const attachments = [];
  const upload = $("#calib-upload").files[0];
  if (upload) {
    argument.filenames = [upload.name];
    attachments.push(toBase64(await readFile(upload, "buffer")));
  } else if (D.frame) {
    argument.image = D.frame.path;
    if (D.frame.frame) argument.frame = D.frame.frame;
  } else { say("#calib-msg", "Show a frame or choose an image to upload.", "error"); return; }
  for (const [id, key] of [["#calib-wavelength", "wavelength"], ["#calib-distance", "distance"]]) {
    const t = $(id).value.trim();
    if (t === "") continue;
    const v = Number(t);
    if (!(v > 0)) { say("#calib-msg", `${key} must be a positive number.`, "error"); return; }
    argument[key] = v;
  }
  if ($("#calib-refine-wl").checked) argument.refine_wavelength = true;
  if ($("#calib-use-mask").checked && D.model) { argument.mask = true; attachments.push(toBase64(D.model.mask)); }
  say("#calib-msg", "Fitting the rings…");
  $("#calib-run").disabled = true;
  try {
    const r = await command("calibrateimage", argument, attachments);
    if (r.result === "Error") { say("#calib-msg", r.data.Error, "error"); return; }
    D.fit = r.data;
    showFit();
    draw();
  } catch (e) { say("#calib-msg", e.message, "error"); } finally { $("#calib-run").disabled = false; }
}

function showFit() {
  const f = D.fit;
  const box = $("#calib-result");
  if (!f) { box.replaceChildren(); $("#calib-accept").disabled = $("#calib-discard").disabled = true; return; }
  const g = f.geometry, u = f.uncertainties || {};
  const pm = k => (u[k] !== undefined ? ` ± ${fmt(u[k], 2)}` : "");
  box.replaceChildren(
    el("table", { class: "data kv", id: "calib-geometry" },
      el("tr", {}, el("td", { text: "distance" }), el("td", { text: `${fmt(g.DetectorDistanceMM, 7)}${pm("DetectorDistanceMM")} mm` })),
      el("tr", {}, el("td", { text: "beam centre [Y, X]" }), el("td", { text: `${fmt(g.BeamCenter[0], 7)}, ${fmt(g.BeamCenter[1], 7)} px` })),
      el("tr", {}, el("td", { text: "tilt, rotation" }), el("td", { text: `${fmt(g.TiltAngleDeg, 4)}°, ${fmt(g.TiltRotDeg, 5)}°` })),
      el("tr", {}, el("td", { text: "wavelength" }), el("td", { text: `${fmt(g.Wavelength, 6)} Å` })),
      el("tr", {}, el("td", { text: "RMS residual" }), el("td", { text: `${fmt(f.rms_px, 3)} px (${fmt(f.elapsed_s, 3)} s)` }))),
    el("table", { class: "data", id: "calib-rings" },
      el("tr", {}, ["ring", "d [Å]", "2θ [°]", "points", "RMS [px]", "mean [px]"].map(t => el("th", { text: t }))),
      ...f.rings.map(r => el("tr", {}, [r.line + 1, fmt(r.d_spacing, 5), fmt(r.two_theta_deg, 5), r.points, fmt(r.rms_px, 3), fmt(r.mean_px, 3)]
        .map(t => el("td", { text: String(t) }))))),
    ...(f.warnings || []).map(w => el("div", { class: "msg error", text: w })));
  $("#calib-accept").disabled = $("#calib-discard").disabled = false;
  say("#calib-msg", `${f.calibrant}: ${f.rings.length} rings fitted, RMS ${fmt(f.rms_px, 3)} px. Accept puts the geometry into the form.`, "ok");
}

function acceptFit() {
  if (!D.fit) return;
  setCalibration(applyFit(S.cal, D.fit.geometry), `The fitted ${D.fit.calibrant} geometry is in the form (not sent until you start a queue).`);
  D.fit = null;
  showFit();
  say("#calib-msg", "Accepted into the calibration form.", "ok");
  draw();
}

function discardFit() {
  D.fit = null;
  showFit();
  say("#calib-msg", "Fit discarded.");
  draw();
}

// ------------------------------------------------------------------ the tab

/** The tab is shown: size the canvas, offer the masks, show the latest frame once. */
export function showDetector() {
  fillTargets();
  loadCalibrants();
  if (sizeCanvas() && D.frame) resetView();
  if (!D.frame && !D.loading && S.running) loadFrame(null, { quiet: true });
  draw();
}

/** A live result arrived: with "follow the queue" on, show the latest frame (at most once a second). */
export function onDetectorResult() {
  if (S.activeTab !== "detector" || !$("#det-follow").checked || D.loading) return;
  const now = Date.now();
  if (now - D.lastFollow < 1000) return;
  D.lastFollow = now;
  loadFrame(null, { quiet: true });
}

export function wireDetector() {
  const c = canvas();
  c.addEventListener("mousedown", onDown);
  c.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", ev => { if (D.drag) onUp(ev); });
  c.addEventListener("dblclick", () => { if (D.tool === "polygon") finishPolygon(); });
  c.addEventListener("wheel", onWheel, { passive: false });
  c.addEventListener("keydown", onKey);
  c.addEventListener("mouseleave", () => { D.hover = null; });
  $("#det-latest").addEventListener("click", () => loadFrame(null));
  $("#det-show").addEventListener("click", () => {
    const image = $("#det-image").value.trim();
    if (image) loadFrame(image); else say("#det-msg", "Name an image relative to the base directory.", "error");
  });
  $("#det-image").addEventListener("keydown", ev => { if (ev.key === "Enter") $("#det-show").click(); });
  for (const id of ["#det-min", "#det-max", "#det-log"]) $(id).addEventListener("change", () => { renderImage(); draw(); });
  $("#det-fitview").addEventListener("click", resetView);
  $("#det-rings").addEventListener("change", () => { if ($("#det-rings").checked) loadRings(); else draw(); });
  $("#calibrant").addEventListener("change", () => { if ($("#det-rings").checked) loadRings(); });
  document.querySelectorAll('input[name="mask-tool"]').forEach(r => r.addEventListener("change", () => {
    D.tool = r.value;
    D.polygon = [];
    c.style.cursor = D.tool === "pan" ? "grab" : "crosshair";
    draw();
  }));
  $("#mask-show").addEventListener("change", draw);
  $("#mask-threshold").addEventListener("click", threshold);
  $("#mask-dummies").addEventListener("click", dummies);
  $("#mask-invert").addEventListener("click", () => { if (needFrame()) { D.model.invert(); changed("Inverted."); } });
  $("#mask-clear").addEventListener("click", () => { if (needFrame()) { D.model.clear(); changed("Cleared: no pixel masked."); } });
  $("#mask-undo").addEventListener("click", undo);
  $("#mask-redo").addEventListener("click", redo);
  $("#mask-file").addEventListener("change", onMaskFile);
  $("#mask-from-cal").addEventListener("click", fromCalibrationMask);
  $("#mask-save").addEventListener("click", saveMask);
  $("#mask-use").addEventListener("click", useForCalibration);
  $("#calib-run").addEventListener("click", runCalibration);
  $("#calib-accept").addEventListener("click", acceptFit);
  $("#calib-discard").addEventListener("click", discardFit);
  window.addEventListener("resize", () => { if (S.activeTab === "detector" && sizeCanvas()) draw(); });
  // for tests and for looking at from the browser console
  D.toScreen = (row, col) => (D.view ? toScreen(D.view, row, col) : null);
  D.setView = view => { D.view = { ...view }; draw(); };
}
