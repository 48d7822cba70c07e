// SAXSDOG web leash: native ES modules, no build step, no external assets.
// Talks to the server through /api/* (JSON) and /ws (live results and statistics).  This module
// logs in, keeps the live connection, shows the connection state and wires the tabs.

import { computeAbsolute, showStandardFields, useLatestCurve } from "./absolute.js";
import { alarmBanner, averagesText } from "./alarms.js";
import { api, command, commandTable, getToken, health, onApi, queue, setCommandTable, setToken, settings } from "./api.js";
import { INSECURE_CONTEXT, challengeAnswer, launchCode, loginFailure } from "./auth.js";
import {
  browse, defaultCalibration, importConverted, loadFromServer, onCalFile, renderForm, saveCal,
  scheduleValidate, setCalibration, showPreview, startQueue,
} from "./calibration.js";
import { D, onDetectorResult, showDetector, wireDetector } from "./detector.js";
import { $, $$, setBadge } from "./dom.js";
import { drawHistory, drawProgress, history, refreshHistory, resetHistory } from "./history.js";
import { MERGE_EXAMPLE, mergeGet, mergeRun } from "./merge.js";
import { setSpellings } from "./geometry.js";
import { exclusiveGroups } from "./schemaform.js";
import { drawPlot, onResult, refreshPlot } from "./plots.js";
import { filesMaybeChanged, refreshFiles, renderStat, serverCommand } from "./server.js";
import { S } from "./state.js";

// for tests and for looking at from the browser console
window.saxsdogLeash = { settings, health, queue, S, detector: D };

// ------------------------------------------------------------------ connection state

function showHealth() {
  const b = health.badge();
  setBadge("#conn", b.text, b.kind, b.title);
}
onApi("health", showHealth);
onApi("unauthorized", () => showLogin("Your session ended: log in again."));

let ws = null;
let wsRetry = null;
let probing = false;

// Every second: update the badge; while the server is not answering, ask it something small
// (which clears the state once answered), and replace a live connection that fell silent.
setInterval(() => {
  if ($("#app").hidden) return;
  showHealth();
  if (health.state !== "not answering") return;
  if (!probing) {
    probing = true;
    command("stat", undefined, undefined, { background: true, key: "probe", timeoutMs: 5000 })
      .catch(() => {}).finally(() => { probing = false; });
  }
  if (ws && health.silence() > 3 * settings.staleMs) {
    const old = ws;
    ws = null;
    try { old.close(); } catch (e) { /* gone */ }
    connectWS();
  }
}, 1000);

function connectWS() {
  if (ws && ws.readyState <= 1) return;
  clearTimeout(wsRetry);
  const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws = socket;
  socket.onopen = () => {
    if (ws !== socket) return;
    if (getToken()) socket.send(JSON.stringify({ type: "auth", token: getToken() }));
    health.wsOpened();
    showHealth();
  };
  socket.onmessage = ev => {
    if (ws !== socket) return;
    health.wsMessage();
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type === "result") { onResult(msg); onDetectorResult(); }
    else if (msg.type === "stat") onStat(msg);
    showHealth();
  };
  socket.onclose = ev => {
    if (ws !== socket) return;
    ws = null;
    health.wsClosed();
    showHealth();
    if (ev.code === 4401 || ev.code === 1008) { showLogin("Your session ended: log in again."); return; }
    if (!$("#app").hidden) wsRetry = setTimeout(connectWS, 2000);
  };
}

function onStat(msg) {
  const st = msg.stat || {};
  S.stat = st;
  S.running = !!msg.running;
  setBadge("#queue-state", S.running ? `queue: ${st["images processed"] || 0} done, ${st["queue length"] || 0} waiting`
    : "no queue", S.running ? "on" : "off");
  S.statSamples.push({ t: st.time, fps: st["frames per sec"] || 0, processed: st["images processed"] || 0,
    queue: st["queue length"] || 0 });
  if (S.statSamples.length > 3600) S.statSamples.shift();
  renderStat(st);
  const banner = alarmBanner(st);  // classifier alarms: visible on every tab
  $("#alarm-banner").hidden = banner === null;
  $("#alarm-banner").textContent = banner || "";
  const averages = averagesText(st);  // the Average block's merged groups, live
  $("#hist-averages").hidden = averages === null;
  $("#hist-averages").textContent = averages || "";
  const key = S.running ? String(st["start time"]) : null;
  if (key !== null && key !== history.key) resetHistory(key);  // a closed queue's history stays shown
  if (S.running && st["images processed"] !== history.lastCount) refreshHistory();
  else if (S.activeTab === "history") drawProgress();
  if (S.running) filesMaybeChanged(st);
}

// ------------------------------------------------------------------ login

function showLogin(message = "") {
  setToken(null);
  if (ws) { const old = ws; ws = null; try { old.close(); } catch (e) { /* closed */ } }
  health.wsClosed();
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  showHealth();
  $("#secret").focus();
}

async function loginWith(body) {
  const r = await api("/api/login", body, { quiet401: true });
  setToken(r.token);
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const input = $("#secret");
  const secret = input.value.trim();
  if (!secret) return;
  if (!window.crypto || !crypto.subtle) {
    $("#login-error").textContent = INSECURE_CONTEXT;
    return;
  }
  $("#login-button").disabled = true;
  try {
    const { nonce } = await api("/api/challenge", undefined, { quiet401: true });
    await loginWith(await challengeAnswer(secret, nonce));
    input.value = "";
    await enterApp();
  } catch (e) {
    $("#login-error").textContent = loginFailure(e);
  } finally {
    $("#login-button").disabled = false;
  }
}

async function logout() {
  try { await api("/api/logout", {}); } catch (e) { /* already gone */ }
  showLogin("Logged out.");
}

async function startup() {
  const code = launchCode(location.hash);
  if (code) {
    dropFragment();
    try {
      await loginWith({ code });
      return enterApp();
    } catch (e) {
      showLogin("The launch link was already used or has expired (links last 60 s): run leash again, " +
        "or log in with the shared secret.");
      return;
    }
  }
  let sess = null;
  try { sess = await api("/api/session", undefined, { quiet401: true }); } catch (e) { sess = null; }
  if (sess && sess.ok) await enterApp(); else showLogin();
}

function dropFragment() {  // the code is single-use anyway: keep it out of the address bar
  window.history.replaceState(null, "", location.pathname + location.search);
}

async function enterApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  const sess = await api("/api/session");
  if (!sess.ok) { showLogin(); return; }
  $("#server-name").textContent = sess.basedir ? "base directory: " + sess.basedir : "";
  if (!S.schema) {
    S.schema = await api("/api/schema/calibration");
    setSpellings(exclusiveGroups(S.schema.properties.Geometry));
  }
  if (!commandTable.size) setCommandTable((await command("commands")).data.commands);  // names and deadlines
  if (!S.cal) {
    S.cal = defaultCalibration();
    await loadFromServer(true);
  }
  renderForm();
  scheduleValidate(0);
  connectWS();
  refreshPlot();
}

// ------------------------------------------------------------------ tabs and wiring

function showTab(name) {
  S.activeTab = name;
  $$(".tabs button").forEach(b => b.classList.toggle("active", b.dataset.tab === name));
  $$(".tab").forEach(t => t.classList.toggle("active", t.id === "tab-" + name));
  if (name === "plots") { drawPlot(); if (!S.latest) refreshPlot(); }
  if (name === "history") { drawHistory(); refreshHistory(true); }
  if (name === "server") refreshFiles();
  if (name === "detector") showDetector();
  if (window.Plotly) $$(`#tab-${name} .js-plotly-plot`).forEach(d => Plotly.Plots.resize(d));
}

function wire() {
  $("#login-form").addEventListener("submit", onLoginSubmit);
  $("#logout").addEventListener("click", logout);
  $("#cal-form").addEventListener("submit", e => e.preventDefault());
  $$(".tabs button").forEach(b => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#cal-file").addEventListener("change", onCalFile);
  $("#cal-save").addEventListener("click", saveCal);
  $("#cal-defaults").addEventListener("click", () => setCalibration(defaultCalibration(), "A new calibration with the schema's defaults."));
  $("#cal-from-server").addEventListener("click", () => loadFromServer(false));
  const importFile = (url, what) => async ev => {
    const f = ev.target.files[0]; ev.target.value = "";
    if (f) importConverted(url, await f.text(), what);
  };
  $("#fit2d-file").addEventListener("change", importFile("/api/convert/fit2d", "FIT2D"));
  $("#poni-file").addEventListener("change", importFile("/api/convert/poni", "PONI"));
  $("#fit2d-convert").addEventListener("click", () => importConverted("/api/convert/fit2d", $("#fit2d-text").value, "FIT2D"));
  $("#browse-dir").addEventListener("click", () => browse("dir"));
  $("#browse-image").addEventListener("click", () => browse("image"));
  $("#start-queue").addEventListener("click", () => startQueue("#start-msg"));
  $("#preview-button").addEventListener("click", showPreview);
  $("#abs-latest").addEventListener("click", useLatestCurve);
  $("#abs-standard").addEventListener("change", showStandardFields);
  $("#abs-compute").addEventListener("click", () => computeAbsolute(setCalibration));
  for (const id of ["#logx", "#logy", "#band-poisson", "#band-std"]) $(id).addEventListener("change", drawPlot);
  $("#plot-refresh").addEventListener("click", () => { S.latest = null; refreshPlot(); });
  $("#hist-dir").addEventListener("change", drawHistory);
  $("#hist-x").addEventListener("change", drawHistory);
  $("#hist-classifier").addEventListener("change", drawHistory);
  $("#hist-refresh").addEventListener("click", () => { resetHistory(history.key); refreshHistory(true); });
  $("#srv-new").addEventListener("click", () => startQueue("#srv-msg"));
  $("#srv-close").addEventListener("click", () => serverCommand("close"));
  $("#srv-abort").addEventListener("click", () => { if (confirm("Abort the queue and drop the waiting images?")) serverCommand("abort"); });
  $("#srv-readdir").addEventListener("click", () => serverCommand("readdir"));
  $("#srv-files").addEventListener("click", () => refreshFiles());
  $("#merge-conf").value = JSON.stringify(MERGE_EXAMPLE, null, 2);
  $("#merge-logs").addEventListener("change", ev =>
    $("#merge-logs-names").textContent = Array.from(ev.target.files, f => f.name).join(", "));
  $("#merge-run").addEventListener("click", mergeRun);
  $("#merge-get").addEventListener("click", mergeGet);
  wireDetector();
  window.addEventListener("resize", () => {
    if (window.Plotly) $$(".tab.active .js-plotly-plot").forEach(d => Plotly.Plots.resize(d));
  });
}

wire();
startup();
