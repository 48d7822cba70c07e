// Small DOM helpers shared by the page's modules (nothing here runs at import time).

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** An element with attributes (`class`, `text`, `on*` listeners, others as attributes) and children. */
export function el(tag, attrs = {}, ...children) {
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

/** Show a status message in `target` (a selector or an element); kind is "", "ok" or "error". */
export function say(target, text, kind = "") {
  const node = typeof target === "string" ? $(target) : target;
  node.textContent = text;
  node.className = "msg" + (kind ? " " + kind : "");
}

export function setBadge(sel, text, kind, title) {
  const b = $(sel);
  b.textContent = text;
  b.className = "badge " + kind;
  if (title !== undefined) b.title = title;
}

export function kvRows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v }))));
}

export function readFile(file, how = "text") {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    if (how === "text") r.readAsText(file); else r.readAsArrayBuffer(file);
  });
}

export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
