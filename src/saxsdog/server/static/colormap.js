// Colour scale and view transform of the detector view.  Pure functions, no DOM: tested in node.

/** Control points of a perceptually ordered dark-to-bright map (close to matplotlib's inferno). */
const INFERNO = [
  [0.0, 0, 0, 4], [0.1, 22, 11, 57], [0.2, 66, 10, 104], [0.3, 106, 23, 110], [0.4, 147, 38, 103],
  [0.5, 188, 55, 84], [0.6, 221, 81, 58], [0.7, 243, 118, 27], [0.8, 252, 165, 10], [0.9, 246, 215, 70],
  [1.0, 252, 255, 164],
];

/** A 256-entry RGB lookup table (Uint8Array of 768) interpolated from `points` [[t, r, g, b]]. */
export function makeLut(points = INFERNO) {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < points.length - 2 && t > points[k + 1][0]) k++;
    const [t0, ...c0] = points[k], [t1, ...c1] = points[k + 1];
    const f = t1 > t0 ? Math.min(1, Math.max(0, (t - t0) / (t1 - t0))) : 0;
    for (let c = 0; c < 3; c++) lut[3 * i + c] = Math.round(c0[c] + f * (c1[c] - c0[c]));
  }
  return lut;
}

/**
 * Where `value` falls on the colour scale from `lo` to `hi`, in [0, 1]; NaN for a pixel without
 * data (negative: a gap or dead pixel).  `log`: log10(1 + v) between log10(1 + lo) and
 * log10(1 + hi), so that zero counts show as the darkest colour instead of −∞.
 */
export function scaleValue(value, lo, hi, log = true) {
  if (!(value >= 0)) return NaN;
  let a = lo, b = hi, v = value;
  if (log) { a = Math.log10(1 + Math.max(lo, 0)); b = Math.log10(1 + Math.max(hi, 0)); v = Math.log10(1 + v); }
  if (!(b > a)) return v >= b ? 1 : 0;
  return Math.min(1, Math.max(0, (v - a) / (b - a)));
}

/** Default colour limits of a frame: 0 and a high percentile of the non-negative pixels. */
export function autoLimits(data, percentile = 99.9) {
  const step = Math.max(1, Math.floor(data.length / 200000));  // a sample is enough
  const vals = [];
  for (let i = 0; i < data.length; i += step) if (data[i] >= 0) vals.push(data[i]);
  if (!vals.length) return [0, 1];
  vals.sort((x, y) => x - y);
  const hi = vals[Math.min(vals.length - 1, Math.floor((percentile / 100) * (vals.length - 1)))];
  return [0, hi > 0 ? hi : Math.max(1, vals[vals.length - 1])];
}

/** Fill `rgba` (Uint8ClampedArray, 4 per pixel) with the colours of `data`; pixels without data
 * get `noData` [r, g, b]. */
export function renderRGBA(data, lo, hi, { log = true, lut = makeLut(), noData = [40, 90, 160], rgba } = {}) {
  const out = rgba || new Uint8ClampedArray(data.length * 4);
  for (let i = 0; i < data.length; i++) {
    const s = scaleValue(data[i], lo, hi, log);
    const o = 4 * i;
    if (Number.isNaN(s)) { out[o] = noData[0]; out[o + 1] = noData[1]; out[o + 2] = noData[2]; }
    else { const k = 3 * Math.round(s * 255); out[o] = lut[k]; out[o + 1] = lut[k + 1]; out[o + 2] = lut[k + 2]; }
    out[o + 3] = 255;
  }
  return out;
}

// ------------------------------------------------------------------ view: zoom and pan
// A view maps continuous image coordinates (col = x, row = y; full-resolution pixels) to canvas
// pixels: x_screen = col·scale + tx, y_screen = row·scale + ty.

/** The view that shows a `rows × cols` image whole and centred in a `width × height` canvas. */
export function fitView(rows, cols, width, height) {
  const scale = Math.min(width / cols, height / rows);
  return { scale, tx: (width - cols * scale) / 2, ty: (height - rows * scale) / 2 };
}

/** Canvas point (x, y) -> continuous image coordinates `[row, col]`. */
export function toImage(view, x, y) { return [(y - view.ty) / view.scale, (x - view.tx) / view.scale]; }

/** Continuous image coordinates -> canvas point `[x, y]`. */
export function toScreen(view, row, col) { return [col * view.scale + view.tx, row * view.scale + view.ty]; }

/** The view zoomed by `factor` about the canvas point (x, y), which stays over the same image point;
 * the scale stays within [minScale, maxScale]. */
export function zoomAt(view, x, y, factor, minScale = 0.02, maxScale = 64) {
  const scale = Math.min(maxScale, Math.max(minScale, view.scale * factor));
  const f = scale / view.scale;
  return { scale, tx: x - (x - view.tx) * f, ty: y - (y - view.ty) * f };
}

/** The view moved by (dx, dy) canvas pixels. */
export function panBy(view, dx, dy) { return { scale: view.scale, tx: view.tx + dx, ty: view.ty + dy }; }

/** The integer pixel `[row, col]` under continuous coordinates, or null outside a `shape` image. */
export function pixelAt(shape, row, col) {
  const r = Math.floor(row), c = Math.floor(col);
  return r >= 0 && c >= 0 && r < shape[0] && c < shape[1] ? [r, c] : null;
}

/** A number for the readout: 4 significant digits, exponent form for very small or large ones. */
export function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6)) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toString();
}

/** The full-resolution picture of a frame sent binned by `binning` (block maxima): each pixel
 * of the `shape` image takes its block's value (the frame itself when not binned). */
export function unbin(data, dataShape, binning, shape) {
  if (binning === 1) return data;
  const [rows, cols] = shape, dc = dataShape[1];
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const base = Math.floor(i / binning) * dc;
    for (let j = 0; j < cols; j++) out[i * cols + j] = data[base + Math.floor(j / binning)];
  }
  return out;
}
