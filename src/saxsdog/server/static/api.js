// Requests to the server: one queue with time limits, and the connection state shown in the header.
//
// Why a queue: a browser opens at most six HTTP/1.1 connections to one server.  Requests the page
// makes by itself (history, file list, latest curve) are coalesced per kind and limited to two at a
// time, so a slow or hung one can never take the connections a user's command needs; every request
// has a deadline, after which it is cancelled (freeing its connection) and reported, so nothing
// waits for ever and the header says "not answering" instead of "live".

/** An error answer of the server, or no answer at all (`timeout`, status 0). */
export class ApiError extends Error {
  constructor(message, status = 0, { timeout = false } = {}) {
    super(message);
    this.status = status;
    this.timeout = timeout;
  }
}

/** `20000` -> `"20 s"`, `1500` -> `"1.5 s"`, `30` -> `"30 ms"`. */
export function formatDuration(ms) {
  return ms >= 1000 ? `${Number((ms / 1000).toFixed(1))} s` : `${Math.round(ms)} ms`;
}

/**
 * Runs request functions with a concurrency limit, a reserve for user requests and deadlines.
 *
 * `send(perform, {timeoutMs, background, key})` calls `perform(signal)` (which must honour the
 * AbortSignal) when a slot is free.  A background request with the `key` of one still waiting or
 * running shares that one's promise instead of adding another.  The deadline counts from the call,
 * waiting included; at the deadline the request is aborted and its promise rejects with an
 * ApiError whose `timeout` is true.
 */
export class RequestQueue {
  constructor({ maxConcurrent = 4, maxBackground = 2, timeoutMs = 20000, onOutcome = () => {},
    setTimer = (fn, ms) => setTimeout(fn, ms), clearTimer = id => clearTimeout(id) } = {}) {
    this.maxConcurrent = maxConcurrent;
    this.maxBackground = Math.min(maxBackground, maxConcurrent);
    this.timeoutMs = timeoutMs;
    this.onOutcome = onOutcome;  // ("ok" | "error" | "timeout", job) after each request
    this.setTimer = setTimer;
    this.clearTimer = clearTimer;
    this.waiting = [];
    this.running = new Set();
    this.byKey = new Map();
  }

  get backgroundRunning() {
    let n = 0;
    for (const j of this.running) if (j.background) n++;
    return n;
  }

  send(perform, { timeoutMs = this.timeoutMs, background = false, key = null, what = "request" } = {}) {
    if (key !== null && this.byKey.has(key)) return this.byKey.get(key).promise;
    const job = { perform, background, key, what, timeoutMs, done: false, controller: null };
    job.promise = new Promise((resolve, reject) => { job.resolve = resolve; job.reject = reject; });
    job.timer = this.setTimer(() => this._timeout(job), timeoutMs);
    if (key !== null) this.byKey.set(key, job);
    this.waiting.push(job);
    this._pump();
    return job.promise;
  }

  _pump() {
    for (let i = 0; i < this.waiting.length && this.running.size < this.maxConcurrent;) {
      const job = this.waiting[i];
      if (job.background && this.backgroundRunning >= this.maxBackground) { i++; continue; }
      this.waiting.splice(i, 1);
      this._start(job);
    }
  }

  _start(job) {
    this.running.add(job);
    job.controller = new AbortController();
    let result;
    try {
      result = Promise.resolve(job.perform(job.controller.signal));
    } catch (e) {
      result = Promise.reject(e);
    }
    result.then(value => {
      if (job.done) return;
      this._finish(job);
      this.onOutcome("ok", job);
      job.resolve(value);
    }, error => {
      if (job.done) return;
      this._finish(job);
      // an HTTP error status is an answer; only a failed connection counts against the server
      this.onOutcome(error instanceof ApiError && error.status ? "ok" : "error", job);
      job.reject(error instanceof ApiError ? error : new ApiError(`no connection to the server (${error.message})`));
    });
  }

  _timeout(job) {
    if (job.done) return;
    const wasRunning = this.running.has(job);
    this._finish(job);
    if (wasRunning) job.controller.abort();
    this.onOutcome("timeout", job);
    job.reject(new ApiError(`the server did not answer ${job.what} within ${formatDuration(job.timeoutMs)}`,
      0, { timeout: true }));
  }

  _finish(job) {
    job.done = true;
    this.clearTimer(job.timer);
    this.running.delete(job);
    const i = this.waiting.indexOf(job);
    if (i >= 0) this.waiting.splice(i, 1);
    if (job.key !== null && this.byKey.get(job.key) === job) this.byKey.delete(job.key);
    this._pump();
  }
}

/**
 * What the header says about the server: "offline" (no live connection), "live", or "not
 * answering" (the live connection fell silent — the server sends statistics every second — or a
 * request timed out and none has been answered since).
 */
export class ConnectionHealth {
  constructor({ staleMs = 5000, now = () => Date.now() } = {}) {
    this.staleMs = staleMs;
    this.now = now;
    this.open = false;
    this.lastMessage = 0;
    this.lastAnswer = 0;
    this.lastTimeout = 0;
    this.timeouts = 0;
  }

  wsOpened() { this.open = true; this.lastMessage = this.now(); }
  wsMessage() { this.lastMessage = this.now(); }
  wsClosed() { this.open = false; }
  requestAnswered() { this.lastAnswer = this.now(); }
  requestTimedOut() { this.lastTimeout = this.now(); this.timeouts++; }

  /** Milliseconds since the live connection last said anything. */
  silence() { return this.now() - this.lastMessage; }

  /** True while a timed-out request has not been followed by an answered one. */
  get commandsStuck() { return this.lastTimeout > 0 && this.lastTimeout >= this.lastAnswer; }

  get state() {
    if (!this.open) return "offline";
    if (this.silence() > this.staleMs || this.commandsStuck) return "not answering";
    return "live";
  }

  /** `{text, kind, title}` of the header badge. */
  badge() {
    const state = this.state;
    if (state === "offline") return { text: "offline", kind: "off", title: "no live connection to the server" };
    if (state === "live") return { text: "live", kind: "on", title: "live connection to the server" };
    const why = this.silence() > this.staleMs
      ? `no message from the server for ${Math.round(this.silence() / 1000)} s`
      : "a request got no answer in time";
    return { text: "not answering", kind: "warn", title: why + "; the page keeps trying" };
  }
}

export const settings = { timeoutMs: 20000, slowTimeoutMs: 120000, staleMs: 5000 };
export const health = new ConnectionHealth({ staleMs: settings.staleMs });
const listeners = { unauthorized: () => {}, health: () => {} };

/** Register `unauthorized` (a 401 answer) and `health` (after each request) callbacks. */
export function onApi(name, fn) { listeners[name] = fn; }

export const queue = new RequestQueue({
  timeoutMs: settings.timeoutMs,
  onOutcome(outcome) {
    if (outcome === "ok") health.requestAnswered();
    else if (outcome === "timeout") health.requestTimedOut();
    listeners.health();
  },
});

let token = null;
export function setToken(t) { token = t; }
export function getToken() { return token; }

/**
 * A request to the server's HTTP API (GET without `body`, else POST of JSON).
 *
 * Options: `raw` (resolve with the Response, e.g. for a PNG), `quiet401` (no log-in prompt),
 * `background` and `key` (see RequestQueue), `timeoutMs`.
 */
export function api(path, body, { raw = false, quiet401 = false, background = false, key = null,
  timeoutMs = settings.timeoutMs, what } = {}) {
  return queue.send(async signal => {
    const opts = { method: body === undefined ? "GET" : "POST", credentials: "same-origin", headers: {}, signal };
    if (token) opts.headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    if (r.status === 401 && !quiet401) listeners.unauthorized();
    if (raw && r.ok) return new Response(await r.blob(), { status: r.status, headers: r.headers });
    let data = null;
    try { data = await r.json(); } catch (e) { if (e.name === "AbortError") throw e; data = null; }
    if (!r.ok) throw new ApiError((data && data.data && data.data.Error) || `${r.status} ${r.statusText}`, r.status);
    return data;
  }, { background, key, timeoutMs, what: what || path });
}

/** The server's command table (its `commands` command), by name and alias. */
export const commandTable = new Map();

/** Take the table the server sent (a list of `{name, aliases, runs, ...}`). */
export function setCommandTable(list, table = commandTable) {
  table.clear();
  for (const c of list) for (const n of [c.name, ...(c.aliases || [])]) table.set(n, c);
}

/** The deadline of a command: those the server runs on its worker threads (they change the
 * queue, or are slow) get the long one.  An unknown name is an ApiError, once the table is in. */
export function commandTimeout(name, table = commandTable) {
  if (!table.size) return settings.timeoutMs;
  const c = table.get(name);
  if (!c) throw new ApiError(`unknown command '${name}' (the server offers: ${[...new Set([...table.values()].map(x => x.name))].join(", ")})`, 0);
  return c.runs === "inline" ? settings.timeoutMs : settings.slowTimeoutMs;
}

/** A leash command through /api/command; resolves with the handler's response. */
export function command(name, argument, attachments, opts = {}) {
  let timeoutMs;
  try { timeoutMs = commandTimeout(name); } catch (e) { return Promise.reject(e); }
  opts = { timeoutMs, ...opts };
  const body = { command: name };
  if (argument !== undefined) body.argument = argument;
  if (attachments && attachments.length) body.attachments = attachments;
  return api("/api/command", body, { what: `'${name}'`, ...opts });
}
