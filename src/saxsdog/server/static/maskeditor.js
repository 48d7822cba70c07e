// The mask editor's logic: shapes rasterised into a mask, thresholds, dummy pixels, invert, undo,
// and the NPY file the page sends with the calibration.  Pure (no DOM): tested in node.
//
// A mask is a Uint8Array of rows·cols bytes, row 0 at the top as images are read (saxsdog's
// orientation), 1 = masked (not used), 0 = used: the convention of saxsdog's mask files.
// Shapes are in continuous image coordinates (row, col) from the top-left corner; a pixel belongs
// to a shape when its centre (i + 0.5, j + 0.5) lies inside it, so the same rule in NumPy
// rebuilds the same mask.

/** Set `value` (1 mask, 0 unmask) for the pixels whose centres are in the rectangle with corners
 * (r0, c0) and (r1, c1) (edges included).  Returns the number of pixels covered. */
export function fillRect(mask, shape, r0, c0, r1, c1, value = 1) {
  const [rows, cols] = shape;
  const top = Math.min(r0, r1), bottom = Math.max(r0, r1), left = Math.min(c0, c1), right = Math.max(c0, c1);
  const i0 = Math.max(0, Math.ceil(top - 0.5)), i1 = Math.min(rows - 1, Math.floor(bottom - 0.5));
  const j0 = Math.max(0, Math.ceil(left - 0.5)), j1 = Math.min(cols - 1, Math.floor(right - 0.5));
  let n = 0;
  for (let i = i0; i <= i1; i++) {
    mask.fill(value, i * cols + j0, i * cols + j1 + 1);
    n += Math.max(0, j1 - j0 + 1);
  }
  return n;
}

/** Set `value` for the pixels whose centres are inside the circle (a centre exactly at the radius
 * is inside). */
export function fillCircle(mask, shape, rc, cc, radius, value = 1) {
  const [rows, cols] = shape;
  const r2 = radius * radius;
  let n = 0;
  const i0 = Math.max(0, Math.floor(rc - radius - 0.5)), i1 = Math.min(rows - 1, Math.ceil(rc + radius - 0.5));
  for (let i = i0; i <= i1; i++) {
    const dy = i + 0.5 - rc;
    const w2 = r2 - dy * dy;
    if (w2 < 0) continue;
    const w = Math.sqrt(w2);
    const j0 = Math.max(0, Math.ceil(cc - w - 0.5)), j1 = Math.min(cols - 1, Math.floor(cc + w - 0.5));
    if (j1 >= j0) { mask.fill(value, i * cols + j0, i * cols + j1 + 1); n += j1 - j0 + 1; }
  }
  return n;
}

/**
 * Set `value` for the pixels whose centres are inside the polygon `points` ([[row, col], ...],
 * closed implicitly), by the even-odd rule with half-open edges: a centre is inside when a ray
 * towards +col crosses the boundary an odd number of times, an edge counting for the rows y with
 * min(y0, y1) <= y < max(y0, y1) (matplotlib's Path.contains_points agrees away from the boundary).
 */
export function fillPolygon(mask, shape, points, value = 1) {
  const [rows, cols] = shape;
  if (points.length < 3) return 0;
  let top = Infinity, bottom = -Infinity;
  for (const [r] of points) { top = Math.min(top, r); bottom = Math.max(bottom, r); }
  let n = 0;
  const xs = [];
  for (let i = Math.max(0, Math.floor(top)); i <= Math.min(rows - 1, Math.ceil(bottom)); i++) {
    const y = i + 0.5;
    xs.length = 0;
    for (let k = 0; k < points.length; k++) {
      const [y0, x0] = points[k], [y1, x1] = points[(k + 1) % points.length];
      if ((y0 <= y && y < y1) || (y1 <= y && y < y0)) xs.push(x0 + ((y - y0) * (x1 - x0)) / (y1 - y0));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      // centres x = j + 0.5 with xs[k] < x < xs[k+1]
      const j0 = Math.max(0, Math.floor(xs[k] - 0.5) + 1), j1 = Math.min(cols - 1, Math.ceil(xs[k + 1] - 0.5) - 1);
      if (j1 >= j0) { mask.fill(value, i * cols + j0, i * cols + j1 + 1); n += j1 - j0 + 1; }
    }
  }
  return n;
}

/** Mask the pixels whose value is below `below` or above `above` (either may be null). `data`
 * has the mask's length (pixels of the frame). Returns the number of pixels masked by it. */
export function applyThreshold(mask, data, { below = null, above = null } = {}) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) {
    const v = data[i];
    if ((below !== null && v < below) || (above !== null && v > above)) { mask[i] = 1; n++; }
  }
  return n;
}

/** Mask the dummy pixels: negative values (detector gaps, dead pixels) and `dummy` if given. */
export function maskDummies(mask, data, dummy = null) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) {
    if (data[i] < 0 || (dummy !== null && data[i] === dummy)) { mask[i] = 1; n++; }
  }
  return n;
}

/** Masked pixels become used and used ones masked. */
export function invertMask(mask) {
  for (let i = 0; i < mask.length; i++) mask[i] = mask[i] ? 0 : 1;
  return mask;
}

/** How many pixels are masked. */
export function countMasked(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i]) n++;
  return n;
}

/** Undo and redo of whole-mask snapshots (at most `limit` kept). */
export class UndoStack {
  constructor(limit = 40) { this.limit = limit; this.done = []; this.undone = []; }

  /** Remember `state` (a copy is kept) before a change; forgets what was undone. */
  push(state) {
    this.done.push(state.slice());
    if (this.done.length > this.limit) this.done.shift();
    this.undone = [];
  }

  get canUndo() { return this.done.length > 0; }
  get canRedo() { return this.undone.length > 0; }

  /** The state before the last change (`current` is kept for redo), or null. */
  undo(current) {
    if (!this.done.length) return null;
    this.undone.push(current.slice());
    return this.done.pop();
  }

  /** The state the last undo left, or null. */
  redo(current) {
    if (!this.undone.length) return null;
    this.done.push(current.slice());
    return this.undone.pop();
  }

  clear() { this.done = []; this.undone = []; }
}

/**
 * The editor's state: the mask, its shape, the operations applied (shapes with their
 * coordinates, for the record and for tests) and undo.
 */
export class MaskModel {
  constructor(shape, mask = null) {
    this.shape = [shape[0], shape[1]];
    this.mask = mask ? Uint8Array.from(mask) : new Uint8Array(shape[0] * shape[1]);
    if (this.mask.length !== shape[0] * shape[1]) throw new Error(`a mask of ${this.mask.length} pixels for a ${shape[0]}x${shape[1]} image`);
    this.undoStack = new UndoStack();
    this.operations = [];
  }

  /** Apply `fn(mask)` as one undoable step, recorded as `op`. */
  apply(op, fn) {
    this.undoStack.push(this.mask);
    const n = fn(this.mask);
    this.operations.push({ ...op, pixels: n });
    return n;
  }

  rect(r0, c0, r1, c1, value = 1) {
    return this.apply({ kind: "rect", r0, c0, r1, c1, value }, m => fillRect(m, this.shape, r0, c0, r1, c1, value));
  }
  circle(rc, cc, radius, value = 1) {
    return this.apply({ kind: "circle", rc, cc, radius, value }, m => fillCircle(m, this.shape, rc, cc, radius, value));
  }
  polygon(points, value = 1) {
    const pts = points.map(p => [p[0], p[1]]);
    return this.apply({ kind: "polygon", points: pts, value }, m => fillPolygon(m, this.shape, pts, value));
  }
  threshold(data, below, above) {
    return this.apply({ kind: "threshold", below, above }, m => applyThreshold(m, data, { below, above }));
  }
  dummies(data, dummy = null) { return this.apply({ kind: "dummies", dummy }, m => maskDummies(m, data, dummy)); }
  invert() { return this.apply({ kind: "invert" }, m => { invertMask(m); return m.length; }); }
  clear() { return this.apply({ kind: "clear" }, m => { m.fill(0); return m.length; }); }
  replace(mask, kind = "load") {
    if (mask.length !== this.mask.length) throw new Error(`the mask has ${mask.length} pixels, the image ${this.mask.length}`);
    return this.apply({ kind }, m => { m.set(mask); return countMasked(m); });
  }

  undo() { const s = this.undoStack.undo(this.mask); if (s) { this.mask = s; this.operations.push({ kind: "undo" }); } return !!s; }
  redo() { const s = this.undoStack.redo(this.mask); if (s) { this.mask = s; this.operations.push({ kind: "redo" }); } return !!s; }
}

/** A NumPy .npy file (format 1.0, uint8, C order) of the mask: what the page sends with the
 * calibration, read by saxsdog like any mask file (non-zero = masked). */
export function toNpy(mask, shape) {
  let header = `{'descr': '|u1', 'fortran_order': False, 'shape': (${shape[0]}, ${shape[1]}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += " ".repeat(pad % 64) + "\n";
  const out = new Uint8Array(10 + header.length + mask.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(mask, 10 + header.length);
  return out;
}

/** `{shape, mask}` of a .npy file written by toNpy (uint8/bool, C order); throws otherwise. */
export function fromNpy(bytes) {
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") throw new Error("not a .npy file");
  const len = bytes[8] | (bytes[9] << 8);
  const header = String.fromCharCode(...bytes.slice(10, 10 + len));
  const m = /'shape':\s*\((\d+),\s*(\d+)\)/.exec(header);
  if (!m || !/'descr':\s*'[|]?(u1|b1)'/.test(header) || /'fortran_order':\s*True/.test(header)) throw new Error("only 2-D uint8 C-order .npy masks are read here");
  const shape = [Number(m[1]), Number(m[2])];
  const data = bytes.slice(10 + len, 10 + len + shape[0] * shape[1]);
  return { shape, mask: Uint8Array.from(data, v => (v ? 1 : 0)) };
}
