// The Calibration tab: the schema form, validation by the server, loading, saving, FIT2D and
// PONI import, mask files, the mask preview, the directory browser and starting a queue.

import { api, command } from "./api.js";
import { $, el, readFile, say, toBase64 } from "./dom.js";
import { resetHistory } from "./history.js";
import { groupProblems, makeDefault, paintErrors, problemList, renderForm as buildForm } from "./schemaform.js";
import { S } from "./state.js";

const formContext = {
  get schema() { return S.schema; },
  value: () => S.cal,
  changed(path, error) {
    if (error) S.clientErrors[path] = error; else delete S.clientErrors[path];
    if (/^\$\.Masks\[\d+\]\.(MaskFile|Name)$/.test(path)) renderMaskFiles(false);
    showErrors();
    scheduleValidate();
  },
  structureChanged(parts) {
    if (parts && parts[0] === "Masks" && parts.length === 2 && typeof parts[1] === "number") shiftMaskFiles(parts[1]);
    renderForm();
    scheduleValidate();
  },
};

export function renderForm() {
  if (!S.schema || !S.cal) return;
  buildForm($("#cal-form"), formContext);
  renderMaskFiles();
  showErrors();
}

function showErrors() {
  paintErrors($("#cal-form"), $("#cal-summary"), problemList(S.serverErrors, S.clientErrors));
}

let validateTimer = null;
let validateSeq = 0;
export function scheduleValidate(delay = 250) {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validateNow, delay);
}

async function validateNow() {
  const seq = ++validateSeq;
  try {
    const problems = await api("/api/validate", { calibration: S.cal }, { background: true });
    if (seq !== validateSeq) return;
    S.serverErrors = groupProblems(problems);
    showErrors();
  } catch (e) {
    say("#cal-msg", "Validation failed: " + e.message, "error");
  }
}

export function setCalibration(cal, note) {
  S.cal = cal;
  S.clientErrors = {};
  S.serverErrors = {};
  renderForm();
  scheduleValidate(0);
  if (note) say("#cal-msg", note, "ok");
}

export function defaultCalibration() { return makeDefault(S.schema); }

/** Show the running queue's calibration (`quiet`: at start, without replacing the message). */
export async function loadFromServer(quiet) {
  try {
    const r = await command("get");
    if (r.result === "Error") { if (!quiet) say("#cal-msg", r.data.Error, "error"); return false; }
    S.cal = r.data.cal;
    const dir = r.data.directory;  // as the client that started the queue sent it: a list or a string
    $("#directory").value = (Array.isArray(dir) ? dir.join("/") : String(dir ?? "")) || ".";
    if (!quiet) setCalibration(S.cal, "Loaded the calibration of the running queue.");
    else say("#cal-msg", "Showing the calibration of the running queue.", "ok");
    return true;
  } catch (e) {
    if (!quiet) say("#cal-msg", e.message, "error");
    return false;
  }
}

export async function onCalFile(ev) {
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

export function saveCal() {
  const blob = new Blob([JSON.stringify(S.cal, null, 4) + "\n"], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: (S.cal.Title || "calibration").replace(/[^\w.-]+/g, "_") + ".json" });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

export async function importConverted(url, text, what) {
  try {
    const r = await api(url, { text, template: S.cal }, { timeoutMs: 60000 });  // the first PONI import loads pyFAI
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

/** `"run/a"` -> `["run", "a"]`; `"."` or `""` -> `["."]`. */
export function directoryComponents(text) {
  const parts = text.trim().split(/[\\/]+/).filter(p => p && p !== ".");
  return parts.length ? parts : ["."];
}

export async function startQueue(msgTarget = "#start-msg") {
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

export async function showPreview() {
  const idx = Number($("#preview-index").value || 0);
  const body = { calibration: S.cal, index: idx };
  if (S.maskFiles[idx]) body.mask = { name: S.maskFiles[idx].name, data: S.maskFiles[idx].data };
  const image = $("#preview-image").value.trim();
  if (image) body.image = image;
  say("#preview-msg", "Rendering…");
  try {
    const r = await api("/api/maskpreview", body, { raw: true, timeoutMs: 60000 });
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

// ------------------------------------------------------------------ directory browser (listdir)

/** A `listdir` answer as `{here: [components], dirs, images}`. */
export function listing(data) {
  const here = data.directory.filter(p => p && p !== ".");
  return { here, dirs: data.dircontent.filter(e => e.isdir).map(e => e.path),
    images: data.dircontent.filter(e => e.image).map(e => e.path) };
}

export async function browse(mode, pathParts) {
  const path = pathParts || directoryComponents(mode === "dir" ? $("#directory").value
    : ($("#preview-image").value.split("/").slice(0, -1).join("/") || "."));
  const box = $("#browser");
  box.hidden = false;
  let r;
  try {
    r = await command("listdir", { directory: path });
  } catch (e) { box.replaceChildren(el("div", { class: "error", text: e.message })); return; }
  if (r.result === "Error") {
    if (pathParts === undefined && path.join("/") !== ".") return browse(mode, ["."]);
    box.replaceChildren(el("div", { class: "error", text: r.data.Error }));
    return;
  }
  const { here, dirs, images } = listing(r.data);
  const list = el("ul");
  if (here.length) list.append(el("li", { class: "dir", text: "..", onclick: () => browse(mode, here.slice(0, -1).length ? here.slice(0, -1) : ["."]) }));
  for (const d of dirs) list.append(el("li", { class: "dir", text: d, onclick: () => browse(mode, here.concat([d])) }));
  if (mode === "image") {
    for (const f of images.slice(0, 500)) list.append(el("li", { class: "img", text: f, onclick: () => {
      $("#preview-image").value = here.concat([f]).join("/");
      box.hidden = true;
    } }));
  } else if (images.length) {
    list.append(el("li", { class: "muted", text: `${images.length} image(s)` }));
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
