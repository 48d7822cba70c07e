// Classifier values and alarms on the page: pure helpers (unit-tested under node --test).

/** Keys of `plotdata`'s history that every answer has; the rest are classifier columns. */
export const BASE_KEYS = new Set(["path", "frame", "time", "processed", "I0", "I1", "I2", "invariant",
  "correlation_length", "error", "alarms"]);

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
