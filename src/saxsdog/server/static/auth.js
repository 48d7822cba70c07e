// Log-in: the page proves it knows the shared secret by answering a one-time challenge with
// hex(HMAC-SHA256(secret, nonce)); the secret itself is never sent and never stored.

/** hex(HMAC-SHA256(secret, message)) with WebCrypto (`subtle` is crypto.subtle). */
export async function hmacHex(secret, message, subtle = globalThis.crypto && globalThis.crypto.subtle) {
  if (!subtle) throw new Error("no WebCrypto in this context");
  const enc = new TextEncoder();
  const key = await subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = await subtle.sign("HMAC", key, enc.encode(message));
  return Array.from(new Uint8Array(sig), b => b.toString(16).padStart(2, "0")).join("");
}

/** The single-use launch code of a `#code=...` URL fragment (from the leash command), or null. */
export function launchCode(hash) {
  const m = /(?:^#|&)code=([A-Za-z0-9_-]+)/.exec(hash || "");
  return m ? m[1] : null;
}

/** The log-in request body answering a challenge `nonce` with `secret`. */
export async function challengeAnswer(secret, nonce, subtle) {
  return { nonce, mac: await hmacHex(secret.trim(), nonce, subtle) };
}

export const INSECURE_CONTEXT = "This page is not a secure context, so the browser cannot compute the " +
  "login proof. Open it as http://127.0.0.1:PORT or http://localhost:PORT (an SSH tunnel works), " +
  "or start it with the leash command.";

/** The message shown for a failed log-in. */
export function loginFailure(error) {
  return error && error.status === 401 ? "Wrong secret." : "Login failed: " + (error ? error.message : "unknown error");
}
