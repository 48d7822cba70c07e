// The log-in helpers (static/auth.js): the challenge answer must equal the server's HMAC.
import assert from "node:assert/strict";
import { createHmac, webcrypto } from "node:crypto";
import { test } from "node:test";

import { challengeAnswer, hmacHex, launchCode, loginFailure } from "../../../src/saxsdog/server/static/auth.js";

test("hmacHex is hex(HMAC-SHA256(secret, message))", async () => {
  const secret = "web-leash-test-secret-k7Qx9ZpL2mVw4TnR8sYb", nonce = "bm9uY2U_-x";
  const expected = createHmac("sha256", secret).update(nonce).digest("hex");
  assert.equal(await hmacHex(secret, nonce, webcrypto.subtle), expected);
  assert.equal(await hmacHex("ü-secret", "ñ", webcrypto.subtle), createHmac("sha256", "ü-secret").update("ñ").digest("hex"));
});

test("the answer uses the pasted secret without surrounding blanks", async () => {
  const body = await challengeAnswer("  s3cret\n", "abc", webcrypto.subtle);
  assert.deepEqual(body, { nonce: "abc", mac: createHmac("sha256", "s3cret").update("abc").digest("hex") });
});

test("no WebCrypto: a clear error", async () => {
  await assert.rejects(hmacHex("s", "n", null), /no WebCrypto/);
});

test("launch codes come from the URL fragment only", () => {
  assert.equal(launchCode("#code=AbC-_9"), "AbC-_9");
  assert.equal(launchCode("#x=1&code=zz"), "zz");
  assert.equal(launchCode("#code="), null);
  assert.equal(launchCode(""), null);
  assert.equal(launchCode("#code=a<b"), "a");
});

test("log-in failures", () => {
  assert.equal(loginFailure({ status: 401, message: "x" }), "Wrong secret.");
  assert.equal(loginFailure({ status: 0, message: "the server did not answer" }), "Login failed: the server did not answer");
});
