// Detector geometry in the FIT2D convention, as saxsdog computes it (saxsdog.core.geometry):
// q, 2θ and χ of a point on the detector, and the points of a ring of given 2θ.  Pure functions,
// no DOM: tested in node against numbers computed in Python.
//
// Coordinates are those of the image as read: row 0 at the top; pixel (i, j) covers
// [j, j+1) horizontally and [i, i+1) vertically, so its centre is (i + 0.5, j + 0.5).  The
// calibration's BeamCenter = [Y, X] counts Y from the bottom edge (FIT2D), X from the left.
//
// Tilt: an in-plane offset of length r at azimuth ψ (counter-clockwise, vertical axis up) has the
// component r·sin α along the beam, sin α = sin(tilt)·cos(ψ − rotation); 2θ follows exactly
// from the sample–pixel vector (d + r sin α along the beam, r cos α across it).
//
// χ (the package's one azimuth convention): on the image as read, clockwise from 3 o'clock, in
// degrees in (−180°, 180°], computed in the laboratory frame perpendicular to the beam, which is
// pyFAI's χ for the image as read (a spot 60° above 3 o'clock has χ = −60°; 6 o'clock is +90°).

const RAD = Math.PI / 180;

function num(value, path) {
  const v = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`${path} is not a number (${JSON.stringify(value)})`);
  return v;
}

function pair(value, path) {
  if (typeof value === "number" || typeof value === "string") { const v = num(value, path); return [v, v]; }
  if (!Array.isArray(value) || value.length < 1) throw new Error(`${path} must be [vertical, horizontal]`);
  return [num(value[0], `${path}[0]`), num(value[value.length - 1], `${path}[${value.length - 1}]`)];
}

// Alternative names of one field (the original's spelling and saxsdog's), as the calibration
// schema lists them (schemaform.exclusiveGroups of its Geometry): the page sets them when the
// schema arrives, so no spelling is written here.
let SPELLINGS = [];

/** Set the groups of alternative field names (from the calibration schema). */
export function setSpellings(groups) { SPELLINGS = Array.isArray(groups) ? groups : []; }

function alternatives(name) { return SPELLINGS.find(g => g.includes(name)) || [name]; }

/** The value of field `name` in `obj`, under whichever of its spellings `obj` uses. */
function field(obj, name) {
  for (const k of alternatives(name)) if (k in obj) return obj[k];
  return undefined;
}

/** The key `obj` uses for field `name` (the schema's first spelling when it has none). */
function keyIn(obj, name) {
  const alts = alternatives(name);
  return alts.find(k => k in obj) ?? alts[0];
}

/**
 * The geometry of a calibration object (either spelling of the distance and image size).
 * Throws an Error naming the missing or bad field.
 */
export function geometryFromCalibration(cal) {
  const g = cal && cal.Geometry;
  if (!g || typeof g !== "object") throw new Error("$.Geometry is missing");
  const dist = field(g, "DetectorDistanceMM");
  const size = field(g, "ImageSize");
  const tilt = g.Tilt || {};
  const geo = {
    shape: size === undefined ? null : pair(size, "$.Geometry.ImageSize").map(Math.round),
    beamCenter: pair(g.BeamCenter, "$.Geometry.BeamCenter"),
    distanceMM: num(dist, "$.Geometry.DetectorDistanceMM"),
    pixelUM: pair(g.PixelSizeMicroM, "$.Geometry.PixelSizeMicroM"),
    wavelengthA: num(cal.Wavelength, "$.Wavelength"),
    tiltDeg: num(tilt.TiltAngleDeg ?? 0, "$.Geometry.Tilt.TiltAngleDeg"),
    tiltRotDeg: num(tilt.TiltRotDeg ?? 0, "$.Geometry.Tilt.TiltRotDeg"),
  };
  if (!(geo.distanceMM > 0)) throw new Error("$.Geometry.DetectorDistanceMM must be > 0");
  if (!(geo.wavelengthA > 0)) throw new Error("$.Wavelength must be > 0");
  if (!(geo.pixelUM[0] > 0 && geo.pixelUM[1] > 0)) throw new Error("$.Geometry.PixelSizeMicroM must be > 0");
  return geo;
}

/** The geometry with `shape` set (the image's, when the calibration has no image size). */
export function withShape(geo, shape) {
  return geo.shape ? geo : { ...geo, shape: [shape[0], shape[1]] };
}

/** Horizontal (right) and vertical (up) offsets in mm from the beam centre of the continuous
 * image coordinates (row, col) counted from the top/left edges. */
export function offsetsMM(geo, row, col) {
  const [yc, xc] = geo.beamCenter;
  return [(col - xc) * geo.pixelUM[1] * 1e-3, ((geo.shape[0] - row) - yc) * geo.pixelUM[0] * 1e-3];
}

/** r·sin α: the in-plane offset's component along the beam. */
function alongBeam(geo, dx, dy) {
  const t = geo.tiltDeg * RAD, rot = geo.tiltRotDeg * RAD;
  return Math.sin(t) * (dx * Math.cos(rot) + dy * Math.sin(rot));
}

/** `{q (nm⁻¹), tth (degrees), chi (degrees)}` at continuous image coordinates (row, col). */
export function pointInfo(geo, row, col) {
  const [dx, dy] = offsetsMM(geo, row, col);
  const d = geo.distanceMM;
  const r2 = dx * dx + dy * dy;
  const u = alongBeam(geo, dx, dy);
  const l = Math.sqrt(d * d + r2 + 2 * d * u);
  // sin²θ without cancellation at small angles, as saxsdog.core.geometry does
  const sin2 = (r2 - u * u) / (2 * l * (l + d + u));
  const q = 4 * Math.PI / (geo.wavelengthA * 0.1) * Math.sqrt(Math.max(sin2, 0));
  const tth = Math.atan2(Math.sqrt(Math.max(r2 - u * u, 0)), d + u) / RAD;
  return { q, tth, chi: chiDeg(geo, dx, dy) };
}

/** χ in degrees for in-plane offsets (mm): clockwise on the image as read, in the lab frame. */
export function chiDeg(geo, dx, dy) {
  const t = geo.tiltDeg * RAD, rot = geo.tiltRotDeg * RAD;
  const c = Math.cos(rot), s = Math.sin(rot);
  const along = (dx * c + dy * s) * Math.cos(t);
  const across = -dx * s + dy * c;
  const h = along * c - across * s, v = along * s + across * c;
  return Math.atan2(-v, h) / RAD;
}

/** q, 2θ, χ at the centre of pixel (row, col) (integers), as saxsdog's per-pixel maps give them. */
export function pixelInfo(geo, row, col) { return pointInfo(geo, row + 0.5, col + 0.5); }

/** 2θ (radians) of a reflection with spacing `dA` (Å) at wavelength `wavelengthA`; NaN beyond 180°. */
export function ringTwoTheta(dA, wavelengthA) {
  const s = wavelengthA / (2 * dA);
  return s > 0 && s <= 1 ? 2 * Math.asin(s) : NaN;
}

/**
 * Points (continuous image coordinates `[row, col]`) of the ring at scattering angle `tth`
 * (radians), `n` directions around the beam centre; directions where the ring does not meet
 * the detector plane are left out (a run of points breaks there: `null` marks the gap).
 */
export function ringPoints(geo, tth, n = 360) {
  const out = [];
  const t = geo.tiltDeg * RAD, rot = geo.tiltRotDeg * RAD;
  const [yc, xc] = geo.beamCenter;
  const pv = geo.pixelUM[0] * 1e-3, ph = geo.pixelUM[1] * 1e-3;
  for (let k = 0; k <= n; k++) {
    const psi = (2 * Math.PI * k) / n;
    const sinA = Math.sin(t) * Math.cos(psi - rot);
    const alpha = Math.asin(Math.max(-1, Math.min(1, sinA)));
    // tan 2θ = r cos α / (d + r sin α)  ⇒  r = d sin 2θ / cos(2θ + α)
    const den = Math.cos(tth + alpha);
    if (!(den > 1e-9)) { if (out.length && out[out.length - 1] !== null) out.push(null); continue; }
    const r = geo.distanceMM * Math.sin(tth) / den;
    out.push([geo.shape[0] - yc - (r * Math.sin(psi)) / pv, xc + (r * Math.cos(psi)) / ph]);
  }
  return out;
}

/**
 * A copy of the calibration `cal` with the fitted `geometry` (the `geometry` of a
 * `calibrateimage` answer) put in: beam centre, distance, tilt, pixel size, image size and
 * wavelength, each in the spelling `cal` already uses; every other field kept.
 */
export function applyFit(cal, geometry) {
  const out = JSON.parse(JSON.stringify(cal || {}));
  const g = out.Geometry && typeof out.Geometry === "object" ? out.Geometry : (out.Geometry = {});
  g.BeamCenter = [geometry.BeamCenter[0], geometry.BeamCenter[1]];
  g[keyIn(g, "DetectorDistanceMM")] = geometry.DetectorDistanceMM;
  g[keyIn(g, "ImageSize")] = [geometry.ImageSize[0], geometry.ImageSize[1]];
  g.PixelSizeMicroM = [geometry.PixelSizeMicroM[0], geometry.PixelSizeMicroM[1]];
  g.Tilt = { ...(g.Tilt || {}), TiltAngleDeg: geometry.TiltAngleDeg, TiltRotDeg: geometry.TiltRotDeg };
  out.Wavelength = geometry.Wavelength;
  return out;
}
