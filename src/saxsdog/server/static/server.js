// The Server tab: queue statistics, the live file list with the output folder, and the queue
// commands (close, abort, read directory).

import { command } from "./api.js";
import { $, el, kvRows, say } from "./dom.js";
import { fmtNum } from "./plots.js";
import { S } from "./state.js";

function dirname(path) {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : path.slice(0, i);
}

/**
 * Summary of a `fileslist` answer: images per state, the failed ones `[[name, state, reason]]`,
 * and the folders the outputs were written to (relative to the base directory).
 */
export function summarizeFiles(files) {
  const counts = {};
  const failed = [];
  const folders = new Set();
  for (const [name, f] of Object.entries(files || {})) {
    counts[f.state] = (counts[f.state] || 0) + 1;
    if (f.state === "failed" || f.error) failed.push([name, f.state, f.error || ""]);
    for (const o of f.outputs || []) folders.add(dirname(o));
  }
  return { counts, failed, outputFolders: [...folders].sort() };
}

/** The rows of the queue table for a `stat` message. */
export function statRows(st, running) {
  return [
    ["queue", running ? "running" : "none"],
    ["directory", st.directory ?? "–"],
    ["queue length", st["queue length"] ?? 0],
    ["images processed", st["images processed"] ?? 0],
    ["images failed", st["images failed"] ?? 0],
    ["frames per second", fmtNum(st["frames per sec"] ?? 0, 3)],
    ["running for", st["time interval"] !== undefined ? `${Math.round(st["time interval"])} s` : "–"],
    ["worker restarts", st["worker restarts"] ?? 0],
    ["feeder events rejected", st["feeder events rejected"] ?? 0],
  ];
}

export function renderStat(st) {
  kvRows($("#stat-table"), statRows(st, S.running));
  const stages = st["stage seconds"] || {};
  kvRows($("#stage-table"), Object.keys(stages).length
    ? Object.entries(stages).map(([k, v]) => [k, `${fmtNum((v || 0) * 1000, 3)} ms`])
    : [["no images yet", ""]]);
}

let lastFilesFetch = 0;
let filesTimer = null;
const seen = { processed: -1, failed: -1 };

/** After a `stat` message: refresh the file list when it changed (live while the tab shows). */
export function filesMaybeChanged(st) {
  const processed = st["images processed"], failed = st["images failed"];
  const changed = processed !== seen.processed || failed !== seen.failed;
  const failures = failed !== seen.failed;
  seen.processed = processed;
  seen.failed = failed;
  if (changed && (S.activeTab === "server" || failures)) refreshFiles(false);
}

/** Fetch the file list (at most once a second unless `force`). */
export async function refreshFiles(force = true) {
  const now = Date.now();
  if (!force && now - lastFilesFetch < 1000) {
    if (filesTimer === null) filesTimer = setTimeout(() => { filesTimer = null; refreshFiles(false); }, 1000 - (now - lastFilesFetch));
    return;
  }
  lastFilesFetch = now;
  try {
    const r = await command("fileslist", undefined, undefined, { background: true, key: "fileslist" });
    if (r.result === "Error") {
      kvRows($("#state-table"), [["no queue", ""]]);
      $("#output-folder").textContent = "–";
      return;
    }
    const { counts, failed, outputFolders } = summarizeFiles(r.data.fileslist);
    kvRows($("#state-table"), Object.keys(counts).length ? Object.entries(counts) : [["no files yet", ""]]);
    $("#output-folder").textContent = outputFolders.length ? outputFolders.join(", ") : "none written yet";
    const ft = $("#fail-table");
    if (!failed.length) ft.replaceChildren(el("tr", {}, el("td", { class: "muted", text: "none" })));
    else ft.replaceChildren(el("tr", {}, el("th", { text: "file" }), el("th", { text: "state" }), el("th", { text: "reason" })),
      ...failed.slice(0, 1000).map(([n, s, e]) => el("tr", {}, el("td", { text: n }), el("td", { text: s }), el("td", { text: e }))));
  } catch (e) { say("#srv-msg", e.message, "error"); }
}

export async function serverCommand(name) {
  say("#srv-msg", `${name}…`);
  try {
    const r = await command(name);  // its deadline is the table's: close waits for the queue
    if (r.result === "Error") say("#srv-msg", r.data.Error, "error");
    else say("#srv-msg", r.result + (r.data && r.data.queued !== undefined ? `: ${r.data.queued} image(s) queued` : ""), "ok");
    refreshFiles();
  } catch (e) { say("#srv-msg", e.message, "error"); }
}
