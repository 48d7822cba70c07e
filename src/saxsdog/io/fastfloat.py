"""Exactly the bytes of Python's ``'%.18e' % x`` for float64 arrays, many times faster.

The original SAXSDOG writes ``.chi`` columns with ``numpy.savetxt(fmt='%.18e')``: 19
significant digits, correctly rounded from the double's exact binary value (ties to even),
``e+NN`` with at least two exponent digits.  Python formats about two million numbers a
second; a Pilatus 1M frame's ``.chi`` holds three thousand, so formatting alone cost more
than the integration.

Method (all in one numba loop): for a finite, non-zero x with decimal exponent k, the 19
digits are ``round(|x|·10^(18−k))``.  ``|x|`` is exact; ``10^(18−k)`` is held as a
double-double (the two doubles nearest to the power and to its remainder, computed once
with exact integer arithmetic), and the product is formed with Dekker's exact two-product,
so it is known to about 10⁻³¹ relative: its fractional part to about 10⁻¹².  Whenever that
leaves any doubt — a fractional part within 10⁻⁹ of one half (true ties among them), a
product at the edge of [10¹⁸, 10¹⁹), or an exponent beyond what the table covers
(subnormals, |x| > 10²⁹⁰) — the number is handed to Python's own formatting.  Zero, negative
zero, NaN and infinities go to Python too.  So the output is Python's, byte for byte;
``tests/io/test_fastfloat.py`` checks this on ten million random doubles (every exponent,
subnormals, powers of ten, ties, negative zero).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["format_e18", "format_rows", "format_table_bytes", "available"]

#: Powers 10^n held as double-double for n in [_NMIN, _NMAX].
_NMIN, _NMAX = -280, 308
#: |fraction − ½| below this goes to Python (the product is good to ~1e-12 absolute).
_AMBIGUOUS = 1e-9


@lru_cache(maxsize=1)
def _power_table() -> tuple[np.ndarray, np.ndarray]:
    hi = np.empty(_NMAX - _NMIN + 1)
    lo = np.empty(_NMAX - _NMIN + 1)
    for i, n in enumerate(range(_NMIN, _NMAX + 1)):
        exact = Fraction(10) ** n
        h = float(exact)
        hi[i] = h
        lo[i] = float(exact - Fraction(h))
    return hi, lo


try:
    import numba

    @numba.njit(cache=True, nogil=True)
    def _two_product(a, b):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        # Dekker: a*b = p + e exactly (no FMA needed); 134217729 = 2^27 + 1.
        p = a * b
        t = 134217729.0 * a
        ah = t - (t - a)
        al = a - ah
        t = 134217729.0 * b
        bh = t - (t - b)
        bl = b - bh
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
        return p, e

    @numba.njit(cache=True, nogil=True)
    def _digits(ax, k, hi, lo):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """(19-digit integer, exponent carry, ok) for round(ax·10^(18−k)).

        ``ok`` is False when k is not ax's decimal exponent or when Python must decide;
        the carry is 1 when rounding up reached 10^19 (9.99…95e7 → 1.000…e8).
        """
        n = 18 - k
        i = n + 280  # the table starts at 10^-280 (_NMIN)
        p, e = _two_product(ax, hi[i])
        e += ax * lo[i]
        # normalise (p, e) so that p is the double nearest the sum
        s = p + e
        e = e - (s - p)
        p = s
        if p < 9e17 or p >= 1.1e19:
            return np.uint64(0), 0, False
        # p is an integer (spacing >= 128 above 2^60); the fraction lives in e
        ip = np.uint64(p)
        fl = np.floor(e)
        frac = e - fl
        # a fraction near 0 or 1 rounds to the same integer whichever side it is on
        if abs(frac - 0.5) < 1e-9:
            return np.uint64(0), 0, False
        if fl >= 0:
            q = ip + np.uint64(fl)
        else:
            q = ip - np.uint64(-fl)
        if q < np.uint64(1000000000000000000) or q >= np.uint64(10000000000000000000):
            return np.uint64(0), 0, False  # the floor is outside [10^18, 10^19): wrong k
        if frac > 0.5:
            q += np.uint64(1)
            if q == np.uint64(10000000000000000000):
                return np.uint64(1000000000000000000), 1, True
        return q, 0, True

    @numba.njit(cache=True, nogil=True)
    def _write_one(x, hi, lo, out, pos):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """Write ``'%.18e' % x`` at ``out[pos:]``; return the new position, or -1 for Python's cases."""
        if not (x == x) or abs(x) == np.inf:
            return -1
        if x == 0.0:
            if np.signbit(x):
                out[pos] = 45
                pos += 1
            out[pos] = 48
            out[pos + 1] = 46
            for j in range(18):
                out[pos + 2 + j] = 48
            pos += 20
            out[pos] = 101
            out[pos + 1] = 43
            out[pos + 2] = 48
            out[pos + 3] = 48
            return pos + 4
        ax = abs(x)
        if ax < 1e-290 or ax > 1e290:
            return -1
        k = int(np.floor(np.log10(ax)))
        q, carry, ok = _digits(ax, k, hi, lo)
        if not ok:
            # log10 may be off by one near powers of ten: try the neighbours once
            q, carry, ok = _digits(ax, k + 1, hi, lo)
            if ok:
                k += 1
            else:
                q, carry, ok = _digits(ax, k - 1, hi, lo)
                if ok:
                    k -= 1
        if not ok:
            return -1
        k += carry
        if x < 0:
            out[pos] = 45  # '-'
            pos += 1
        # 19 digits d.dddddddddddddddddd, written from the last one
        for j in range(19, 1, -1):
            out[pos + j] = np.uint8(48 + q % np.uint64(10))
            q //= np.uint64(10)
        out[pos] = np.uint8(48 + q)
        out[pos + 1] = 46  # '.'
        pos += 20
        out[pos] = 101  # 'e'
        out[pos + 1] = 43 if k >= 0 else 45
        pos += 2
        ek = abs(k)
        if ek >= 100:
            out[pos] = 48 + ek // 100
            out[pos + 1] = 48 + (ek // 10) % 10
            out[pos + 2] = 48 + ek % 10
            return pos + 3
        out[pos] = 48 + ek // 10
        out[pos + 1] = 48 + ek % 10
        return pos + 2

    @numba.njit(cache=True, nogil=True)
    def _format_into(values, hi, lo, out, starts, slow):  # type: ignore[no-untyped-def]  # pragma: no cover
        """Each value at ``out[starts[i]:starts[i+1]]``; ``slow[i]`` where Python must format."""
        pos = 0
        for idx in range(values.size):
            starts[idx] = pos
            end = _write_one(values[idx], hi, lo, out, pos)
            if end < 0:
                slow[idx] = True
            else:
                pos = end
        return pos

    @numba.njit(cache=True, nogil=True)
    def _table_into(table, hi, lo, out, sep, line_end, slow_at):  # type: ignore[no-untyped-def]  # pragma: no cover
        """Rows of ``table`` (C order) with separators and line ends; Python's cases are left
        out, their (flat index, byte position) recorded in ``slow_at``; returns (bytes, slow count)."""
        pos = 0
        nslow = 0
        nrows, ncols = table.shape
        for r in range(nrows):
            for c in range(ncols):
                if c > 0:
                    for b in sep:
                        out[pos] = b
                        pos += 1
                end = _write_one(table[r, c], hi, lo, out, pos)
                if end < 0:
                    slow_at[nslow, 0] = r * ncols + c
                    slow_at[nslow, 1] = pos
                    nslow += 1
                else:
                    pos = end
            for b in line_end:
                out[pos] = b
                pos += 1
        return pos, nslow

    _AVAILABLE = True
except ImportError:  # pragma: no cover - numba is a dependency
    _AVAILABLE = False


def available() -> bool:
    """Whether the fast path exists (numba imports); otherwise Python formats everything."""
    return _AVAILABLE


def format_e18(values: np.ndarray) -> list[str]:
    """Each value as ``'%.18e' % value`` (a list of str), exactly."""
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if not _AVAILABLE:
        return ["%.18e" % v for v in flat.tolist()]  # noqa: UP031 - the format being matched
    hi, lo = _power_table()
    out = np.empty(flat.size * 27, dtype=np.uint8)
    starts = np.empty(flat.size + 1, dtype=np.int64)
    slow = np.zeros(flat.size, dtype=np.bool_)
    end = _format_into(flat, hi, lo, out, starts, slow)
    starts[flat.size] = end
    text = out[:end].tobytes().decode("ascii")
    result = []
    for i in range(flat.size):
        if slow[i]:
            result.append("%.18e" % float(flat[i]))  # noqa: UP031
        else:
            result.append(text[starts[i]:starts[i + 1]])
    return result


def format_rows(columns: list[np.ndarray], separator: str = " ", line_end: str = "\n ") -> str:
    """Rows of ``'%.18e'`` values joined by ``separator``, each row ended by ``line_end``.

    The same text as ``((separator.join(['%.18e'] * ncols) + line_end) * nrows) % values``.
    """
    return format_table_bytes(columns, separator, line_end).decode("ascii")


def format_table_bytes(columns: list[np.ndarray], separator: str = " ", line_end: str = "\n ") -> bytes:
    """:func:`format_rows` as ASCII bytes, without a detour through str (the fast path)."""
    if not columns:
        return b""
    table = np.ascontiguousarray(np.column_stack([np.asarray(c, dtype=np.float64) for c in columns]))
    if not _AVAILABLE:
        row = separator.join(["%.18e"] * table.shape[1]) + line_end
        return ((row * table.shape[0]) % tuple(table.ravel().tolist())).encode("ascii")
    hi, lo = _power_table()
    sep = np.frombuffer(separator.encode("ascii"), dtype=np.uint8)
    end_bytes = np.frombuffer(line_end.encode("ascii"), dtype=np.uint8)
    out = np.empty(table.size * (27 + sep.size) + table.shape[0] * end_bytes.size, dtype=np.uint8)
    slow_at = np.empty((table.size, 2), dtype=np.int64)
    used, nslow = _table_into(table, hi, lo, out, sep, end_bytes, slow_at)
    if nslow == 0:
        return out[:used].tobytes()
    pieces = []
    last = 0
    flat = table.ravel()
    for index, position in slow_at[:nslow].tolist():
        pieces.append(out[last:position].tobytes())
        pieces.append(("%.18e" % float(flat[index])).encode("ascii"))  # noqa: UP031
        last = position
    pieces.append(out[last:used].tobytes())
    return b"".join(pieces)
