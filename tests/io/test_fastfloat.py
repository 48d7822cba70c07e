"""The fast '%.18e' formatter gives Python's bytes exactly (the .chi format of the original)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from saxsdog.io.fastfloat import available, format_e18, format_rows


def python(values):
    return ["%.18e" % v for v in np.asarray(values, dtype=np.float64).ravel().tolist()]  # noqa: UP031


def special_values() -> np.ndarray:
    tiny = np.nextafter(0.0, 1.0)
    powers = [10.0 ** n for n in range(-320, 309)]
    neighbours = [np.nextafter(p, np.inf) for p in powers if p > 0] + [np.nextafter(p, 0.0) for p in powers if p > 0]
    halves = [n + 0.5 for n in range(-50, 50)] + [0.5 ** n for n in range(1, 80)]
    # doubles whose exact value has a 20th significant digit of 5 and nothing after: true ties
    ties = [float(f"1.23456789012345678{d}5e{e}") for d in range(10) for e in (-3, 0, 7)]
    ties += [2.0 ** 63 + 2.0 ** 11 * k for k in range(-20, 20)]
    ints = [float(n) for n in range(-1000, 1000)] + [float(10 ** n) for n in range(0, 23)]
    extremes = [tiny, -tiny, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308,
                0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-300, 1e290, 9.999999999999999e289]
    return np.array(powers + neighbours + halves + ties + ints + extremes, dtype=np.float64)


def test_special_values_match_python():
    values = special_values()
    assert format_e18(values) == python(values)


def test_negative_zero_and_non_finite():
    assert format_e18(np.array([-0.0, 0.0, np.nan, np.inf, -np.inf])) == \
        ["-0.000000000000000000e+00", "0.000000000000000000e+00", "nan", "inf", "-inf"]


def random_doubles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform over bit patterns (every exponent, subnormals, NaN payloads) plus curve-like values."""
    bits = rng.integers(0, 2 ** 64, size=n, dtype=np.uint64)
    a = bits.view(np.float64)
    b = rng.lognormal(0, 8, size=n) * rng.choice([-1, 1], size=n)
    return np.concatenate([a, b])


def test_random_doubles_match_python():
    rng = np.random.default_rng(1)
    values = random_doubles(rng, 50_000)
    assert format_e18(values) == python(values)


@pytest.mark.slow
def test_ten_million_random_doubles_match_python():
    rng = np.random.default_rng(20261201)
    for _ in range(10):
        values = random_doubles(rng, 500_000)
        assert format_e18(values) == python(values)


def test_rows_equal_the_original_savetxt_layout():
    rng = np.random.default_rng(3)
    cols = [rng.random(7), rng.lognormal(0, 3, 7), rng.random(7)]
    expected = ("%.18e %.18e %.18e\n " * 7) % tuple(np.column_stack(cols).ravel().tolist())
    assert format_rows(cols) == expected


def test_fast_path_is_taken():
    assert available()
    from saxsdog.io import fastfloat

    hi, lo = fastfloat._power_table()
    values = np.linspace(0.001, 3.0, 1000)
    out = np.empty(values.size * 27, dtype=np.uint8)
    starts = np.empty(values.size + 1, dtype=np.int64)
    slow = np.zeros(values.size, dtype=np.bool_)
    fastfloat._format_into(values, hi, lo, out, starts, slow)
    assert slow.sum() <= 2  # nearly all numbers are formatted without Python


def test_a_wrong_digit_would_be_seen():
    x = struct.unpack("<d", struct.pack("<Q", 0x3FF0000000000001))[0]  # 1 + 2^-52
    assert format_e18(np.array([x])) == ["1.000000000000000222e+00"]


def test_table_bytes_with_python_cases_spliced_in():
    from saxsdog.io.fastfloat import format_table_bytes

    rng = np.random.default_rng(5)
    cols = [rng.random(50), rng.lognormal(0, 3, 50), rng.random(50)]
    cols[1][[0, 7, 49]] = [np.nan, np.inf, 1e-310]  # Python formats these three
    cols[2][[3, 4]] = [0.0, -0.0]
    expected = ("%.18e %.18e %.18e\n " * 50) % tuple(np.column_stack(cols).ravel().tolist())
    assert format_table_bytes(cols) == expected.encode("ascii")
    assert format_table_bytes(cols, ",", "\n") == (("%.18e,%.18e,%.18e\n" * 50) % tuple(
        np.column_stack(cols).ravel().tolist())).encode("ascii")


def python_table(values: np.ndarray, separator: str = " ", line_end: str = "\n ") -> bytes:
    """What ``numpy.savetxt(fmt='%.18e')`` writes for a table (Python's own formatting)."""
    row = separator.join(["%.18e"] * values.shape[1]) + line_end
    return ((row * values.shape[0]) % tuple(values.ravel().tolist())).encode("ascii")


def test_table_bytes_special_values_match_python():
    """The table kernel (two passes: digits, then text) gives Python's bytes on every awkward
    value, in every column position."""
    from saxsdog.io.fastfloat import table_bytes

    values = special_values()
    values = values[: values.size - values.size % 3].reshape(-1, 3)
    assert table_bytes(values) == python_table(values)
    assert table_bytes(values[:, ::-1], ",", "\n") == python_table(values[:, ::-1], ",", "\n")


def test_table_bytes_random_doubles_match_python():
    from saxsdog.io.fastfloat import table_bytes

    values = random_doubles(np.random.default_rng(11), 60_000).reshape(-1, 3)
    assert table_bytes(values) == python_table(values)


@pytest.mark.slow
def test_table_bytes_ten_million_random_doubles_match_python():
    from saxsdog.io.fastfloat import table_bytes

    rng = np.random.default_rng(20261202)
    for _ in range(10):
        values = random_doubles(rng, 500_000).reshape(-1, 2)
        assert table_bytes(values) == python_table(values)


def test_the_table_kernel_s_exponent_without_a_logarithm_is_log10_s_or_refused():
    """The table kernel's decimal exponent from the binary one (no log10) equals
    floor(log10(|x|)) except beside powers of ten whose double is not exact, where it may
    be one off, which the digits' check refuses (then the neighbours are tried): on every
    power of ten of the table's range, its neighbours and random doubles, the exponent is
    never off by more than one, only beside a power, and the text is Python's."""
    from fractions import Fraction

    from saxsdog.io import fastfloat
    from saxsdog.io.fastfloat import table_bytes

    hi, lo = fastfloat._power_table()
    rng = np.random.default_rng(17)
    powers = np.array([10.0 ** n for n in range(-289, 290)])
    values = np.concatenate([powers, np.nextafter(powers, 0.0), np.nextafter(powers, np.inf),
                             10.0 ** rng.uniform(-289, 289, 20_000)])
    values = values[(values > 1e-290) & (values < 1e290)]
    off = 0
    for x in values.tolist():
        guess = fastfloat._exponent_of(x, np.float64(x).view(np.uint64), hi)
        exact = Fraction(x)
        true_k = int(np.floor(np.log10(x)))
        while Fraction(10) ** (true_k + 1) <= exact:
            true_k += 1
        while Fraction(10) ** true_k > exact:
            true_k -= 1
        assert abs(guess - true_k) <= 1, (x, guess, true_k)
        if guess != true_k:
            assert not fastfloat._digits(x, guess, hi, lo)[2], (x, guess)  # refused
            assert abs(x - hi[guess - fastfloat._NMIN]) <= 2 * np.spacing(x), x  # beside a power of ten
            off += 1
    assert 0 < off <= powers.size  # (the inexact powers themselves and a few neighbours)
    table = values[: values.size - values.size % 2].reshape(-1, 2)
    assert table_bytes(table) == python_table(table)
    # the ends of the table's range, where a neighbouring exponent leaves the power table
    edges = np.array([np.nextafter(1e-290, 1.0), 1.0000001e-290, 1.5e-290, 9.999999e-290, 1e-289,
                      np.nextafter(1e290, 0.0), 9.9e289, 1.0000001e289, -1.5e-290, -9.9e289]).reshape(-1, 2)
    assert table_bytes(edges) == python_table(edges)


def test_table_bytes_rows_lead_and_non_finite_as_zero():
    """``rows`` picks and orders rows, ``lead`` is each row's text before a separator, and
    ``zero_nonfinite`` writes NaN and infinities as numpy.nan_to_num would make them."""
    from saxsdog.io.fastfloat import lead_column, table_bytes

    rng = np.random.default_rng(9)
    x = np.linspace(0.01, 5, 40)
    table = rng.lognormal(0, 4, (40, 2))
    table[[1, 5, 9], 0] = [np.nan, np.inf, -np.inf]
    table[[2, 6], 1] = [-0.0, 1e-310]
    rows = np.array([0, 1, 2, 5, 6, 9, 39, 3])
    clean = np.nan_to_num(table, nan=0.0, posinf=0.0, neginf=0.0)
    expected = python_table(np.column_stack([x, clean])[rows])
    assert table_bytes(table, rows=rows, lead=lead_column(x), zero_nonfinite=True) == expected
    assert table_bytes(table, zero_nonfinite=False) == python_table(table)


def test_table_bytes_without_numba_are_the_same(monkeypatch):
    """The pure-Python fallback (numba missing) writes the same bytes, lead, rows and zeros too."""
    from saxsdog.io import fastfloat

    rng = np.random.default_rng(21)
    x = np.linspace(0.01, 5, 30)
    table = rng.lognormal(0, 5, (30, 2))
    table[[3, 4], 1] = [np.nan, -np.inf]
    lead = fastfloat.lead_column(x)
    rows = np.array([0, 3, 4, 29, 7])
    fast = [fastfloat.table_bytes(table, rows=rows, lead=lead, zero_nonfinite=True),
            fastfloat.table_bytes(table, ",", "\n")]
    monkeypatch.setattr(fastfloat, "_AVAILABLE", False)
    assert fastfloat.table_bytes(table, rows=rows, lead=lead, zero_nonfinite=True) == fast[0]
    assert fastfloat.table_bytes(table, ",", "\n") == fast[1]
