// Classifier values and alarms on the page: pure helpers (unit-tested under node --test).

/** Keys of `plotdata`'s history that every answer has; the rest are classifier columns. */
export const BASE_KEYS = new Set(["path", "frame", "time", "processed", "I0", "I1", "I2", "invariant",
  "correlation_length", "error", "alarms", "dummy_pixels", "rejected_pixels",
  // the first integrator's background-subtracted curve (drawn dashed on the History tab's plots)
  "I0_sub", "I1_sub", "I2_sub", "invariant_sub", "correlation_length_sub"]);

/** The banner for a `stat` answer: `null` when no frame raised an alarm. */
export function alarmBanner(stat) {
  const n = (stat && stat.alarms) || 0;
  if (!n) return null;
  const latest = stat["latest alarm"];
  const what = latest && latest.alarms && latest.alarms.length ? `: ${latest.name}: ${latest.alarms.join("; ")}` : "";
  return `⚠ ${n} frame${n === 1 ? "" : "s"} in alarm${what}`;
}

/** The classifier columns of the merged rows that hold numbers somewhere (for the plot's choice). */
export function classifierKeys(rows) {
  const keys = new Set();
  for (const r of rows) {
    for (const [k, v] of Object.entries(r.values || {})) if (typeof v === "number") keys.add(k);
  }
  return [...keys].sort();
}

/** The classifier values (and the alarm text) of row `i` of a `plotdata` history. */
export function rowValues(d, i) {
  const values = {};
  for (const k of Object.keys(d)) if (!BASE_KEYS.has(k)) values[k] = d[k][i];
  return { values, alarm: (d.alarms && d.alarms[i]) || "" };
}

/**
 * The chosen classifier as a scan map: `{ z, rows, cols, alarm }` (`z[row][col]`, null where no
 * frame is; `alarm[row][col]` true for frames in alarm), from each row's place in the raster
 * (`Scan.row`/`Scan.column`, set by the server when the calibration has a `Scan` block).
 * `null` when no frame has a place.  A frame processed again replaces its point (the later row).
 */
export function scanGrid(rows, key) {
  const placed = rows.filter(r => r.values && Number.isInteger(r.values["Scan.row"]) &&
    Number.isInteger(r.values["Scan.column"]));
  if (!placed.length) return null;
  const nRows = Math.max(...placed.map(r => r.values["Scan.row"])) + 1;
  const nCols = Math.max(...placed.map(r => r.values["Scan.column"])) + 1;
  const z = Array.from({ length: nRows }, () => new Array(nCols).fill(null));
  const alarm = Array.from({ length: nRows }, () => new Array(nCols).fill(false));
  for (const r of placed) {
    const v = r.values[key];
    z[r.values["Scan.row"]][r.values["Scan.column"]] = typeof v === "number" ? v : null;
    alarm[r.values["Scan.row"]][r.values["Scan.column"]] = !!r.alarm;
  }
  return { z, rows: nRows, cols: nCols, alarm };
}

/** Keys of a frame's parameters shown in the integral parameters' own table columns. */
export const INTEGRAL_KEYS = new Set(["I0", "I1", "I2", "invariant", "correlation_length", "dummy_pixels",
  "rejected_pixels"]);

/**
 * The classifier values of the latest curve's parameters (`{integrator: {key: value}}`), as
 * `[integrator, key, value]` rows for the Plots tab's table (the integral parameters have
 * their own table; an empty alarm text is left out).
 */
export function classifierTableRows(parameters) {
  const out = [];
  for (const [name, p] of Object.entries(parameters || {})) {
    if (!p || typeof p !== "object") continue;
    for (const [k, v] of Object.entries(p)) {
      if (INTEGRAL_KEYS.has(k) || (k === "alarms" && !v)) continue;
      out.push([name, k, v]);
    }
  }
  return out;
}

/**
 * The live averaging's line for a `stat` answer (the latest groups, most recent first:
 * kept and rejected frames of each), or `null` when the calibration averages nothing.
 */
export function averagesText(stat, most = 5) {
  const groups = Object.values((stat && stat.averages) || {});
  if (!groups.length) return null;
  const parts = groups.slice(-most).reverse().map(g =>
    `${g.group}: ${g.kept} kept, ${g.rejected} rejected${g.complete ? "" : " (so far)"}`);
  return `Averages (results/averages/): ${parts.join(" · ")}`;
}
