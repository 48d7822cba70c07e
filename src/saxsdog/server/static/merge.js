// The Consolidate tab: merge log tables with the images' header data (`mergedata`) and show
// the merged table (`getmergedata`).

import { command } from "./api.js";
import { $, el, readFile, say, toBase64 } from "./dom.js";
import { fmtNum } from "./plots.js";

export const MERGE_EXAMPLE = {
  LogDataTables: [{ Name: "log", Files: [{ RemotePath: ["logs", "run.log"] }], TimeEpoch: "Unix", TimeOffset: 0,
    FirstImageCorrelation: false }],
  TimeOffset: 0,
  OutputFormats: { csv: true, json: false, hdf: false, exel: false },
  OutputFileName: "../results/merged",
  HDFOptions: { IncludeCHI: false, IncludeTIF: false },
};

/** The LocalPath names of a merge configuration (files the browser must send along), once each. */
export function mergeLocalPaths(conf) {
  const names = [];
  for (const table of (conf && Array.isArray(conf.LogDataTables)) ? conf.LogDataTables : [])
    for (const f of (table && Array.isArray(table.Files)) ? table.Files : [])
      if (f && typeof f.LocalPath === "string" && f.LocalPath && !names.includes(f.LocalPath)) names.push(f.LocalPath);
  return names;
}

/** The chosen file for a LocalPath: same name, else same last component (Windows or POSIX). */
export function pickLocalFile(local, files) {
  const base = local.split(/[\\/]/).pop();
  return files.find(f => f.name === local) || files.find(f => f.name === base) || null;
}

/** A merged table cell: epoch times to the ms, counts as they are, other numbers to 6 digits. */
export function mergeCell(v, isTime) {
  if (v === null) return "";
  if (typeof v !== "number") return String(v);
  return isTime ? v.toFixed(3) : Number.isInteger(v) ? String(v) : fmtNum(v, 6);
}

export async function mergeRun() {
  let conf;
  try { conf = JSON.parse($("#merge-conf").value); } catch (e) { say("#merge-msg", "Not JSON: " + e.message, "error"); return; }
  const picked = Array.from($("#merge-logs").files || []);
  const filenames = [], attachments = [];
  for (const local of mergeLocalPaths(conf)) {
    const file = pickLocalFile(local, picked);
    if (!file) {
      say("#merge-msg", `LocalPath ${local}: choose this file under "Log files from this computer" (or use RemotePath for a file on the server).`, "error");
      return;
    }
    filenames.push(local);
    attachments.push(toBase64(await readFile(file, "binary")));
  }
  try {
    const r = await command("mergedata", { mergeconf: conf, filenames }, attachments);
    if (r.result === "Error") { say("#merge-msg", r.data.Error, "error"); return; }
    const written = Object.values(r.data.written || {});
    say("#merge-msg", `Merged ${r.data.rows} row(s) with ${(r.data.columns || []).length} column(s).`
      + (written.length ? ` Wrote ${written.join(", ")}.` : ""), "ok");
  } catch (e) { say("#merge-msg", e.message, "error"); }
}

export async function mergeGet() {
  try {
    const r = await command("getmergedata");
    if (r.result === "Error") { say("#merge-msg", r.data.Error, "error"); return; }
    const d = r.data.data;
    const isTime = d.columns.map(c => c === "image_time" || /^time\b/.test(c));
    $("#merge-table").replaceChildren(el("tr", {}, d.columns.map(c => el("th", { text: c }))),
      ...d.rows.slice(0, 2000).map(row => el("tr", {}, row.map((v, k) => el("td", { text: mergeCell(v, isTime[k]) })))));
    say("#merge-msg", `${d.rows.length} row(s)` + (d.rows.length > 2000 ? " (first 2000 shown)" : ""), "ok");
  } catch (e) { say("#merge-msg", e.message, "error"); }
}
