"""The secret-strength estimate: genuine random secrets always pass, repetitive ones never do.

Before, about 0.4 % of random 43-character URL-safe secrets (``secrets.token_urlsafe(32)``,
exactly 256 bits) were refused: the estimate shrank the alphabet whenever a secret showed
somewhat fewer distinct symbols than average, and judged a secret without digits or ``-_``
by letters only.
"""

from __future__ import annotations

import base64
import math
import random
import secrets

import pytest

from saxsdog.protocol.netconf import (
    MIN_SECRET_BITS,
    _fewest_random_distinct,
    _shortest_unlikely_repeat,
    generate_secret,
    secret_entropy_bits,
)

SAMPLES = 20_000

ENCODINGS = {
    "token_urlsafe(32)": lambda: secrets.token_urlsafe(32),                       # 43 characters
    "token_hex(32)": lambda: secrets.token_hex(32),                               # 64 hex digits
    "hex upper case": lambda: secrets.token_hex(32).upper(),
    "base64 of 32 bytes": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),  # 44, "=" padded
    "urlsafe base64 of 32 bytes": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "saxsnetconf": generate_secret,                                                # 64, 384 bits
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.slow
def test_every_random_32_byte_secret_passes(encoding):
    make = ENCODINGS[encoding]
    weakest = min(secret_entropy_bits(make()) for _ in range(SAMPLES))
    assert weakest >= MIN_SECRET_BITS


def test_random_secrets_without_digits_or_symbols_pass():
    # the rare draws that tripped the old estimate, made on purpose: base64 secrets that show
    # only letters (p = 1.3e-4 each), few distinct symbols, or no '-'/'_'
    rng = random.Random(12)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    for _ in range(2000):
        assert secret_entropy_bits("".join(rng.choice(letters) for _ in range(43))) >= MIN_SECRET_BITS
        few = rng.sample(letters + "0123456789", 16)  # as few distinct symbols as the bound allows
        secret = "".join(rng.choice(few) for _ in range(43))
        if len(set(secret)) >= _fewest_random_distinct(43, 64):
            assert secret_entropy_bits(secret) >= MIN_SECRET_BITS


@pytest.mark.parametrize("weak", [
    "a" * 16,
    "a" * 200,
    "ab" * 60,
    "Some large random string.",                       # the original manual's example secret
    "password" * 8,                                    # a dictionary word repeated
    "password" * 10 + "!",                             # ... with a suffix
    "Password1" * 6,
    "-".join(["correct", "horse", "battery", "staple"] * 3),
    "correcthorsebatterystaple" * 3 + "1",
    "abcdefghijklmnopqrstuvwxyz" * 4,
    "0123456789" * 10,
    "deadbeef" * 8,                                    # 64 "hex digits"
    "".join(random.Random(3).choice("ab") for _ in range(120)),   # 120 symbols of two kinds
    secrets.token_urlsafe(24),                         # random, but only 192 bits
    secrets.token_hex(31),                             # random, but only 248 bits
])
def test_repetitive_or_short_secrets_fail(weak):
    assert secret_entropy_bits(weak) < MIN_SECRET_BITS


@pytest.mark.parametrize("length,alphabet", [(43, 64), (64, 16), (64, 64), (44, 95), (16, 16)])
def test_random_strings_stay_clear_of_the_repetition_bounds(length, alphabet):
    # the bounds are union bounds at 2**-40; here their values and an empirical check
    fewest = _fewest_random_distinct(length, alphabet)
    log2_p = (math.lgamma(alphabet + 1) - math.lgamma(fewest) - math.lgamma(alphabet - fewest + 2)
              ) / math.log(2) + length * math.log2((fewest - 1) / alphabet) if fewest > 1 else -math.inf
    assert log2_p <= -40  # P(distinct <= fewest - 1) <= 2**-40
    repeat = _shortest_unlikely_repeat(length, alphabet)
    assert math.log2(length * (length - 1) / 2) - repeat * math.log2(alphabet) <= -40
    rng = random.Random(length * alphabet)
    symbols = [chr(0x100 + i) for i in range(alphabet)]
    for _ in range(2000):
        s = [rng.choice(symbols) for _ in range(length)]
        assert len(set(s)) >= fewest
        grams = ["".join(s[i:i + repeat]) for i in range(length - repeat + 1)]
        assert len(grams) == len(set(grams))


def test_known_values():
    assert _fewest_random_distinct(43, 64) == 16  # random 43 base64 characters show about 31
    assert _shortest_unlikely_repeat(43, 64) == 9
    assert _shortest_unlikely_repeat(64, 16) == 13
    assert secret_entropy_bits("dmsT9bnkpqt3Hkd4QXorEQnE0co9JHNTIuQyvE5JBl4") == pytest.approx(258.0)
    assert secret_entropy_bits("Yw2rK9vQmZ4tL8xN1cB6hJ3pF7sD0gA5eU2iO9kRwTs") == pytest.approx(258.0)  # no -_
    assert secret_entropy_bits("YwrKvQmZtLxNcBhJpFsDgAeUiOkRwTsPqHbnMdEaWzX") == pytest.approx(258.0)  # letters
    assert secret_entropy_bits("YwrKvQmZtLxNcBhJpFsDgAeUiOkRwTsPqHbnMdEaWzX=") == pytest.approx(258.0)  # padding
    assert secret_entropy_bits(generate_secret()) >= 384
