// The page's request queue and connection state (static/api.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, ConnectionHealth, RequestQueue, formatDuration } from "../../../src/saxsdog/server/static/api.js";

/** A request function whose answer the test gives; it rejects when aborted, as fetch does. */
function controllable() {
  const calls = [];
  const perform = signal => new Promise((resolve, reject) => {
    const call = { resolve, reject, signal, aborted: false };
    signal.addEventListener("abort", () => { call.aborted = true; reject(new DOMException("aborted", "AbortError")); });
    calls.push(call);
  });
  return { calls, perform };
}

const tick = () => new Promise(r => setImmediate(r));

test("at most maxConcurrent requests run; the next starts when one finishes", async () => {
  const q = new RequestQueue({ maxConcurrent: 2, maxBackground: 1, timeoutMs: 10000 });
  const { calls, perform } = controllable();
  const answers = [q.send(perform), q.send(perform), q.send(perform)];
  assert.equal(calls.length, 2);
  calls[0].resolve("a");
  assert.equal(await answers[0], "a");
  await tick();
  assert.equal(calls.length, 3);
  calls[1].resolve("b");
  calls[2].resolve("c");
  assert.deepEqual(await Promise.all(answers.slice(1)), ["b", "c"]);
});

test("hung background requests never take the slots of user commands", async () => {
  const q = new RequestQueue({ maxConcurrent: 3, maxBackground: 2, timeoutMs: 10000 });
  const bg = controllable(), user = controllable();
  q.send(bg.perform, { background: true, key: "plotdata" });
  q.send(bg.perform, { background: true, key: "fileslist" });
  q.send(bg.perform, { background: true, key: "plot" });  // waits: two background ones run
  assert.equal(bg.calls.length, 2);
  const answer = q.send(user.perform);
  assert.equal(user.calls.length, 1, "the user's command starts at once");
  user.calls[0].resolve("stat");
  assert.equal(await answer, "stat");
  bg.calls[0].resolve(null);
  await tick();
  assert.equal(bg.calls.length, 3, "the waiting background request starts when one ends");
  for (const c of bg.calls) c.resolve(null);
});

test("durations in messages", () => {
  assert.equal(formatDuration(20000), "20 s");
  assert.equal(formatDuration(1500), "1.5 s");
  assert.equal(formatDuration(30), "30 ms");
});

test("a background request with the key of one on its way shares it", async () => {
  const q = new RequestQueue({ timeoutMs: 10000 });
  const { calls, perform } = controllable();
  const a = q.send(perform, { background: true, key: "plotdata" });
  const b = q.send(perform, { background: true, key: "plotdata" });
  assert.equal(a, b);
  assert.equal(calls.length, 1);
  calls[0].resolve(1);
  assert.equal(await a, 1);
  q.send(perform, { background: true, key: "plotdata" });  // a new one once that one is done
  assert.equal(calls.length, 2);
  calls[1].resolve(2);
});

test("a request without an answer is aborted at its deadline and reported", async () => {
  const outcomes = [];
  const q = new RequestQueue({ maxConcurrent: 1, timeoutMs: 30, onOutcome: o => outcomes.push(o) });
  const { calls, perform } = controllable();
  const hung = q.send(perform, { what: "'plotdata'" });
  const next = q.send(perform, { timeoutMs: 5000 });
  await assert.rejects(hung, e => e instanceof ApiError && e.timeout && /did not answer 'plotdata' within 30 ms/.test(e.message));
  assert.ok(calls[0].aborted, "the hung request is cancelled (its connection freed)");
  await tick();
  assert.equal(calls.length, 2, "the waiting request gets the slot");
  calls[1].resolve("ok");
  assert.equal(await next, "ok");
  assert.deepEqual(outcomes, ["timeout", "ok"]);
});

test("the deadline counts the wait for a slot too", async () => {
  const q = new RequestQueue({ maxConcurrent: 1, timeoutMs: 5000 });
  const { calls, perform } = controllable();
  q.send(perform);
  const waiting = q.send(perform, { timeoutMs: 20 });
  await assert.rejects(waiting, e => e.timeout);
  assert.equal(calls.length, 1, "it never started");
  assert.equal(q.waiting.length, 0);
  calls[0].resolve(null);
});

test("an HTTP error is an answer; a failed connection is not", async () => {
  const outcomes = [];
  const q = new RequestQueue({ onOutcome: o => outcomes.push(o), timeoutMs: 5000 });
  await assert.rejects(q.send(() => Promise.reject(new ApiError("bad", 400))), e => e.status === 400);
  await assert.rejects(q.send(() => Promise.reject(new TypeError("Failed to fetch"))),
    e => e instanceof ApiError && /no connection to the server \(Failed to fetch\)/.test(e.message));
  assert.deepEqual(outcomes, ["ok", "error"]);
});

test("connection state: live, silent, a timed-out request, offline", () => {
  let now = 1000;
  const h = new ConnectionHealth({ staleMs: 5000, now: () => now });
  assert.equal(h.state, "offline");
  h.wsOpened();
  assert.equal(h.state, "live");
  assert.equal(h.badge().text, "live");
  now += 4000; h.wsMessage();
  now += 4000;
  assert.equal(h.state, "live");
  now += 2000;  // 6 s without the once-a-second statistics
  assert.equal(h.state, "not answering");
  assert.match(h.badge().title, /no message from the server for 6 s/);
  assert.equal(h.badge().kind, "warn");
  h.wsMessage();
  assert.equal(h.state, "live");
  now += 10; h.requestTimedOut();
  assert.equal(h.state, "not answering", "the live connection talks but commands hang");
  assert.match(h.badge().title, /a request got no answer in time/);
  now += 10; h.requestAnswered();
  assert.equal(h.state, "live");
  h.wsClosed();
  assert.equal(h.state, "offline");
});

test("command deadlines and names come from the server's command table", async () => {
  const { commandTimeout, setCommandTable, settings } = await import("../../../src/saxsdog/server/static/api.js");
  const table = new Map();
  assert.equal(commandTimeout("anything", table), settings.timeoutMs);  // before the table is in
  setCommandTable([{ name: "stat", aliases: [], runs: "inline" },
                   { name: "new", aliases: ["newqueue"], runs: "serial" },
                   { name: "listdir", aliases: [], runs: "parallel" }], table);
  assert.equal(commandTimeout("stat", table), settings.timeoutMs);
  assert.equal(commandTimeout("new", table), settings.slowTimeoutMs);
  assert.equal(commandTimeout("newqueue", table), settings.slowTimeoutMs);
  assert.equal(commandTimeout("listdir", table), settings.slowTimeoutMs);
  assert.throws(() => commandTimeout("nwe", table), (e) => e instanceof ApiError && /unknown command 'nwe'.*stat, new, listdir/.test(e.message));
});
