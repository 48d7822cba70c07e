// The Calibration tab's "Absolute scale" panel: the server fits the factor (the `absolute`
// command, as `saxsdog absolute` does) on a chosen curve file on the server; the page puts the
// result into the form's Normalization.AbsoluteScale.

import { command } from "./api.js";
import { $, readFile, say } from "./dom.js";
import { S } from "./state.js";

const CURVE_RE = /\.(chi|h5|hdf5|nxs)$/i;

/** The newest curve file of a `fileslist` answer (its entries are in processing order), or null. */
export function latestCurveFile(fileslist) {
  const entries = Object.values(fileslist || {});
  for (let i = entries.length - 1; i >= 0; i--) {
    const out = (entries[i] && entries[i].outputs || []).find(o => CURVE_RE.test(o));
    if (out) return out;
  }
  return null;
}

/**
 * The `absolute` command's argument from the panel's fields, or `{error}` naming the field.
 * `fields`: {curve, standard ("water" | "reference"), temperature, reference (text), qMin, qMax}
 * as the inputs hold them (strings).
 */
export function absoluteArgument(fields) {
  const curve = String(fields.curve || "").trim();
  if (!curve) return { error: "Curve: give a .chi or NXcanSAS file on the server (or use the latest curve)." };
  const argument = { curve, standard: fields.standard === "reference" ? "reference" : "water" };
  if (argument.standard === "water") {
    const t = String(fields.temperature ?? "").trim();
    if (t) {
      const value = Number(t);
      if (!Number.isFinite(value) || value < 0 || value > 100) return { error: `Temperature: ${t} is not 0–100 °C.` };
      argument.temperature = value;
    }
  } else {
    if (!fields.reference) return { error: "Reference table: choose the file (q, dΣ/dΩ[, σ] per row)." };
    argument.reference = fields.reference;
  }
  const lo = String(fields.qMin ?? "").trim(), hi = String(fields.qMax ?? "").trim();
  if (lo || hi) {
    const a = Number(lo), b = Number(hi);
    if (!lo || !hi || !Number.isFinite(a) || !Number.isFinite(b) || !(a < b)) {
      return { error: "q range: give both ends, the first smaller (nm⁻¹), or neither." };
    }
    argument.q_range = [a, b];
  }
  return { argument };
}

/** A copy of `cal` whose Normalization.AbsoluteScale is `scale` (the rest untouched). */
export function withAbsoluteScale(cal, scale) {
  const copy = JSON.parse(JSON.stringify(cal || {}));
  const block = copy.Normalization && typeof copy.Normalization === "object" && !Array.isArray(copy.Normalization)
    ? copy.Normalization : {};
  copy.Normalization = { ...block, AbsoluteScale: scale };
  return copy;
}

/** `1.23456e-4, 3.2e-7` -> `"0.000123456 ± 3.2e-7"`. */
export function formatScale(value, uncertainty) {
  return `${Number(value.toPrecision(6))} ± ${Number(uncertainty.toPrecision(2))}`;
}

// ------------------------------------------------------------------ the panel (DOM)

let lastScale = null;

export async function useLatestCurve() {
  try {
    const r = await command("fileslist");
    const file = r.result === "Error" ? null : latestCurveFile(r.data.fileslist);
    if (!file) { say("#abs-msg", "No curve written yet by the queue.", "error"); return; }
    $("#abs-curve").value = file;
    say("#abs-msg", "");
  } catch (e) {
    say("#abs-msg", e.message, "error");
  }
}

export async function computeAbsolute(setCalibration) {
  const refFile = $("#abs-reference").files[0];
  const standard = $("#abs-standard").value;
  const made = absoluteArgument({
    curve: $("#abs-curve").value, standard, temperature: $("#abs-temperature").value,
    reference: standard === "reference" && refFile ? await readFile(refFile) : "",
    qMin: $("#abs-qmin").value, qMax: $("#abs-qmax").value,
  });
  $("#abs-apply").disabled = true;
  if (made.error) { say("#abs-msg", made.error, "error"); return; }
  say("#abs-msg", "Fitting…");
  try {
    const r = await command("absolute", made.argument);
    if (r.result === "Error") { say("#abs-msg", r.data.Error, "error"); return; }
    const d = r.data;
    lastScale = Number(d.absolute_scale.toPrecision(6));  // far finer than its uncertainty; reads well in the form
    $("#abs-report").textContent = d.report + `\nAbsoluteScale: ${formatScale(d.absolute_scale, d.fit.uncertainty * d.applied)}`;
    $("#abs-apply").disabled = false;
    $("#abs-apply").onclick = () => {
      setCalibration(withAbsoluteScale(S.cal, lastScale), `Normalization.AbsoluteScale set to ${lastScale}.`);
    };
    say("#abs-msg", "");
  } catch (e) {
    say("#abs-msg", e.message, "error");
  }
}

export function showStandardFields() {
  const water = $("#abs-standard").value === "water";
  $("#abs-water-fields").hidden = !water;
  $("#abs-reference-fields").hidden = water;
}
