// The detector view's pure parts: geometry (static/geometry.js) against numbers computed in Python,
// the colour scale and the zoom/pan transform (static/colormap.js).
//
// REFERENCE was computed with saxsdog (q and 2θ: Calibration(cal).geometry.q() / two_theta() at
// pixel centres) and pyFAI (χ: calibration_to_integrator(cal).center_array(shape, unit="chi_deg"),
// the package's azimuth convention) for three geometries: cal.json, a 12° tilt, and a beam centre
// off the detector with non-square pixels.
import assert from "node:assert/strict";
import { test } from "node:test";

import { readFileSync } from "node:fs";

import { geometryFromCalibration, pixelInfo, pointInfo, ringPoints, ringTwoTheta, setSpellings, withShape } from "../../../src/saxsdog/server/static/geometry.js";
import { exclusiveGroups } from "../../../src/saxsdog/server/static/schemaform.js";

// the page takes the alternative spellings from the calibration schema, as here
const SCHEMA = JSON.parse(readFileSync(new URL("../../../src/saxsdog/schemas/calibration.schema.json", import.meta.url)));
setSpellings(exclusiveGroups(SCHEMA.properties.Geometry));
import { autoLimits, fitView, makeLut, panBy, pixelAt, renderRGBA, scaleValue, toImage, toScreen, zoomAt } from "../../../src/saxsdog/server/static/colormap.js";

const REFERENCE = [{"name": "cal.json", "calibration": {"Geometry": {"Tilt": {"TiltAngleDeg": -0.56, "TiltRotDeg": 73.569}, "DedectorDistanceMM": 1031.657, "BeamCenter": [808.37, 387.772], "Imagesize": [1043, 981], "PixelSizeMicroM": [172.0, 172.0]}, "Wavelength": 1.54}, "pixels": [{"row": 0, "col": 0, "q": 3.0723347249627406, "tth": 4.3155353484696874, "chi": -148.84510227252431}, {"row": 100, "col": 900, "q": 3.5961139025715143, "tth": 5.051700603341706, "chi": -14.658878158770403}, {"row": 520, "col": 400, "q": 1.9438866961741204, "tth": 2.7300809071338614, "chi": 87.44981988089107}, {"row": 1042, "col": 980, "q": 6.739052974138651, "tth": 9.474521429469718, "chi": 53.73147056131837}, {"row": 655, "col": 388, "q": 2.855600465802111, "tth": 4.010971839905369, "chi": 89.9001462253944}, {"row": 230, "col": 35, "q": 2.3929312214100387, "tth": 3.360902913625842, "chi": -179.32758573072124}]}, {"name": "tilted 12 deg", "calibration": {"Geometry": {"Tilt": {"TiltAngleDeg": 12.0, "TiltRotDeg": -35.0}, "DetectorDistanceMM": 250.0, "BeamCenter": [600.5, 300.25], "ImageSize": [1043, 981], "PixelSizeMicroM": [172.0, 172.0]}, "Wavelength": 1.0}, "pixels": [{"row": 0, "col": 0, "q": 23.130038504437977, "tth": 21.213016110371164, "chi": -123.71919469509955}, {"row": 100, "col": 900, "q": 26.5861395933034, "tth": 24.4282531094847, "chi": -30.158931455041486}, {"row": 520, "col": 400, "q": 5.261563676656918, "tth": 4.7993737404224825, "chi": 37.94921143512065}, {"row": 1042, "col": 980, "q": 30.833433365454194, "tth": 28.406770819720442, "chi": 41.555258938737595}, {"row": 655, "col": 388, "q": 9.465210207120846, "tth": 8.6394189819554, "chi": 68.0710945234141}, {"row": 230, "col": 35, "q": 14.758784391608586, "tth": 13.489531407235543, "chi": -141.23169244357047}]}, {"name": "off detector, 100 um", "calibration": {"Geometry": {"Tilt": {"TiltAngleDeg": 3.0, "TiltRotDeg": 150.0}, "DetectorDistanceMM": 4000.0, "BeamCenter": [-50.0, 1200.0], "ImageSize": [1043, 981], "PixelSizeMicroM": [100.0, 120.0]}, "Wavelength": 0.8}, "pixels": [{"row": 0, "col": 0, "q": 3.5323733039613097, "tth": 2.577127798704128, "chi": -142.79184317812405}, {"row": 100, "col": 900, "q": 2.0682181866986493, "tth": 1.5088346637011159, "chi": -109.86740775339622}, {"row": 520, "col": 400, "q": 2.1868384768608693, "tth": 1.5953775912125217, "chi": -149.17319356043166}, {"row": 1042, "col": 980, "q": 0.5257770931691383, "tth": 0.38356168958994036, "chi": -169.171107562186}, {"row": 655, "col": 388, "q": 2.089853576176876, "tth": 1.52461933390002, "chi": -155.8149185094711}, {"row": 230, "col": 35, "q": 3.211010085296679, "tth": 2.3426352392651215, "chi": -148.31407220174867}]}];

function close(a, b, tol, what) {
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tolerance ${tol})`);
}

test("q, 2θ and χ at pixel centres match saxsdog's and pyFAI's", () => {
  for (const c of REFERENCE) {
    const geo = geometryFromCalibration(c.calibration);
    for (const p of c.pixels) {
      const got = pixelInfo(geo, p.row, p.col);
      close(got.q, p.q, 1e-10 * p.q + 1e-12, `${c.name} q at ${p.row},${p.col}`);
      close(got.tth, p.tth, 1e-9, `${c.name} 2θ at ${p.row},${p.col}`);
      const dchi = ((got.chi - p.chi + 540) % 360) - 180;
      close(dchi, 0, 1e-6, `${c.name} χ at ${p.row},${p.col}`);
    }
  }
});

test("χ is clockwise on the image as read, zero at 3 o'clock", () => {
  const geo = geometryFromCalibration({ Geometry: { BeamCenter: [50, 50], DetectorDistanceMM: 1000, ImageSize: [100, 100],
    PixelSizeMicroM: [100, 100] }, Wavelength: 1 });
  close(pointInfo(geo, 50, 80).chi, 0, 1e-9, "3 o'clock");
  close(pointInfo(geo, 80, 50).chi, 90, 1e-9, "6 o'clock (below the centre)");
  close(pointInfo(geo, 20, 50).chi, -90, 1e-9, "12 o'clock");
  close(pointInfo(geo, 50 - 30 * Math.sin(Math.PI / 3), 50 + 30 * Math.cos(Math.PI / 3)).chi, -60, 1e-9, "60° above 3 o'clock");
});

test("ring points lie at the ring's q, tilt included", () => {
  for (const c of REFERENCE) {
    const geo = geometryFromCalibration(c.calibration);
    const tth = ringTwoTheta(58.38 / 3, geo.wavelengthA);
    const q = 4 * Math.PI / (geo.wavelengthA * 0.1) * Math.sin(tth / 2);
    const pts = ringPoints(geo, tth, 90).filter(p => p !== null);
    assert.ok(pts.length > 80);
    for (const [r, col] of pts) close(pointInfo(geo, r, col).q, q, 1e-9 * q, `${c.name} ring point`);
  }
  assert.ok(Number.isNaN(ringTwoTheta(0.5, 1.54)));
});

test("the geometry names a missing field", () => {
  assert.throws(() => geometryFromCalibration({ Geometry: { BeamCenter: [1, 2], PixelSizeMicroM: [172, 172] }, Wavelength: 1 }),
    /DetectorDistanceMM/);
  assert.throws(() => geometryFromCalibration({}), /\$\.Geometry/);
  const g = geometryFromCalibration({ Geometry: { BeamCenter: [1, 2], DedectorDistanceMM: "800", PixelSizeMicroM: 172 }, Wavelength: 1.5 });
  assert.equal(g.shape, null);
  assert.deepEqual(withShape(g, [10, 20]).shape, [10, 20]);
  assert.deepEqual(g.pixelUM, [172, 172]);
});

test("log colour scale: no data is NaN, limits clamp", () => {
  assert.ok(Number.isNaN(scaleValue(-1, 0, 100)));
  assert.ok(Number.isNaN(scaleValue(NaN, 0, 100)));
  assert.equal(scaleValue(0, 0, 99), 0);
  close(scaleValue(9, 0, 99), 0.5, 1e-12, "log10(10) halfway to log10(100)");
  assert.equal(scaleValue(1e6, 0, 99), 1);
  close(scaleValue(50, 0, 100, false), 0.5, 1e-12, "linear");
  const lut = makeLut();
  assert.equal(lut.length, 768);
  const rgba = renderRGBA(Float32Array.from([-2, 0, 99]), 0, 99, { lut });
  assert.deepEqual([...rgba.slice(0, 4)], [40, 90, 160, 255]);
  assert.deepEqual([...rgba.slice(4, 7)], [...lut.slice(0, 3)]);
  assert.deepEqual([...rgba.slice(8, 11)], [...lut.slice(765, 768)]);
  const [lo, hi] = autoLimits(Float32Array.from({ length: 1000 }, (_, i) => (i % 10 === 0 ? -1 : i)));
  assert.equal(lo, 0);
  assert.ok(hi > 990 && hi <= 999);
});

test("zoom keeps the point under the cursor; pan moves; pixels under the cursor", () => {
  let v = fitView(1043, 981, 900, 700);
  close(v.scale, 700 / 1043, 1e-12, "fit scale");
  const [r, c] = toImage(v, 400, 300);
  v = zoomAt(v, 400, 300, 3);
  const [r2, c2] = toImage(v, 400, 300);
  close(r2, r, 1e-9, "row under the cursor"); close(c2, c, 1e-9, "col under the cursor");
  const [x, y] = toScreen(v, r, c);
  close(x, 400, 1e-9, "x"); close(y, 300, 1e-9, "y");
  const p = panBy(v, 10, -5);
  assert.deepEqual(toImage(p, 410, 295), toImage(v, 400, 300));
  assert.deepEqual(pixelAt([10, 20], 3.9, 19.99), [3, 19]);
  assert.equal(pixelAt([10, 20], -0.1, 5), null);
  assert.equal(pixelAt([10, 20], 5, 20), null);
  assert.equal(zoomAt(v, 0, 0, 1e9).scale, 64);
});

test("a fit goes into the calibration in the spelling it uses, the rest kept", async () => {
  const { applyFit } = await import("../../../src/saxsdog/server/static/geometry.js");
  const cal = { Title: "t", Geometry: { DedectorDistanceMM: 1, Imagesize: [1, 1], BeamCenter: [0, 0], PixelSizeMicroM: [1, 1],
    Tilt: { TiltAngleDeg: 0, TiltRotDeg: 0 } }, Masks: [{ MaskFile: "m.msk" }], Wavelength: 1 };
  const fit = { BeamCenter: [805.2, 422.7], DetectorDistanceMM: 830.15, ImageSize: [1043, 981], PixelSizeMicroM: [172, 172],
    TiltAngleDeg: 0.7, TiltRotDeg: -161, Wavelength: 1.54987 };
  const out = applyFit(cal, fit);
  assert.deepEqual(out, { Title: "t", Geometry: { DedectorDistanceMM: 830.15, Imagesize: [1043, 981], BeamCenter: [805.2, 422.7],
    PixelSizeMicroM: [172, 172], Tilt: { TiltAngleDeg: 0.7, TiltRotDeg: -161 } }, Masks: [{ MaskFile: "m.msk" }], Wavelength: 1.54987 });
  assert.equal(cal.Geometry.DedectorDistanceMM, 1);  // a copy
  assert.equal(geometryFromCalibration(out).distanceMM, 830.15);
});

test("a binned frame's full-resolution picture takes each block's value", async () => {
  const { unbin } = await import("../../../src/saxsdog/server/static/colormap.js");
  const data = Float32Array.from([1, 2, 3, 4]);  // 2x2 blocks of a 3x4 image binned by 2
  assert.deepEqual([...unbin(data, [2, 2], 2, [3, 4])], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4]);
  assert.equal(unbin(data, [2, 2], 1, [2, 2]), data);
});
