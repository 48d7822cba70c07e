"""Signing and verification of leash requests."""

from __future__ import annotations

import json
import threading

import pytest

from saxsdog.errors import SaxsdogError
from saxsdog.protocol.signing import (AuthError, ReplayCache, attachment_digest, canonical_json,
                                      compute_signature, sign_request, verify_request)

SECRET = "s3cr3t-Zq8V1xYw-with-enough-length-for-tests-0123456789abcdef"
NOW = 1_700_000_000.0


def signed(command="stat", argument=None, attachments=(), now=NOW, nonce=None, secret=SECRET):
    return sign_request(command, argument, secret=secret, attachments=list(attachments), now=now,
                        nonce=nonce)


def verify(env, attachments=(), now=NOW, secret=SECRET, replay=None, window=900.0):
    return verify_request(env, secret, list(attachments), replay if replay is not None else ReplayCache(window), window=window,
                          now=now)


def test_envelope_shape():
    env = signed("listdir", {"directory": ["data"]}, [b"abc"])
    assert set(env) == {"command", "argument", "time", "nonce", "attachments", "sign"}
    assert env["time"] == NOW and isinstance(env["time"], float)
    assert len(env["nonce"]) == 32 and int(env["nonce"], 16) >= 0
    assert env["attachments"] == [attachment_digest(b"abc")]
    assert len(env["sign"]) == 64
    assert "argument" not in signed("stat")


def test_good_signature_verifies_and_survives_json_round_trip():
    env = signed("new", {"calibration": {"Title": "x", "Wavelength": 1.0e-10}, "directory": ["a"]},
                 [b"\x00\x01mask", b""])
    wire = json.loads(json.dumps(env))  # what the server parses
    assert verify(wire, [b"\x00\x01mask", b""]) == wire


def test_nonces_are_random():
    assert signed()["nonce"] != signed()["nonce"]


@pytest.mark.parametrize("field,value", [
    ("command", "abort"),
    ("argument", {"directory": ["other"]}),
    ("time", NOW + 1),
    ("nonce", "0" * 32),
    ("attachments", [attachment_digest(b"evil")]),
])
def test_tampered_envelope_is_refused(field, value):
    env = signed("listdir", {"directory": ["data"]}, [b"good"])
    env[field] = value
    with pytest.raises(AuthError, match="wrong signature"):
        verify(env, [b"evil"] if field == "attachments" else [b"good"])


def test_swapped_attachment_frame_is_refused():
    env = signed("new", {"calibration": {}, "directory": ["."]}, [b"mask-bytes"])
    with pytest.raises(AuthError, match="attachment 0 does not match"):
        verify(env, [b"other-bytes"])


def test_missing_or_extra_attachment_frames_are_refused():
    env = signed("new", {"calibration": {}, "directory": ["."]}, [b"mask"])
    with pytest.raises(AuthError, match="1 attachment.*0 attachment frame"):
        verify(env, [])
    with pytest.raises(AuthError, match="1 attachment.*2 attachment frame"):
        verify(env, [b"mask", b"extra"])


def test_wrong_secret_is_refused():
    env = signed()
    with pytest.raises(AuthError, match="wrong signature"):
        verify(env, secret="another-secret-of-some-length")


@pytest.mark.parametrize("offset,word", [(-901.0, "past"), (901.0, "future"), (-1e6, "past")])
def test_stale_and_future_timestamps_are_refused(offset, word):
    env = signed(now=NOW + offset)
    with pytest.raises(AuthError, match=word):
        verify(env, now=NOW)


def test_timestamps_inside_the_window_are_accepted():
    verify(signed(now=NOW - 899.0), now=NOW)
    verify(signed(now=NOW + 899.0), now=NOW)


def test_replay_is_refused():
    cache = ReplayCache(900.0)
    env = signed()
    verify(env, replay=cache)
    with pytest.raises(AuthError, match="replayed"):
        verify(dict(env), replay=cache, now=NOW + 10)


def test_bad_signature_does_not_burn_the_nonce():
    cache = ReplayCache(900.0)
    env = signed()
    forged = dict(env, sign="0" * 64)
    with pytest.raises(AuthError):
        verify(forged, replay=cache)
    assert len(cache) == 0
    verify(env, replay=cache)  # the genuine request still goes through


@pytest.mark.parametrize("mutate,match", [
    (lambda e: e.pop("sign"), "not signed"),
    (lambda e: e.__setitem__("sign", 12), "'sign' must be a string"),
    (lambda e: e.__setitem__("sign", "zz"), "wrong signature"),
])
def test_missing_or_malformed_sign(mutate, match):
    env = signed()
    mutate(env)
    with pytest.raises(AuthError, match=match):
        verify(env)


def test_malformed_nonce_is_refused_even_when_signed():
    env = sign_request("stat", None, secret=SECRET, now=NOW)
    env["nonce"] = "not-hex"
    env["sign"] = compute_signature(env, SECRET)
    with pytest.raises(AuthError, match="nonce"):
        verify(env)
    del env["nonce"]
    env["sign"] = compute_signature(env, SECRET)
    with pytest.raises(AuthError, match="nonce"):
        verify(env)


def test_non_numeric_time_is_refused():
    env = sign_request("stat", None, secret=SECRET, now=NOW)
    env["time"] = "now"
    env["sign"] = compute_signature(env, SECRET)
    with pytest.raises(AuthError, match="'time' must be a number"):
        verify(env)


def test_errors_are_saxsdog_errors():
    assert issubclass(AuthError, SaxsdogError)


def test_secret_never_appears_in_errors_or_reprs():
    cache = ReplayCache(900.0)
    env = signed()
    texts = [repr(cache), repr(env), json.dumps(env)]
    attempts = [
        lambda: verify(dict(env, sign="0" * 64), replay=cache),
        lambda: verify(env, secret=SECRET + "x", replay=cache),
        lambda: verify(signed(now=NOW - 5000), replay=cache),
        lambda: verify(env, [b"unexpected"], replay=cache),
        lambda: (verify(env, replay=cache), verify(env, replay=cache)),
        lambda: verify({"sign": 1}, replay=cache),
        lambda: verify(dict(env, argument={"x": float("nan")}), replay=cache),
    ]
    for attempt in attempts:
        with pytest.raises(AuthError) as info:
            attempt()
        texts += [str(info.value), repr(info.value)]
    assert len(texts) == 3 + len(attempts) * 2
    for text in texts:
        assert SECRET not in text
        assert SECRET[:16] not in text


def test_canonical_json_is_independent_of_key_order():
    a = {"b": 1, "a": {"y": [1, 2], "x": "é"}, "c": None}
    b = {"c": None, "a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert canonical_json(a) == canonical_json(b) == '{"a":{"x":"\\u00e9","y":[1,2]},"b":1,"c":null}'
    env1 = sign_request("get", {"since": 1}, secret=SECRET, now=NOW, nonce="a" * 32)
    env2 = {k: env1[k] for k in reversed(list(env1))}
    assert compute_signature(env2, SECRET) == env1["sign"]


def test_canonical_json_rejects_nan_and_infinity():
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="NaN"):
            canonical_json({"x": bad})
    with pytest.raises(ValueError):
        sign_request("stat", {"x": float("nan")}, secret=SECRET)


def test_signing_needs_a_secret_and_a_good_nonce():
    with pytest.raises(ValueError, match="empty"):
        sign_request("stat", secret="")
    with pytest.raises(ValueError, match="nonce"):
        sign_request("stat", secret=SECRET, nonce="XYZ")
    with pytest.raises(TypeError):
        verify_request(signed(), SECRET, [], None)


def test_replay_cache_forgets_expired_nonces():
    cache = ReplayCache(window=10.0)
    cache.remember("a" * 32, request_time=100.0, now=100.0)
    with pytest.raises(AuthError):
        cache.remember("a" * 32, request_time=100.0, now=105.0)
    cache.remember("b" * 32, request_time=200.0, now=200.0)  # prunes "a" (expired at 110)
    assert len(cache) == 1
    cache.remember("a" * 32, request_time=200.0, now=200.0)


def test_replay_cache_refuses_when_full_instead_of_forgetting():
    cache = ReplayCache(window=10.0, max_entries=3)
    for i in range(3):
        cache.remember(f"{i:032x}", request_time=100.0, now=100.0)
    with pytest.raises(AuthError, match="replay cache holds 3"):
        cache.remember(f"{9:032x}", request_time=100.0, now=101.0)
    with pytest.raises(AuthError, match="replayed"):
        cache.remember(f"{0:032x}", request_time=100.0, now=101.0)
    cache.remember(f"{9:032x}", request_time=120.0, now=120.0)  # the old ones expired
    assert len(cache) == 1


def test_replay_cache_is_thread_safe():
    cache = ReplayCache(window=900.0)
    nonce = "c" * 32
    accepted, refused = [], []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait(timeout=10)
        try:
            cache.remember(nonce, request_time=NOW, now=NOW)
            accepted.append(1)
        except AuthError:
            refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(accepted) == 1 and len(refused) == 7
