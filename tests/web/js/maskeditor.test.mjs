// The mask editor's logic (static/maskeditor.js): shapes rasterised by the pixel-centre rule,
// thresholds, dummy pixels, invert, undo/redo and the NPY file sent with the calibration.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  MaskModel, UndoStack, applyThreshold, countMasked, fillCircle, fillPolygon, fillRect, fromNpy, invertMask,
  maskDummies, toNpy,
} from "../../../src/saxsdog/server/static/maskeditor.js";

const SHAPE = [37, 53];

/** The mask of every pixel whose centre passes `inside(row, col)`: the rule, pixel by pixel. */
function brute(inside) {
  const m = new Uint8Array(SHAPE[0] * SHAPE[1]);
  for (let i = 0; i < SHAPE[0]; i++) for (let j = 0; j < SHAPE[1]; j++) if (inside(i + 0.5, j + 0.5)) m[i * SHAPE[1] + j] = 1;
  return m;
}

function evenOdd(points, y, x) {
  let inside = false;
  for (let k = 0; k < points.length; k++) {
    const [y0, x0] = points[k], [y1, x1] = points[(k + 1) % points.length];
    if ((y0 <= y && y < y1) || (y1 <= y && y < y0)) {
      if (x < x0 + ((y - y0) * (x1 - x0)) / (y1 - y0)) inside = !inside;
    }
  }
  return inside;
}

test("a rectangle covers the pixels whose centres it contains, clipped to the image", () => {
  for (const [r0, c0, r1, c1] of [[3.2, 4.7, 10.1, 20.5], [20.5, 40.2, 2.4, 1.1], [-5, -5, 3.3, 60], [30.6, 10, 30.9, 12]]) {
    const m = new Uint8Array(SHAPE[0] * SHAPE[1]);
    fillRect(m, SHAPE, r0, c0, r1, c1);
    const want = brute((y, x) => y >= Math.min(r0, r1) && y <= Math.max(r0, r1) && x >= Math.min(c0, c1) && x <= Math.max(c0, c1));
    assert.deepEqual(m, want, `${r0},${c0},${r1},${c1}`);
  }
});

test("a circle covers the centres within its radius", () => {
  for (const [rc, cc, rad] of [[18.3, 26.1, 9.7], [0, 0, 12], [36, 60, 20], [10, 10, 0.2]]) {
    const m = new Uint8Array(SHAPE[0] * SHAPE[1]);
    fillCircle(m, SHAPE, rc, cc, rad);
    assert.deepEqual(m, brute((y, x) => (y - rc) ** 2 + (x - cc) ** 2 <= rad * rad), `${rc},${cc},${rad}`);
  }
});

test("a polygon (convex, concave, self-crossing, partly outside) follows the even-odd rule", () => {
  const polys = [
    [[2.2, 3.1], [30.7, 10.4], [15.3, 45.9]],
    [[1.1, 1.3], [1.4, 50.2], [35.5, 50.7], [20.2, 25.3], [35.1, 2.6]],
    [[5.3, 5.2], [30.1, 40.7], [5.6, 40.3], [30.4, 5.9]],
    [[-10.2, -4.1], [20.3, 70.6], [45.5, 12.2]],
  ];
  for (const pts of polys) {
    const m = new Uint8Array(SHAPE[0] * SHAPE[1]);
    fillPolygon(m, SHAPE, pts);
    assert.deepEqual(m, brute((y, x) => evenOdd(pts, y, x)), JSON.stringify(pts));
    assert.ok(countMasked(m) > 0);
  }
  assert.equal(fillPolygon(new Uint8Array(10), [2, 5], [[0, 0], [1, 1]]), 0);
});

test("thresholds, dummy pixels and invert", () => {
  const data = Float32Array.from([-1, -2, 0, 5, 10, 100, 7, -1]);
  const m = new Uint8Array(8);
  assert.equal(applyThreshold(m, data, { below: 1 }), 4);  // -1, -2, 0, -1
  assert.deepEqual([...m], [1, 1, 1, 0, 0, 0, 0, 1]);
  m.fill(0);
  assert.equal(applyThreshold(m, data, { above: 9 }), 2);
  assert.deepEqual([...m], [0, 0, 0, 0, 1, 1, 0, 0]);
  m.fill(0);
  assert.equal(maskDummies(m, data), 3);
  assert.deepEqual([...m], [1, 1, 0, 0, 0, 0, 0, 1]);
  assert.equal(maskDummies(m, data, 7), 4);
  assert.deepEqual([...invertMask(m)], [0, 0, 1, 1, 1, 1, 0, 0]);
});

test("undo and redo restore whole masks; a new change forgets the redo", () => {
  const model = new MaskModel([4, 5]);
  model.rect(0, 0, 2, 2);
  const afterRect = model.mask.slice();
  model.circle(3, 4, 1);
  const afterCircle = model.mask.slice();
  model.invert();
  assert.ok(model.undo());
  assert.deepEqual(model.mask, afterCircle);
  assert.ok(model.undo());
  assert.deepEqual(model.mask, afterRect);
  assert.ok(model.redo());
  assert.deepEqual(model.mask, afterCircle);
  model.clear();
  assert.equal(model.redo(), false);
  assert.ok(model.undo());
  assert.deepEqual(model.mask, afterCircle);
  assert.ok(model.undo()); assert.ok(model.undo());
  assert.equal(countMasked(model.mask), 0);
  assert.equal(model.undo(), false);
  assert.deepEqual(model.operations.filter(o => o.kind === "rect").map(o => o.pixels), [4]);
  assert.throws(() => model.replace(new Uint8Array(3)), /3 pixels/);
  const stack = new UndoStack(2);
  for (let k = 0; k < 5; k++) stack.push(Uint8Array.from([k]));
  assert.deepEqual([...stack.undo(Uint8Array.from([9]))], [4]);
  assert.deepEqual([...stack.undo(Uint8Array.from([4]))], [3]);
  assert.equal(stack.undo(Uint8Array.from([3])), null);  // only the last two are kept
});

test("the NPY file: header padded to 64 bytes, uint8 in C order, read back", () => {
  const mask = Uint8Array.from({ length: 6 }, (_, i) => i % 2);
  const npy = toNpy(mask, [2, 3]);
  const headerLen = npy[8] | (npy[9] << 8);
  assert.equal((10 + headerLen) % 64, 0);
  const header = String.fromCharCode(...npy.slice(10, 10 + headerLen));
  assert.match(header, /^\{'descr': '\|u1', 'fortran_order': False, 'shape': \(2, 3\), \} *\n$/);
  assert.deepEqual([...npy.slice(10 + headerLen)], [...mask]);
  const back = fromNpy(npy);
  assert.deepEqual(back.shape, [2, 3]);
  assert.deepEqual(back.mask, mask);
  assert.throws(() => fromNpy(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])), /not a .npy/);
});
