// The calibration form, generated from the calibration's JSON Schema.
//
// The pure part (types, defaults, parsing, which properties may be added, units, problem lists)
// is tested with `node --test tests/web/js/`; `renderForm` builds the DOM from it.

import { $$, el } from "./dom.js";

// ------------------------------------------------------------------ pure helpers

export function typeOf(schema) {
  if (!schema) return "any";
  if (schema.enum) return "enum";
  let t = schema.type;
  if (Array.isArray(t)) t = t.find(x => x !== "null") || t[0];
  if (t) return t;
  if (schema.properties) return "object";
  if (schema.items) return "array";
  return "any";
}

export function clone(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }

/** A new value for `schema`: its default, else the defaults of its required and defaulted parts. */
export function makeDefault(schema) {
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

/** `["Masks", 0, "MaskFile"]` -> `"$.Masks[0].MaskFile"` (the server's problem paths). */
export function toPath(parts) {
  return "$" + parts.map(p => typeof p === "number" ? `[${p}]` : `.${p}`).join("");
}

/** The path one level up (`$.Masks[0].MaskFile` -> `$.Masks[0]`), `$` for `$`. */
export function parentPath(path) {
  return path === "$" ? "$" : path.replace(/(\.[^.[\]]+|\[\d+\])$/, "") || "$";
}

export function getIn(root, parts) {
  let v = root;
  for (const p of parts) { if (v === null || v === undefined) return undefined; v = v[p]; }
  return v;
}

export function setIn(root, parts, value) {
  let v = root;
  for (const p of parts.slice(0, -1)) v = v[p];
  v[parts[parts.length - 1]] = value;
}

export function deleteIn(root, parts) {
  let v = root;
  for (const p of parts.slice(0, -1)) v = v[p];
  const last = parts[parts.length - 1];
  if (Array.isArray(v)) v.splice(last, 1); else delete v[last];
}

export function rangeError(schema, n) {
  if (schema.minimum !== undefined && n < schema.minimum) return `must be ≥ ${schema.minimum}`;
  if (schema.exclusiveMinimum !== undefined && n <= schema.exclusiveMinimum) return `must be > ${schema.exclusiveMinimum}`;
  if (schema.maximum !== undefined && n > schema.maximum) return `must be ≤ ${schema.maximum}`;
  if (schema.exclusiveMaximum !== undefined && n >= schema.exclusiveMaximum) return `must be < ${schema.exclusiveMaximum}`;
  return null;
}

/** `{value, error}` of the text typed into a field of `schema` (error null when it is fine). */
export function parseValue(schema, text) {
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

/**
 * Groups of alternative spellings: a `oneOf` (also inside `allOf`) whose branches each only
 * require one property: two spellings of one field, as `[["Colour", "Color"]]`.
 */
export function exclusiveGroups(schema) {
  const groups = [];
  const visit = s => {
    if (!s || typeof s !== "object") return;
    for (const sub of s.allOf || []) visit(sub);
    if (!Array.isArray(s.oneOf)) return;
    const keys = s.oneOf.map(b => b && Array.isArray(b.required) && b.required.length === 1
      && Object.keys(b).every(k => k === "required" || k === "description") ? b.required[0] : null);
    if (keys.length > 1 && keys.every(k => k)) groups.push(keys);
  };
  visit(schema);
  return groups;
}

/**
 * The properties an object may still get: absent ones the schema allows, and of alternative
 * spellings only none while one is present, else only the first (the original's spelling).
 */
export function addableProperties(schema, value) {
  const present = new Set(value && typeof value === "object" ? Object.keys(value) : []);
  const groups = exclusiveGroups(schema);
  const out = [];
  for (const key of Object.keys(schema.properties || {})) {
    if (present.has(key)) continue;
    const group = groups.find(g => g.includes(key));
    if (group && (group.some(k => present.has(k)) || group[0] !== key)) continue;
    out.push(key);
  }
  return out;
}

/** The unit of a field, from its schema's `x-unit` annotation, else null. */
export function unitOf(schema) {
  return schema && typeof schema["x-unit"] === "string" ? schema["x-unit"] : null;
}

/**
 * Names of a fixed-length list's items, from its schema's `x-itemLabels` annotation, when
 * there is one per item (e.g. not for a single, square pixel size); else null.
 */
export function itemLabels(schema, count) {
  const labels = schema && Array.isArray(schema["x-itemLabels"]) ? schema["x-itemLabels"] : null;
  return labels && labels.length === count ? labels : null;
}

/** The server's problem list (`[{path, message}]`) as `{path: [messages]}`. */
export function groupProblems(problems) {
  const out = {};
  for (const p of problems || []) (out[p.path] = out[p.path] || []).push(p.message);
  return out;
}

/**
 * Every problem to show, `[[path, text]]` sorted by path: the server's, with the page's own
 * check replacing them for a field the user is typing in.
 */
export function problemList(serverErrors, clientErrors) {
  const all = {};
  for (const [p, msgs] of Object.entries(serverErrors || {})) all[p] = msgs.join("; ");
  for (const [p, msg] of Object.entries(clientErrors || {})) all[p] = msg;
  return Object.entries(all).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** The text shown in the slot of `slotPath` for a problem at `path` (the path when it is deeper). */
export function slotText(slotPath, path, text) {
  return slotPath === path ? text : `${path}: ${text}`;
}

// ------------------------------------------------------------------ the form

/**
 * Render the form of `ctx.schema` over `ctx.value()` into `form`.
 *
 * `ctx`: `{schema, value(): the calibration, changed(path), structureChanged(parts)}`.
 */
export function renderForm(form, ctx) {
  const scrollY = window.scrollY;
  form.replaceChildren(renderObject(ctx, ctx.schema, [], "Calibration", { root: true }));
  window.scrollTo(0, scrollY);
}

function descIcon(schema) {
  return schema && schema.description ? el("span", { class: "desc", title: schema.description, text: "?" }) : null;
}

function unitSpan(path, unit) {
  return unit ? el("span", { class: "unit", "data-unit-for": path, text: unit }) : null;
}

function errSlot(path, extra = "") {
  return el("div", { class: "err " + extra, "data-err-path": path, role: "alert" });
}

function renderNode(ctx, schema, parts, label, opts = {}) {
  const t = typeOf(schema);
  if (t === "object") return renderObject(ctx, schema, parts, label, opts);
  if (t === "array") return renderArray(ctx, schema, parts, label, opts);
  return renderField(ctx, schema, parts, label, opts);
}

function removeButton(ctx, parts, what) {
  return el("button", {
    type: "button", class: "small remove", title: "remove " + what, text: "×",
    onclick: () => { deleteIn(ctx.value(), parts); ctx.structureChanged(parts); },
  });
}

function renderObject(ctx, schema, parts, label, opts = {}) {
  const value = getIn(ctx.value(), parts);
  const path = toPath(parts);
  const fs = el("fieldset", { class: "obj", "data-path": path });
  fs.append(el("legend", {}, opts.root ? "Calibration" : label, descIcon(schema),
    !opts.root && opts.removable ? removeButton(ctx, parts, label) : null));
  fs.append(errSlot(path, "obj-err"));
  const req = schema.required || [];
  for (const [key, sub] of Object.entries(schema.properties || {})) {
    if (value && Object.prototype.hasOwnProperty.call(value, key)) {
      fs.append(renderNode(ctx, sub, parts.concat([key]), key, { removable: !req.includes(key), required: req.includes(key) }));
    }
  }
  const addable = addableProperties(schema, value);
  if (addable.length) {
    const box = el("div", { class: "addprops" });
    for (const key of addable) {
      const sub = schema.properties[key];
      box.append(el("button", {
        type: "button", class: "small", title: (sub.description || "") + (req.includes(key) ? " (required)" : ""),
        text: "+ " + key, "data-add": toPath(parts.concat([key])),
        onclick: () => { setIn(ctx.value(), parts.concat([key]), makeDefault(sub)); ctx.structureChanged(); },
      }));
    }
    fs.append(box);
  }
  return fs;
}

function renderArray(ctx, schema, parts, label, opts = {}) {
  const value = getIn(ctx.value(), parts);
  const path = toPath(parts);
  const items = Array.isArray(value) ? value : [];
  const itemSchema = schema.items || {};
  const min = schema.minItems || 0;
  const max = schema.maxItems === undefined ? Infinity : schema.maxItems;
  const add = items.length >= max ? null : el("button", {
    type: "button", class: "small", text: "+ add", title: "add an item to " + label, "data-add": path,
    onclick: () => { getIn(ctx.value(), parts).push(makeDefault(itemSchema)); ctx.structureChanged(); },
  });
  if (!Array.isArray(value)) {
    return el("div", { class: "field", "data-path": path },
      el("label", {}, label, descIcon(schema)),
      el("div", { class: "control" }, el("span", { class: "error", text: "not a list" }),
        el("button", { type: "button", class: "small", text: "reset",
          onclick: () => { setIn(ctx.value(), parts, makeDefault(schema)); ctx.structureChanged(); } })),
      errSlot(path));
  }
  const itemType = typeOf(itemSchema);
  if (itemType === "object" || itemType === "array") {
    const fs = el("fieldset", { class: "arr", "data-path": path },
      el("legend", {}, `${label} (${items.length})`, descIcon(schema), " ", add,
        opts.removable ? removeButton(ctx, parts, label) : null),
      errSlot(path, "obj-err"));
    items.forEach((_, i) => {
      fs.append(renderNode(ctx, itemSchema, parts.concat([i]), `${label}[${i}]`, { removable: items.length > min }));
    });
    return fs;
  }
  // a list of simple values in one row, each item named where the list has fixed meanings
  const labels = itemLabels(schema, items.length);
  const control = el("div", { class: "control arr-items" });
  items.forEach((_, i) => {
    const itemLabel = labels ? labels[i] : `${label}[${i}]`;
    control.append(el("span", { class: "arr-item", "data-path": toPath(parts.concat([i])) },
      labels ? el("span", { class: "item-label", text: labels[i] }) : null,
      makeInput(ctx, itemSchema, parts.concat([i]), `${label} ${itemLabel}`),
      items.length > min ? removeButton(ctx, parts.concat([i]), `${label}[${i}]`) : null));
  });
  if (add) control.append(add);
  const unit = unitSpan(path, unitOf(schema));
  if (unit) control.append(unit);
  if (opts.removable) control.append(removeButton(ctx, parts, label));
  const box = el("div", { class: "field", "data-path": path },
    el("label", { title: schema.description || "" }, label, opts.required ? " *" : "", descIcon(schema)), control, errSlot(path));
  items.forEach((_, i) => box.append(errSlot(toPath(parts.concat([i])))));
  return box;
}

function renderField(ctx, schema, parts, label, opts = {}) {
  const path = toPath(parts);
  const input = makeInput(ctx, schema, parts, label);
  const id = "f" + path.replace(/[^A-Za-z0-9]/g, "_");
  input.id = id;
  return el("div", { class: "field", "data-path": path },
    el("label", { for: id, title: schema.description || "" }, label, opts.required ? " *" : "", descIcon(schema)),
    el("div", { class: "control" }, input, unitSpan(path, unitOf(schema)),
      opts.removable ? removeButton(ctx, parts, label) : null),
    errSlot(path));
}

function makeInput(ctx, schema, parts, label) {
  const t = typeOf(schema);
  const path = toPath(parts);
  const value = getIn(ctx.value(), parts);
  let input;
  if (t === "enum") {
    input = el("select", { "data-path-input": path, "aria-label": label });
    for (const opt of schema.enum) {
      const o = el("option", { value: JSON.stringify(opt), text: String(opt) });
      if (JSON.stringify(opt) === JSON.stringify(value)) o.selected = true;
      input.append(o);
    }
    input.addEventListener("change", () => { setIn(ctx.value(), parts, JSON.parse(input.value)); ctx.changed(path, null); });
  } else if (t === "boolean") {
    input = el("input", { type: "checkbox", "data-path-input": path, "aria-label": label });
    input.checked = value === true;
    input.addEventListener("change", () => { setIn(ctx.value(), parts, input.checked); ctx.changed(path, null); });
  } else {
    input = el("input", { type: "text", "data-path-input": path, "aria-label": label, spellcheck: "false",
      inputmode: (t === "number" || t === "integer") ? "decimal" : null,
      class: t === "string" ? "wide" : null, title: schema.description || "" });
    input.value = value === undefined || value === null ? "" : (typeof value === "string" ? value : String(value));
    if (typeof value === "object" && value !== null) input.value = JSON.stringify(value);
    input.addEventListener("input", () => {
      const { value: v, error } = parseValue(schema, input.value);
      setIn(ctx.value(), parts, v);
      ctx.changed(path, error);
    });
  }
  return input;
}

/** The nearest error slot of `path` in `form` (the field's, else an enclosing object's). */
function slotFor(form, path) {
  for (let p = path; ; p = parentPath(p)) {
    const slot = form.querySelector(`[data-err-path="${CSS.escape(p)}"]`);
    if (slot || p === "$") return slot;
  }
}

/** Show `problems` (`[[path, text]]`) at their fields and in the summary above the form. */
export function paintErrors(form, summary, problems) {
  $$("[data-err-path]", form).forEach(s => { s.textContent = ""; });
  $$(".invalid", form).forEach(i => i.classList.remove("invalid"));
  for (const [p, text] of problems) {
    const slot = slotFor(form, p);
    if (slot) {
      const here = slotText(slot.getAttribute("data-err-path"), p, text);
      slot.textContent = slot.textContent ? slot.textContent + "\n" + here : here;
    }
    const input = form.querySelector(`[data-path-input="${CSS.escape(p)}"]`);
    if (input) input.classList.add("invalid");
  }
  if (!problems.length) {
    summary.className = "summary ok";
    summary.textContent = "The calibration is valid.";
  } else {
    summary.className = "summary";
    summary.replaceChildren(el("strong", { class: "error", text: `${problems.length} problem(s):` }),
      el("ul", {}, problems.map(([p, t]) => el("li", {},
        el("a", { onclick: () => focusPath(form, p), text: p }), ": " + t))));
  }
}

function focusPath(form, p) {
  const input = form.querySelector(`[data-path-input="${CSS.escape(p)}"]`) || slotFor(form, p);
  if (input) { input.scrollIntoView({ block: "center" }); if (input.focus) input.focus(); }
}

