// SAXSDOG web leash: plain modern JavaScript, no build step, no external assets.
// Talks to the server through /api/* (JSON) and /ws (live results and statistics).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const S = {
  token: null,          // session token (also an HttpOnly cookie); memory only
  schema: null,         // the calibration JSON Schema
  cal: null,            // the calibration being edited
  maskFiles: {},        // mask index -> {name, data (base64)}
  clientErrors: {},     // JSON path -> message (type checks in the page)
  serverErrors: {},     // JSON path -> [messages] (from /api/validate)
  ws: null,
  wsRetry: null,
  stat: null,
  running: false,
  latest: null,         // latest result message (curves)
  statSamples: [],      // [{t, fps, processed, queue}]
  history: { key: null, rows: new Map(), until: 0, noSince: false, busy: false, lastCount: -1, lastFetch: 0 },
  files: { lastFailed: -1 },
  activeTab: "calibration",
  browser: { mode: "dir", path: ["."] },
};

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, body, { raw = false, quiet401 = false } = {}) {
  const opts = { method: body === undefined ? "GET" : "POST", credentials: "same-origin", headers: {} };
  if (S.token) opts.headers["Authorization"] = "Bearer " + S.token;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401 && !quiet401) showLogin("Your session ended: log in again.");
  if (raw && r.ok) return r;
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const msg = (data && data.data && data.data.Error) || `${r.status} ${r.statusText}`;
    throw new ApiError(msg, r.status);
  }
  return data;
}

async function command(name, argument, attachments) {
  const body = { command: name };
  if (argument !== undefined) body.argument = argument;
  if (attachments && attachments.length) body.attachments = attachments;
  return api("/api/command", body);
}

function say(target, text, kind = "") {
  const node = typeof target === "string" ? $(target) : target;
  node.textContent = text;
  node.className = "msg" + (kind ? " " + kind : "");
}

// ------------------------------------------------------------------ login

async function hmacHex(secret, message) {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" },
    false, ["sign"]);
  const sig = await crypto.subtle.sign("HMAC", key, enc.encode(message));
  return Array.from(new Uint8Array(sig), b => b.toString(16).padStart(2, "0")).join("");
}

async function loginWith(body) {
  const r = await api("/api/login", body, { quiet401: true });
  S.token = r.token;
}

function showLogin(message = "") {
  S.token = null;
  if (S.ws) { try { S.ws.close(); } catch (e) { /* closed */ } S.ws = null; }
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  setBadge("#conn", "offline", "off");
  $("#secret").focus();
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const input = $("#secret");
  const secret = input.value.trim();
  if (!secret) return;
  if (!window.crypto || !crypto.subtle) {
    $("#login-error").textContent = "This page is not a secure context, so the browser cannot compute the " +
      "login proof. Open it as http://127.0.0.1:PORT or http://localhost:PORT (an SSH tunnel works), " +
      "or start it with the leash command.";
    return;
  }
  $("#login-button").disabled = true;
  try {
    const { nonce } = await api("/api/challenge", undefined, { quiet401: true });
    const mac = await hmacHex(secret, nonce);
    await loginWith({ nonce, mac });
    input.value = "";
    await enterApp();
  } catch (e) {
    $("#login-error").textContent = e.status === 401 ? "Wrong secret." : "Login failed: " + e.message;
  } finally {
    $("#login-button").disabled = false;
  }
}

async function logout() {
  try { await api("/api/logout", {}); } catch (e) { /* already gone */ }
  showLogin("Logged out.");
}

async function startup() {
  const m = location.hash.match(/(?:^#|&)code=([A-Za-z0-9_-]+)/);
  if (m) {
    history.replaceState(null, "", location.pathname + location.search);  // the code is single-use anyway
    try {
      await loginWith({ code: m[1] });
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

async function enterApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  const sess = await api("/api/session");
  if (!sess.ok) { showLogin(); return; }
  $("#server-name").textContent = sess.basedir ? "base directory: " + sess.basedir : "";
  if (!S.schema) S.schema = await api("/api/schema/calibration");
  if (!S.cal) {
    S.cal = makeDefault(S.schema);
    await loadFromServer(true);
  }
  renderForm();
  scheduleValidate(0);
  connectWS();
  refreshPlot();
}

// ------------------------------------------------------------------ WebSocket

function setBadge(sel, text, kind) {
  const b = $(sel);
  b.textContent = text;
  b.className = "badge " + kind;
}

function connectWS() {
  if (S.ws && S.ws.readyState <= 1) return;
  clearTimeout(S.wsRetry);
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  S.ws = ws;
  ws.onopen = () => {
    if (S.token) ws.send(JSON.stringify({ type: "auth", token: S.token }));
    setBadge("#conn", "live", "on");
  };
  ws.onmessage = ev => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type === "result") onResult(msg);
    else if (msg.type === "stat") onStat(msg);
  };
  ws.onclose = ev => {
    if (S.ws !== ws) return;
    S.ws = null;
    setBadge("#conn", "offline", "off");
    if (ev.code === 4401 || ev.code === 1008) { showLogin("Your session ended: log in again."); return; }
    if (!$("#app").hidden) S.wsRetry = setTimeout(connectWS, 2000);
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
  const key = S.running ? String(st["start time"]) : null;
  if (key !== null && key !== S.history.key) resetHistory(key);  // a closed queue's history stays shown
  if (S.running && st["images processed"] !== S.history.lastCount) refreshHistory();
  else if (S.activeTab === "history") drawProgress();
  if (S.running && st["images failed"] !== S.files.lastFailed) {
    S.files.lastFailed = st["images failed"];
    refreshFiles();
  }
}

// ------------------------------------------------------------------ schema form

function typeOf(schema) {
  if (!schema) return "any";
  if (schema.enum) return "enum";
  let t = schema.type;
  if (Array.isArray(t)) t = t.find(x => x !== "null") || t[0];
  if (t) return t;
  if (schema.properties) return "object";
  if (schema.items) return "array";
  return "any";
}

function clone(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }

function makeDefault(schema) {
  if (schema.default !== undefined) return clone(schema.default);
  switch (typeOf(schema)) {
    case "object": {
      const o = {};
      const req = schema.required || [];
      for (const [k, sub] of Object.entries(schema.properties || {})) {
        if (sub.default !== undefined || req.includes(k)) o[k] = makeDefault(sub);
      }
      return o;
    }
    case "array": {
      const n = Math.max(schema.minItems || 0, 1);
      return schema.items ? Array.from({ length: n }, () => makeDefault(schema.items)) : [];
    }
    case "enum": return clone(schema.enum[0]);
    case "number": case "integer": return schema.minimum !== undefined ? schema.minimum : 0;
    case "boolean": return false;
    case "string": return "";
    default: return null;
  }
}

function toPath(parts) {
  return "$" + parts.map(p => typeof p === "number" ? `[${p}]` : `.${p}`).join("");
}

function getAt(parts) {
  let v = S.cal;
  for (const p of parts) { if (v === null || v === undefined) return undefined; v = v[p]; }
  return v;
}

function setAt(parts, value) {
  let v = S.cal;
  for (const p of parts.slice(0, -1)) v = v[p];
  v[parts[parts.length - 1]] = value;
}

function deleteAt(parts) {
  let v = S.cal;
  for (const p of parts.slice(0, -1)) v = v[p];
  const last = parts[parts.length - 1];
  if (Array.isArray(v)) v.splice(last, 1); else delete v[last];
}

function descIcon(schema) {
  return schema && schema.description ? el("span", { class: "desc", title: schema.description, text: "?" }) : null;
}

function errSlot(path, extra = "") {
  return el("div", { class: "err " + extra, "data-err-path": path, role: "alert" });
}

function renderForm() {
  if (!S.schema || !S.cal) return;  // enterApp() renders once the schema is here
  const form = $("#cal-form");
  const scrollY = window.scrollY;
  form.replaceChildren(renderObject(S.schema, [], "Calibration", { root: true }));
  renderMaskFiles();
  paintErrors();
  window.scrollTo(0, scrollY);
}

function renderNode(schema, parts, label, opts = {}) {
  const t = typeOf(schema);
  if (t === "object") return renderObject(schema, parts, label, opts);
  if (t === "array") return renderArray(schema, parts, label, opts);
  return renderField(schema, parts, label, opts);
}

function removeButton(parts, what) {
  return el("button", {
    type: "button", class: "small remove", title: "remove " + what, text: "×",
    onclick: () => { deleteAt(parts); afterStructureChange(parts); },
  });
}

function afterStructureChange(parts) {
  if (parts && parts[0] === "Masks" && parts.length === 2 && typeof parts[1] === "number") shiftMaskFiles(parts[1]);
  renderForm();
  scheduleValidate();
}

function renderObject(schema, parts, label, opts = {}) {
  const value = getAt(parts);
  const path = toPath(parts);
  const fs = el("fieldset", { class: "obj", "data-path": path });
  if (!opts.root) {
    fs.append(el("legend", {}, label, descIcon(schema), opts.removable ? removeButton(parts, label) : null));
  } else {
    fs.append(el("legend", {}, "Calibration", descIcon(schema)));
  }
  fs.append(errSlot(path, "obj-err"));
  const req = schema.required || [];
  const missing = [];
  for (const [key, sub] of Object.entries(schema.properties || {})) {
    const childParts = parts.concat([key]);
    if (value && Object.prototype.hasOwnProperty.call(value, key)) {
      fs.append(renderNode(sub, childParts, key, { removable: !req.includes(key), required: req.includes(key) }));
    } else {
      missing.push([key, sub]);
    }
  }
  if (missing.length) {
    const box = el("div", { class: "addprops" });
    for (const [key, sub] of missing) {
      box.append(el("button", {
        type: "button", class: "small", title: (sub.description || "") + (req.includes(key) ? " (required)" : ""),
        text: "+ " + key, "data-add": toPath(parts.concat([key])),
        onclick: () => { setAt(parts.concat([key]), makeDefault(sub)); afterStructureChange(); },
      }));
    }
    fs.append(box);
  }
  return fs;
}

function renderArray(schema, parts, label, opts = {}) {
  const value = getAt(parts);
  const path = toPath(parts);
  const items = Array.isArray(value) ? value : [];
  const itemSchema = schema.items || {};
  const min = schema.minItems || 0;
  const max = schema.maxItems === undefined ? Infinity : schema.maxItems;
  const add = el("button", {
    type: "button", class: "small", text: "+ add", title: "add an item to " + label, "data-add": path,
    disabled: items.length >= max,
    onclick: () => { getAt(parts).push(makeDefault(itemSchema)); afterStructureChange(); },
  });
  if (!Array.isArray(value)) {
    return el("div", { class: "field", "data-path": path },
      el("label", {}, label, descIcon(schema)),
      el("div", { class: "control" }, el("span", { class: "error", text: "not a list" }),
        el("button", { type: "button", class: "small", text: "reset",
          onclick: () => { setAt(parts, makeDefault(schema)); afterStructureChange(); } })),
      errSlot(path));
  }
  const itemType = typeOf(itemSchema);
  if (itemType === "object" || itemType === "array") {
    const fs = el("fieldset", { class: "arr", "data-path": path },
      el("legend", {}, `${label} (${items.length})`, descIcon(schema), " ", add,
        opts.removable ? removeButton(parts, label) : null),
      errSlot(path, "obj-err"));
    items.forEach((_, i) => {
      fs.append(renderNode(itemSchema, parts.concat([i]), `${label}[${i}]`, { removable: items.length > min }));
    });
    return fs;
  }
  // a list of simple values in one row
  const control = el("div", { class: "control arr-items" });
  items.forEach((_, i) => {
    const cell = el("span", { class: "arr-item", "data-path": toPath(parts.concat([i])) },
      makeInput(itemSchema, parts.concat([i]), `${label}[${i}]`),
      items.length > min ? removeButton(parts.concat([i]), `${label}[${i}]`) : null);
    control.append(cell);
  });
  control.append(add);
  if (opts.removable) control.append(removeButton(parts, label));
  const box = el("div", { class: "field", "data-path": path },
    el("label", { title: schema.description || "" }, label, descIcon(schema)), control, errSlot(path));
  items.forEach((_, i) => box.append(errSlot(toPath(parts.concat([i])))));
  return box;
}

function renderField(schema, parts, label, opts = {}) {
  const path = toPath(parts);
  const input = makeInput(schema, parts, label);
  const id = "f" + path.replace(/[^A-Za-z0-9]/g, "_");
  input.id = id;
  return el("div", { class: "field", "data-path": path },
    el("label", { for: id, title: schema.description || "" }, label, opts.required ? " *" : "", descIcon(schema)),
    el("div", { class: "control" }, input, opts.removable ? removeButton(parts, label) : null),
    errSlot(path));
}

function makeInput(schema, parts, label) {
  const t = typeOf(schema);
  const path = toPath(parts);
  const value = getAt(parts);
  let input;
  if (t === "enum") {
    input = el("select", { "data-path-input": path, "aria-label": label });
    for (const opt of schema.enum) {
      const o = el("option", { value: JSON.stringify(opt), text: String(opt) });
      if (JSON.stringify(opt) === JSON.stringify(value)) o.selected = true;
      input.append(o);
    }
    input.addEventListener("change", () => { setAt(parts, JSON.parse(input.value)); onFieldChanged(path); });
  } else if (t === "boolean") {
    input = el("input", { type: "checkbox", "data-path-input": path, "aria-label": label });
    input.checked = value === true;
    input.addEventListener("change", () => { setAt(parts, input.checked); onFieldChanged(path); });
  } else {
    input = el("input", { type: "text", "data-path-input": path, "aria-label": label, spellcheck: "false",
      inputmode: (t === "number" || t === "integer") ? "decimal" : null,
      class: t === "string" ? "wide" : null, title: schema.description || "" });
    input.value = value === undefined || value === null ? "" : (typeof value === "string" ? value : String(value));
    if (typeof value === "object" && value !== null) input.value = JSON.stringify(value);
    input.addEventListener("input", () => {
      const { value: v, error } = parseValue(schema, input.value);
      setAt(parts, v);
      if (error) S.clientErrors[path] = error; else delete S.clientErrors[path];
      onFieldChanged(path, true);
    });
  }
  return input;
}

function parseValue(schema, text) {
  const t = typeOf(schema);
  if (t === "number" || t === "integer") {
    const s = text.trim();
    if (s === "") return { value: s, error: "a number is required" };
    const n = Number(s);
    if (!Number.isFinite(n)) return { value: s, error: `"${s}" is not a number` };
    if (t === "integer" && !Number.isInteger(n)) return { value: n, error: "must be a whole number" };
    return { value: n, error: rangeError(schema, n) };
  }
  if (t === "string") {
    if (schema.minLength !== undefined && text.length < schema.minLength) return { value: text, error: `at least ${schema.minLength} characters` };
    return { value: text, error: null };
  }
  try { return { value: JSON.parse(text), error: null }; } catch (e) { return { value: text, error: null }; }
}

function rangeError(schema, n) {
  if (schema.minimum !== undefined && n < schema.minimum) return `must be ≥ ${schema.minimum}`;
  if (schema.exclusiveMinimum !== undefined && n <= schema.exclusiveMinimum) return `must be > ${schema.exclusiveMinimum}`;
  if (schema.maximum !== undefined && n > schema.maximum) return `must be ≤ ${schema.maximum}`;
  if (schema.exclusiveMaximum !== undefined && n >= schema.exclusiveMaximum) return `must be < ${schema.exclusiveMaximum}`;
  return null;
}

function onFieldChanged(path, keepFocus) {
  if (/^\$\.Masks\[\d+\]\.(MaskFile|Name)$/.test(path)) renderMaskFiles(false);
  paintErrors();
  scheduleValidate();
}

let validateTimer = null;
let validateSeq = 0;
function scheduleValidate(delay = 250) {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validateNow, delay);
}

async function validateNow() {
  const seq = ++validateSeq;
  try {
    const problems = await api("/api/validate", { calibration: S.cal });
    if (seq !== validateSeq) return;
    S.serverErrors = {};
    for (const p of problems) (S.serverErrors[p.path] = S.serverErrors[p.path] || []).push(p.message);
    paintErrors();
  } catch (e) {
    say("#cal-msg", "Validation failed: " + e.message, "error");
  }
}

function slotFor(path) {
  let p = path;
  for (;;) {
    const slot = document.querySelector(`#cal-form [data-err-path="${CSS.escape(p)}"]`);
    if (slot) return slot;
    if (p === "$") return null;
    const shorter = p.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
    if (shorter === p) return null;
    p = shorter;
  }
}

function paintErrors() {
  $$("#cal-form [data-err-path]").forEach(s => { s.textContent = ""; });
  $$("#cal-form .invalid").forEach(i => i.classList.remove("invalid"));
  const all = {};
  for (const [p, msgs] of Object.entries(S.serverErrors)) all[p] = msgs.slice();
  for (const [p, msg] of Object.entries(S.clientErrors)) all[p] = [msg];  // the page's own check first
  const list = [];
  for (const [p, msgs] of Object.entries(all)) {
    const slot = slotFor(p);
    const text = msgs.join("; ");
    if (slot) {
      const here = slot.getAttribute("data-err-path") === p ? text : `${p}: ${text}`;
      slot.textContent = slot.textContent ? slot.textContent + "\n" + here : here;
    }
    const input = document.querySelector(`#cal-form [data-path-input="${CSS.escape(p)}"]`);
    if (input) input.classList.add("invalid");
    list.push([p, text]);
  }
  const sum = $("#cal-summary");
  if (!list.length) {
    sum.className = "summary ok";
    sum.textContent = "The calibration is valid.";
  } else {
    sum.className = "summary";
    sum.replaceChildren(el("strong", { class: "error", text: `${list.length} problem(s):` }),
      el("ul", {}, list.sort().map(([p, t]) => el("li", {},
        el("a", { onclick: () => focusPath(p), text: p }), ": " + t))));
  }
}

function focusPath(p) {
  const input = document.querySelector(`#cal-form [data-path-input="${CSS.escape(p)}"]`) || slotFor(p);
  if (input) { input.scrollIntoView({ block: "center" }); if (input.focus) input.focus(); }
}

function setCalibration(cal, note) {
  S.cal = cal;
  S.clientErrors = {};
  S.serverErrors = {};
  renderForm();
  scheduleValidate(0);
  if (note) say("#cal-msg", note, "ok");
}

async function loadFromServer(quiet) {
  try {
    const r = await command("get");
    if (r.result === "Error") { if (!quiet) say("#cal-msg", r.data.Error, "error"); return false; }
    S.cal = r.data.cal;
    const dir = r.data.directory;
    if (Array.isArray(dir)) $("#directory").value = dir.join("/") || ".";
    else if (typeof dir === "string") $("#directory").value = dir;
    if (!quiet) setCalibration(S.cal, "Loaded the calibration of the running queue.");
    else say("#cal-msg", "Showing the calibration of the running queue.", "ok");
    return true;
  } catch (e) {
    if (!quiet) say("#cal-msg", e.message, "error");
    return false;
  }
}

// ------------------------------------------------------------------ files: load, save, import

function readFile(file, how = "text") {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    if (how === "text") r.readAsText(file); else r.readAsArrayBuffer(file);
  });
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function onCalFile(ev) {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (!file) return;
  try {
    const cal = JSON.parse(await readFile(file));
    if (typeof cal !== "object" || cal === null || Array.isArray(cal)) throw new Error("not a JSON object");
    setCalibration(cal, `Loaded ${file.name}.`);
  } catch (e) {
    say("#cal-msg", `${file.name}: not a calibration file (${e.message})`, "error");
  }
}

function saveCal() {
  const blob = new Blob([JSON.stringify(S.cal, null, 4) + "\n"], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: (S.cal.Title || "calibration").replace(/[^\w.-]+/g, "_") + ".json" });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function importConverted(url, text, what) {
  try {
    const r = await api(url, { text, template: S.cal });
    setCalibration(r.calibration, `Imported the ${what} geometry into the form.`);
  } catch (e) {
    say("#cal-msg", `${what} import failed: ${e.message}`, "error");
  }
}

// ------------------------------------------------------------------ masks and queue

function renderMaskFiles(rebuildSelect = true) {
  const box = $("#mask-files");
  const masks = Array.isArray(S.cal && S.cal.Masks) ? S.cal.Masks : [];
  box.replaceChildren();
  if (!masks.length) box.append(el("div", { class: "muted small", text: "The calibration has no Masks entries." }));
  masks.forEach((m, i) => {
    const chosen = S.maskFiles[i];
    const input = el("input", { type: "file", id: `mask-file-${i}`, accept: ".msk,.tif,.tiff,.edf,.cbf,.npy" });
    input.addEventListener("change", () => onMaskFile(i, input));
    const name = (m && (m.Name || m.MaskFile)) || "(no mask file)";
    box.append(el("div", { class: "maskrow" },
      el("label", { class: "filebtn", text: `Masks[${i}]: choose file…` }, input),
      chosen ? el("button", { type: "button", class: "small", text: "forget", onclick: () => { delete S.maskFiles[i]; renderMaskFiles(); } }) : el("span"),
      el("div", { class: "name", id: `mask-name-${i}`,
        text: chosen ? `${chosen.name} (${Math.round(chosen.size / 1024)} KiB, will be sent)` : `${name}: not chosen` })));
  });
  if (rebuildSelect) {
    const sel = $("#preview-index");
    const old = sel.value;
    sel.replaceChildren(...masks.map((m, i) => el("option", { value: String(i), text: `Masks[${i}] ${(m && m.Name) || ""}` })));
    if (old && Number(old) < masks.length) sel.value = old;
  }
}

function shiftMaskFiles(removed) {
  const out = {};
  for (const [k, v] of Object.entries(S.maskFiles)) {
    const i = Number(k);
    if (i < removed) out[i] = v; else if (i > removed) out[i - 1] = v;
  }
  S.maskFiles = out;
}

async function onMaskFile(i, input) {
  const file = input.files[0];
  if (!file) return;
  const data = toBase64(await readFile(file, "buffer"));
  S.maskFiles[i] = { name: file.name, data, size: file.size };
  if (Array.isArray(S.cal.Masks) && S.cal.Masks[i]) S.cal.Masks[i].MaskFile = file.name;
  renderForm();
  scheduleValidate();
  say("#start-msg", `Mask file ${file.name} chosen for Masks[${i}].`, "ok");
}

function directoryComponents(text) {
  const parts = text.trim().split(/[\\/]+/).filter(p => p && p !== ".");
  return parts.length ? parts : ["."];
}

async function startQueue(msgTarget = "#start-msg") {
  const masks = Array.isArray(S.cal.Masks) ? S.cal.Masks : [];
  let last = -1;
  masks.forEach((_, i) => { if (S.maskFiles[i]) last = i; });
  const attachments = [], filenames = [], missing = [];
  for (let i = 0; i <= last; i++) {
    if (S.maskFiles[i]) { attachments.push(S.maskFiles[i].data); filenames.push(S.maskFiles[i].name); }
    else missing.push(`Masks[${i}]`);
  }
  if (missing.length) {
    say(msgTarget, `Choose the mask file of ${missing.join(", ")} too: mask files are sent in order.`, "error");
    return;
  }
  const argument = { calibration: S.cal, directory: directoryComponents($("#directory").value) };
  if (filenames.length) argument.filenames = filenames;
  say(msgTarget, "Starting the queue…");
  try {
    const r = await command("new", argument, attachments);
    if (r.result === "Error") { say(msgTarget, "The server refused: " + r.data.Error, "error"); return; }
    say(msgTarget, `Queue started on ${JSON.stringify(r.data.directory)} with ${r.data.threads} worker(s).`, "ok");
    S.latest = null;
    resetHistory(null);
  } catch (e) {
    say(msgTarget, e.message, "error");
  }
}

async function showPreview() {
  const idx = Number($("#preview-index").value || 0);
  const body = { calibration: S.cal, index: idx };
  if (S.maskFiles[idx]) body.mask = { name: S.maskFiles[idx].name, data: S.maskFiles[idx].data };
  const image = $("#preview-image").value.trim();
  if (image) body.image = image;
  say("#preview-msg", "Rendering…");
  try {
    const r = await api("/api/maskpreview", body, { raw: true });
    const blob = await r.blob();
    const img = $("#preview-img");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.hidden = false;
    say("#preview-msg", "");
  } catch (e) {
    say("#preview-msg", e.message, "error");
  }
}

// directory browser (listdir)
function normalizeListing(data) {
  // {dircontent: [{isdir, path, image}], directory: [components]} or the older
  // {dircontent: {path, directories, images, files}}
  const dc = data.dircontent;
  if (Array.isArray(dc)) {
    const here = (Array.isArray(data.directory) ? data.directory : []).filter(p => p && p !== ".");
    return { here, dirs: dc.filter(e => e.isdir).map(e => e.path), images: dc.filter(e => e.image).map(e => e.path) };
  }
  return { here: !dc.path || dc.path === "." ? [] : dc.path.split("/"), dirs: dc.directories || [], images: dc.images || [] };
}

async function browse(mode, pathParts) {
  S.browser.mode = mode;
  S.browser.path = pathParts || directoryComponents(mode === "dir" ? $("#directory").value
    : ($("#preview-image").value.split("/").slice(0, -1).join("/") || "."));
  const box = $("#browser");
  box.hidden = false;
  let r;
  try {
    r = await command("listdir", { directory: S.browser.path });
  } catch (e) { box.replaceChildren(el("div", { class: "error", text: e.message })); return; }
  if (r.result === "Error") {
    if (pathParts === undefined && S.browser.path.join("/") !== ".") return browse(mode, ["."]);
    box.replaceChildren(el("div", { class: "error", text: r.data.Error }));
    return;
  }
  const dc = normalizeListing(r.data);
  const here = dc.here;
  const list = el("ul");
  if (here.length) list.append(el("li", { class: "dir", text: "..", onclick: () => browse(mode, here.slice(0, -1).length ? here.slice(0, -1) : ["."]) }));
  for (const d of dc.dirs) list.append(el("li", { class: "dir", text: d, onclick: () => browse(mode, here.concat([d])) }));
  if (mode === "image") {
    for (const f of dc.images.slice(0, 500)) list.append(el("li", { class: "img", text: f, onclick: () => {
      $("#preview-image").value = here.concat([f]).join("/");
      box.hidden = true;
    } }));
  } else if (dc.images.length) {
    list.append(el("li", { class: "muted", text: `${dc.images.length} image(s)` }));
  }
  box.replaceChildren(
    el("div", { class: "path", text: "/" + here.join("/") }),
    list,
    el("div", { class: "row" },
      mode === "dir" ? el("button", { type: "button", class: "small primary", text: "Use this directory", onclick: () => {
        $("#directory").value = here.length ? here.join("/") : ".";
        box.hidden = true;
      } }) : null,
      el("button", { type: "button", class: "small", text: "Close", onclick: () => { box.hidden = true; } })));
}

// ------------------------------------------------------------------ plots

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function hexToRgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

function fmtTime(t) {
  if (t === null || t === undefined) return "–";
  return new Date(t * 1000).toLocaleString();
}

function fmtNum(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toString();
}

function onResult(msg) {
  S.latest = msg;
  if (S.activeTab === "plots") drawPlot();
  else updatePlotInfo();
}

async function refreshPlot() {
  try {
    const r = await command("plot");
    if (r.result === "Error" || !r.data.graphs || !r.data.graphs.length) return;
    if (S.latest && S.latest.filename === r.data.filename) return;
    S.latest = { type: "result", filename: r.data.filename, time: null, IntegralParameters: r.data.IntegralParameters,
      graphs: r.data.graphs };
    if (S.activeTab === "plots") drawPlot(); else updatePlotInfo();
  } catch (e) { /* shown elsewhere */ }
}

function updatePlotInfo() {
  const m = S.latest;
  if (!m) return;
  $("#plot-file").textContent = m.filename + (m.frame ? ` #${m.frame}` : "");
  $("#plot-time").textContent = (m.time ? "image time " + fmtTime(m.time) : "") +
    (m.processed_at ? ` · processed ${fmtTime(m.processed_at)}` : "");
  const params = m.IntegralParameters || {};
  const keys = ["I0", "I1", "I2", "correlation_length"];
  const rows = Object.entries(params);
  $("#plot-params").replaceChildren(
    el("tr", {}, el("th", { text: "integrator" }), keys.map(k => el("th", { text: k === "I2" ? "I2 (invariant)" : k.replace("_", " ") }))),
    ...rows.map(([name, p]) => el("tr", {}, el("td", { text: name }), keys.map(k => el("td", { text: fmtNum(p && p[k]) })))));
}

function plainLabel(text) {
  // "q [$nm^{-1}$]" (matplotlib mathtext of the .chi labels) -> "q [nm⁻¹]"
  const sup = { "-": "⁻", "0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶", "7": "⁷", "8": "⁸", "9": "⁹" };
  return String(text)
    .replace(/\^\{([-0-9]+)\}/g, (_, d) => [...d].map(c => sup[c] || c).join(""))
    .replace(/\\AA/g, "Å").replace(/\\(circ|deg)/g, "°").replace(/\\([A-Za-z]+)/g, "$1")
    .replace(/[$]/g, "").replace(/\s+/g, " ").trim();
}

function graphName(g, i) {
  const conf = g.conf || {};
  return `${g.kind || "Radial"} ${i}` + (conf.Name ? ` (${conf.Name})` : "");
}

function drawPlot() {
  const m = S.latest;
  if (!m || !window.Plotly) return;
  updatePlotInfo();
  const logx = $("#logx").checked, logy = $("#logy").checked;
  const bandP = $("#band-poisson").checked, bandS = $("#band-std").checked;
  const traces = [];
  let xlabel = "q [nm⁻¹]", ylabel = "Intensity (counts/pixel)";
  m.graphs.forEach((g, gi) => {
    // points a log axis cannot show are left out (no gaps: the bands are filled polygons)
    const keep = g.array[0].map((q, k) => q !== null && g.array[1][k] !== null &&
      (!logx || q > 0) && (!logy || g.array[1][k] > 0));
    const [x, I, err, std] = g.array.map(col => col ? col.filter((_, k) => keep[k]) : col);
    const color = COLORS[gi % COLORS.length];
    if (g.columnLabels && g.columnLabels[0]) xlabel = plainLabel(g.columnLabels[0]);
    if (g.columnLabels && g.columnLabels[1]) ylabel = plainLabel(g.columnLabels[1]);
    const band = (e, alpha, what) => {
      if (!e) return;
      const lo = I.map((v, k) => { const d = e[k] ?? 0; return logy ? Math.max(v - d, v * 0.1) : v - d; });
      const hi = I.map((v, k) => v + (e[k] ?? 0));
      traces.push({ x, y: lo, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: "g" + gi });
      traces.push({ x, y: hi, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: hexToRgba(color, alpha),
        name: `${what}`, hoverinfo: "skip", legendgroup: "g" + gi, showlegend: false });
    };
    if (bandS) band(std, 0.15, "standard deviation");
    if (bandP) band(err, 0.35, "Poisson error");
    traces.push({ x, y: I, mode: "lines", name: graphName(g, gi), line: { color, width: 1.5 }, legendgroup: "g" + gi });
  });
  const layout = {
    margin: { l: 70, r: 20, t: 30, b: 50 },
    xaxis: { title: { text: xlabel }, type: logx ? "log" : "linear" },
    yaxis: { title: { text: ylabel }, type: logy ? "log" : "linear", exponentformat: "power" },
    legend: { x: 1, xanchor: "right", y: 1 },
    uirevision: `${logx}-${logy}`,
  };
  Plotly.react("plot-main", traces, layout, { displaylogo: false, responsive: true });
}

// ------------------------------------------------------------------ history

function resetHistory(key) {
  S.history = { key, rows: new Map(), until: 0, noSince: S.history.noSince, busy: false, lastCount: -1, lastFetch: 0 };
  S.statSamples = S.statSamples.slice(-1);
  if (S.activeTab === "history") drawHistory();
}

async function refreshHistory(force = false) {
  const h = S.history;
  if (h.busy) return;
  const now = Date.now();
  if (!force && now - h.lastFetch < 1000) { setTimeout(() => refreshHistory(), 1000 - (now - h.lastFetch)); return; }
  h.busy = true;
  h.lastFetch = now;
  try {
    let r = await command("plotdata", h.until && !h.noSince ? { since: h.until } : undefined);
    if (r.result === "Error" && h.until && /argument/.test(r.data.Error)) {
      h.noSince = true;  // this server only answers the whole history
      r = await command("plotdata");
    }
    if (r.result === "Error") return;
    const d = r.data.history;
    for (let i = 0; i < d.path.length; i++) {
      h.rows.set(d.path[i] + "#" + d.frame[i], {
        path: d.path[i], frame: d.frame[i], time: d.time[i], processed: d.processed[i],
        I0: d.I0[i], I2: d.I2[i], invariant: d.invariant[i], corr: d.correlation_length[i], error: d.error[i],
      });
    }
    if (!h.noSince) h.until = r.data.until || h.until;
    h.lastCount = r.data.stat ? r.data.stat["images processed"] : h.rows.size;
    updateDirChoices();
    if (S.activeTab === "history") drawHistory();
    else $("#hist-count").textContent = `${h.rows.size} image(s)`;
  } catch (e) { /* the connection badge tells */ } finally {
    h.busy = false;
  }
}

function dirOf(path) {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : path.slice(0, i);
}

function updateDirChoices() {
  const sel = $("#hist-dir");
  const dirs = new Set();
  for (const r of S.history.rows.values()) dirs.add(dirOf(r.path));
  const have = new Set($$("option", sel).map(o => o.value));
  for (const d of [...dirs].sort()) if (!have.has(d)) sel.append(el("option", { value: d, text: d }));
}

function historyRows() {
  const dir = $("#hist-dir").value;
  const rows = [...S.history.rows.values()].filter(r => !r.error && (!dir || dirOf(r.path) === dir));
  rows.sort((a, b) => (a.time ?? a.processed ?? 0) - (b.time ?? b.processed ?? 0) || (a.path < b.path ? -1 : 1));
  return rows;
}

function plotConf() { return { displaylogo: false, responsive: true }; }

function drawProgress() {
  if (!window.Plotly) return;
  const rows = [...S.history.rows.values()].filter(r => r.processed).sort((a, b) => a.processed - b.processed);
  const t0 = rows.length ? rows[0].processed : (S.statSamples[0] ? S.statSamples[0].t : 0);
  const samples = S.statSamples.filter(s => s.t >= t0 - 1);
  Plotly.react("hist-progress", [
    { x: rows.map(r => r.processed - t0), y: rows.map((_, i) => i + 1), mode: "lines", name: "images processed",
      line: { color: COLORS[0] } },
    { x: samples.map(s => s.t - t0), y: samples.map(s => s.fps), mode: "lines", name: "frames/s", yaxis: "y2",
      line: { color: COLORS[1], dash: "dot" } },
  ], {
    title: { text: "Progress", font: { size: 14 } }, margin: { l: 60, r: 60, t: 36, b: 44 },
    xaxis: { title: { text: "seconds since the first image" } },
    yaxis: { title: { text: "images" }, rangemode: "tozero" },
    yaxis2: { title: { text: "frames/s" }, overlaying: "y", side: "right", rangemode: "tozero" },
    legend: { x: 0, y: 1.0, bgcolor: "rgba(255,255,255,0.6)" }, uirevision: "p",
  }, plotConf());
}

function drawHistory() {
  const rows = historyRows();
  $("#hist-count").textContent = `${rows.length} image(s)` + ($("#hist-dir").value ? ` in ${$("#hist-dir").value}` : "");
  if (!window.Plotly) return;
  drawProgress();
  const byIndex = $("#hist-x").value === "index";
  const x = byIndex ? rows.map((_, i) => i) : rows.map(r => r.time !== null ? new Date(r.time * 1000) : null);
  const text = rows.map(r => r.path + (r.frame ? "#" + r.frame : ""));
  const one = (div, key, title, color, ytitle) => Plotly.react(div, [{
    x, y: rows.map(r => r[key]), text, mode: "markers+lines", marker: { size: 4, color }, line: { width: 1, color },
    hovertemplate: "%{text}<br>%{y}<extra></extra>",
  }], {
    title: { text: title, font: { size: 14 } }, margin: { l: 70, r: 20, t: 36, b: 44 },
    xaxis: { title: { text: byIndex ? "image number" : "image time" }, type: byIndex ? "linear" : "date" },
    yaxis: { title: { text: ytitle }, exponentformat: "power" }, uirevision: div,
  }, plotConf());
  one("hist-i0", "I0", "Integral intensity I0", COLORS[0], "I0");
  one("hist-i2", "invariant", "Invariant I2", COLORS[2], "I2");
  one("hist-corr", "corr", "Correlation length", COLORS[3], "π·I1/I2 [nm]");
}

// ------------------------------------------------------------------ server tab

function kvRows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v }))));
}

function renderStat(st) {
  kvRows($("#stat-table"), [
    ["queue", S.running ? "running" : "none"],
    ["directory", st.directory ?? "–"],
    ["queue length", st["queue length"] ?? 0],
    ["images processed", st["images processed"] ?? 0],
    ["images failed", st["images failed"] ?? 0],
    ["frames per second", fmtNum(st["frames per sec"] ?? 0, 3)],
    ["running for", st["time interval"] !== undefined ? `${Math.round(st["time interval"])} s` : "–"],
    ["worker restarts", st["worker restarts"] ?? 0],
    ["feeder events rejected", st["feeder events rejected"] ?? 0],
  ]);
  const stages = st["stage seconds"] || {};
  kvRows($("#stage-table"), Object.keys(stages).length
    ? Object.entries(stages).map(([k, v]) => [k, `${fmtNum((v || 0) * 1000, 3)} ms`])
    : [["no images yet", ""]]);
}

async function refreshFiles() {
  try {
    const r = await command("fileslist");
    if (r.result === "Error") { kvRows($("#state-table"), [["no queue", ""]]); return; }
    const files = r.data.fileslist;
    const counts = {};
    const failed = [];
    for (const [name, f] of Object.entries(files)) {
      counts[f.state] = (counts[f.state] || 0) + 1;
      if (f.state === "failed" || f.error) failed.push([name, f.state, f.error || ""]);
    }
    kvRows($("#state-table"), Object.keys(counts).length ? Object.entries(counts) : [["no files yet", ""]]);
    const ft = $("#fail-table");
    if (!failed.length) ft.replaceChildren(el("tr", {}, el("td", { class: "muted", text: "none" })));
    else ft.replaceChildren(el("tr", {}, el("th", { text: "file" }), el("th", { text: "state" }), el("th", { text: "reason" })),
      ...failed.slice(0, 1000).map(([n, s, e]) => el("tr", {}, el("td", { text: n }), el("td", { text: s }), el("td", { text: e }))));
  } catch (e) { say("#srv-msg", e.message, "error"); }
}

async function serverCommand(name) {
  say("#srv-msg", `${name}…`);
  try {
    const r = await command(name);
    if (r.result === "Error") say("#srv-msg", r.data.Error, "error");
    else say("#srv-msg", r.result + (r.data && r.data.queued !== undefined ? `: ${r.data.queued} image(s) queued` : ""), "ok");
    refreshFiles();
  } catch (e) { say("#srv-msg", e.message, "error"); }
}

// ------------------------------------------------------------------ consolidate

const MERGE_EXAMPLE = {
  LogDataTables: [{ Name: "log", Files: [{ RemotePath: ["logs", "run.log"] }], TimeEpoch: "Unix", TimeOffset: 0,
    FirstImageCorrelation: false }],
  TimeOffset: 0,
  OutputFormats: { csv: true, json: false, hdf: false, exel: false },
  OutputFileName: "../results/merged",
  HDFOptions: { IncludeCHI: false, IncludeTIF: false },
};

// The LocalPath names of a merge configuration (files the browser must send along).
function mergeLocalPaths(conf) {
  const names = [];
  for (const table of (conf && Array.isArray(conf.LogDataTables)) ? conf.LogDataTables : [])
    for (const f of (table && Array.isArray(table.Files)) ? table.Files : [])
      if (f && typeof f.LocalPath === "string" && f.LocalPath && !names.includes(f.LocalPath)) names.push(f.LocalPath);
  return names;
}

async function mergeRun() {
  let conf;
  try { conf = JSON.parse($("#merge-conf").value); } catch (e) { say("#merge-msg", "Not JSON: " + e.message, "error"); return; }
  const picked = Array.from($("#merge-logs").files || []);
  const filenames = [], attachments = [];
  for (const local of mergeLocalPaths(conf)) {
    const base = local.split(/[\\/]/).pop();
    const file = picked.find(f => f.name === local) || picked.find(f => f.name === base);
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

async function mergeGet() {
  try {
    const r = await command("getmergedata");
    if (r.result === "Error") { say("#merge-msg", r.data.Error, "error"); return; }
    const d = r.data.data;
    // epoch seconds in full (to the ms), counts as they are, other numbers to 6 digits
    const isTime = d.columns.map(c => c === "image_time" || /^time\b/.test(c));
    const cell = (v, k) => v === null ? "" : typeof v !== "number" ? String(v)
      : isTime[k] ? v.toFixed(3) : Number.isInteger(v) ? String(v) : fmtNum(v, 6);
    $("#merge-table").replaceChildren(el("tr", {}, d.columns.map(c => el("th", { text: c }))),
      ...d.rows.slice(0, 2000).map(row => el("tr", {}, row.map((v, k) => el("td", { text: cell(v, k) })))));
    say("#merge-msg", `${d.rows.length} row(s)` + (d.rows.length > 2000 ? " (first 2000 shown)" : ""), "ok");
  } catch (e) { say("#merge-msg", e.message, "error"); }
}

// ------------------------------------------------------------------ tabs and wiring

function showTab(name) {
  S.activeTab = name;
  $$(".tabs button").forEach(b => b.classList.toggle("active", b.dataset.tab === name));
  $$(".tab").forEach(t => t.classList.toggle("active", t.id === "tab-" + name));
  if (name === "plots") { drawPlot(); if (!S.latest) refreshPlot(); }
  if (name === "history") { drawHistory(); refreshHistory(true); }
  if (name === "server") refreshFiles();
  if (window.Plotly) $$(`#tab-${name} .js-plotly-plot`).forEach(d => Plotly.Plots.resize(d));
}

function wire() {
  $("#login-form").addEventListener("submit", onLoginSubmit);
  $("#logout").addEventListener("click", logout);
  $("#cal-form").addEventListener("submit", e => e.preventDefault());
  $$(".tabs button").forEach(b => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#cal-file").addEventListener("change", onCalFile);
  $("#cal-save").addEventListener("click", saveCal);
  $("#cal-defaults").addEventListener("click", () => setCalibration(makeDefault(S.schema), "A new calibration with the schema's defaults."));
  $("#cal-from-server").addEventListener("click", () => loadFromServer(false));
  $("#fit2d-file").addEventListener("change", async ev => {
    const f = ev.target.files[0]; ev.target.value = "";
    if (f) importConverted("/api/convert/fit2d", await readFile(f), "FIT2D");
  });
  $("#fit2d-convert").addEventListener("click", () => importConverted("/api/convert/fit2d", $("#fit2d-text").value, "FIT2D"));
  $("#poni-file").addEventListener("change", async ev => {
    const f = ev.target.files[0]; ev.target.value = "";
    if (f) importConverted("/api/convert/poni", await readFile(f), "PONI");
  });
  $("#browse-dir").addEventListener("click", () => browse("dir"));
  $("#browse-image").addEventListener("click", () => browse("image"));
  $("#start-queue").addEventListener("click", () => startQueue("#start-msg"));
  $("#preview-button").addEventListener("click", showPreview);
  for (const id of ["#logx", "#logy", "#band-poisson", "#band-std"]) $(id).addEventListener("change", drawPlot);
  $("#plot-refresh").addEventListener("click", () => { S.latest = null; refreshPlot(); });
  $("#hist-dir").addEventListener("change", drawHistory);
  $("#hist-x").addEventListener("change", drawHistory);
  $("#hist-refresh").addEventListener("click", () => { resetHistory(S.history.key); refreshHistory(true); });
  $("#srv-new").addEventListener("click", () => startQueue("#srv-msg"));
  $("#srv-close").addEventListener("click", () => serverCommand("close"));
  $("#srv-abort").addEventListener("click", () => { if (confirm("Abort the queue and drop the waiting images?")) serverCommand("abort"); });
  $("#srv-readdir").addEventListener("click", () => serverCommand("readdir"));
  $("#srv-files").addEventListener("click", refreshFiles);
  $("#merge-conf").value = JSON.stringify(MERGE_EXAMPLE, null, 2);
  $("#merge-logs").addEventListener("change", ev =>
    $("#merge-logs-names").textContent = Array.from(ev.target.files, f => f.name).join(", "));
  $("#merge-run").addEventListener("click", mergeRun);
  $("#merge-get").addEventListener("click", mergeGet);
  window.addEventListener("resize", () => {
    if (window.Plotly) $$(".tab.active .js-plotly-plot").forEach(d => Plotly.Plots.resize(d));
  });
}

wire();
startup();
