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
subnormals, powers of ten, ties, negative zero), for single numbers and for tables.

Tables (:func:`table_bytes`, the ``.chi`` body) go through one kernel in two passes: every
number's 19 digits and exponent first, then the text, two digits per table look-up.  A
number's digits are one long chain of dependent operations; in a loop of their own the
processor overlaps several numbers' chains, which halves the time per number (a Pilatus
curve's 2000 intensities and errors: about 0.1 ms).  ``ChiFormatter`` formats its x column
once (:func:`lead_column`) and has NaN and infinities written as zeros in the kernel.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["available", "format_e18", "format_rows", "format_table_bytes", "lead_column", "table_bytes"]

#: Powers 10^n held as double-double for n in [_NMIN, _NMAX]: the scales 10^(18−k) of the
#: exponents k in [−290, 290] and the powers 10^(k+1) that decide k (:func:`_exponent_of`).
_NMIN, _NMAX = -290, 308
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


#: "00" "01" ... "99" as ASCII codes: two digits per table look-up.
_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode("ascii"), dtype=np.uint8).copy()

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

        Without branches on the value (the fraction, its sign and the round-up are as good
        as random: mispredicted branches cost more than the arithmetic), the checks folded
        into ``ok``.
        """
        n = 18 - k
        i = np.uint64(n - _NMIN)  # the table starts at 10^_NMIN
        if i >= hi.size:  # a neighbour of the smallest exponents (|x| near 1e-290): Python's
            return np.uint64(0), 0, False
        p, e = _two_product(ax, hi[i])
        e += ax * lo[i]
        # normalise (p, e) so that p is the double nearest the sum
        s = p + e
        e = e - (s - p)
        p = s
        ok = (p >= 9e17) & (p < 1.1e19)
        # p is an integer (spacing >= 128 above 2^59), so p/2 is exact and below 2^63: an
        # int64 conversion (one instruction; uint64's is a branch); clamped, so that a p far
        # out of range (wrong k) converts to something defined before it is refused
        ip = np.uint64(np.int64(min(max(p, 0.0), 1.1e19) * 0.5)) << np.uint64(1)
        # the fraction lives in e (|e| <= 1024): floor it and add it, wrapping (negative too)
        fl = np.floor(e)
        frac = e - fl
        q = ip + np.uint64(np.int64(fl))
        # a fraction near 0 or 1 rounds to the same integer whichever side it is on; near
        # one half Python decides; the floor must be in [10^18, 10^19), else k was wrong
        ok = ok & (abs(frac - 0.5) >= 1e-9) & (q >= np.uint64(1000000000000000000)) & (
            q < np.uint64(10000000000000000000))
        q += np.uint64(frac > 0.5)
        carry = q == np.uint64(10000000000000000000)
        if carry:
            q = np.uint64(1000000000000000000)
        return q, 1 if carry else 0, ok

    @numba.njit(cache=True, nogil=True, inline="always")
    def _exponent_of(ax, bits, hi):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """floor(log10(ax)) for a normal ``ax`` (``bits`` its IEEE bits) in the table's range,
        without a logarithm: the binary exponent times log10(2) (78913 / 2^18, exact over
        this range) is the decimal one or one less, and the power above decides.  Where the
        table's power is not exactly 10^n the answer may be one off, which :func:`_digits`
        refuses (the neighbouring exponent is then tried)."""
        e2 = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF)) - 1023
        k = (e2 * 78913) >> 18
        return k + np.int64(ax >= hi[np.uint64(k + 1 - _NMIN)])

    # The text writers index with unsigned integers: numba checks every signed index for a
    # negative value (Python's wraparound), a compare and a branch per byte that also keeps
    # LLVM from vectorizing copies (unsigned: the .chi text about twice as fast).  Mixing
    # uint64 with a literal or an int64 gives int64 in numba, hence np.uint64(n) offsets.

    @numba.njit(cache=True, nogil=True, inline="always")
    def _nine_digits(v, out, pos):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """The 9 digits of ``v`` (< 10^9) at ``out[pos:pos + 9]``: independent divisions (no chain)."""
        p = np.uint64(pos)
        two = np.uint64(2)
        out[p] = np.uint8(np.uint64(48) + v // np.uint64(100000000))
        b = two * ((v // np.uint64(1000000)) % np.uint64(100))
        c = two * ((v // np.uint64(10000)) % np.uint64(100))
        d = two * ((v // np.uint64(100)) % np.uint64(100))
        e = two * (v % np.uint64(100))
        one = np.uint64(1)
        out[p + np.uint64(1)] = _PAIRS[b]
        out[p + np.uint64(2)] = _PAIRS[b + one]
        out[p + np.uint64(3)] = _PAIRS[c]
        out[p + np.uint64(4)] = _PAIRS[c + one]
        out[p + np.uint64(5)] = _PAIRS[d]
        out[p + np.uint64(6)] = _PAIRS[d + one]
        out[p + np.uint64(7)] = _PAIRS[e]
        out[p + np.uint64(8)] = _PAIRS[e + one]

    @numba.njit(cache=True, nogil=True)
    def _digits_near(ax, k, hi, lo):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """:func:`_digits` at the exponents beside ``k`` (``k + 1``, then ``k − 1``): log10 may
        be off by one near powers of ten.  Returns ``(q, carry, ok, exponent used)``."""
        q, carry, ok = _digits(ax, k + 1, hi, lo)
        if ok:
            return q, carry, ok, k + 1
        q, carry, ok = _digits(ax, k - 1, hi, lo)
        return q, carry, ok, k - 1 if ok else k

    @numba.njit(cache=True, nogil=True)
    def _exponent_into(k, out, pos):  # type: ignore[no-untyped-def]  # pragma: no cover
        """``e±dd`` (three digits from 100 on) of the decimal exponent ``k`` at ``out[pos:]``;
        returns the position after it (int64)."""
        p = np.uint64(pos)
        out[p] = 101  # 'e'
        out[p + np.uint64(1)] = 43 if k >= 0 else 45
        p += np.uint64(2)
        ek = abs(k)
        if ek >= 100:
            out[p] = 48 + ek // 100
            out[p + np.uint64(1)] = 48 + (ek // 10) % 10
            out[p + np.uint64(2)] = 48 + ek % 10
            return np.int64(p + np.uint64(3))
        out[p] = 48 + ek // 10
        out[p + np.uint64(1)] = 48 + ek % 10
        return np.int64(p + np.uint64(2))

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
            q, carry, ok, k = _digits_near(ax, k, hi, lo)
        if not ok:
            return -1
        k += carry
        if x < 0:
            out[pos] = 45  # '-'
            pos += 1
        # 19 digits d.dddddddddddddddddd: the first, then two 9-digit halves, two digits at
        # a time from a table
        lead = q // np.uint64(1000000000000000000)
        rest = q - lead * np.uint64(1000000000000000000)
        upper = rest // np.uint64(1000000000)
        lower = rest - upper * np.uint64(1000000000)
        out[pos] = np.uint8(48 + lead)
        out[pos + 1] = 46  # '.'
        _nine_digits(upper, out, pos + 2)
        _nine_digits(lower, out, pos + 11)
        return _exponent_into(k, out, pos + 20)

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

    # Kinds of value for the table kernel's two passes.
    _POSITIVE, _NEGATIVE, _ZERO, _NEGATIVE_ZERO, _PYTHON = 0, 1, 2, 3, 4

    @numba.njit(cache=True, nogil=True)
    def _decompose(x, bits, zero_nonfinite, hi, lo):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """(kind, 19 digits, decimal exponent) of ``'%.18e' % x`` (kinds: 0 positive, 1 negative,
        2 zero, 3 negative zero, 4 Python must format it, 5 log10's exponent was wrong: see
        :func:`_decompose_again`)."""
        if not (x == x) or abs(x) == np.inf:
            return (2 if zero_nonfinite else 4), np.uint64(0), 0
        if x == 0.0:
            return (3 if np.signbit(x) else 2), np.uint64(0), 0
        ax = abs(x)
        if ax < 1e-290 or ax > 1e290:
            return 4, np.uint64(0), 0
        k = _exponent_of(ax, bits, hi)
        q, carry, ok = _digits(ax, k, hi, lo)
        if not ok:  # rare: kept out of this loop-hot function (one call here is much faster)
            return 5, np.uint64(0), k
        return (1 if x < 0 else 0), q, k + carry

    @numba.njit(cache=True, nogil=True)
    def _decompose_again(x, k, hi, lo):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """:func:`_decompose` for kind 5: log10 may be off by one near powers of ten, so the
        neighbouring exponents are tried once each; kind 4 when neither fits (or Python must
        decide)."""
        q, carry, ok, k = _digits_near(abs(x), k, hi, lo)
        if not ok:
            return 4, np.uint64(0), 0
        return (1 if x < 0 else 0), q, k + carry

    @numba.njit(cache=True, nogil=True)
    def _emit(kind, q, k, out, pos):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        """Write a decomposed value (kinds 0-3) at ``out[pos:]``; return the new position."""
        p = np.uint64(pos)
        if kind == 1 or kind == 3:
            out[p] = 45  # '-'
            p += np.uint64(1)
        if kind >= 2:
            q = np.uint64(0)
            k = 0
            out[p] = 48
        else:
            lead = q // np.uint64(1000000000000000000)
            q -= lead * np.uint64(1000000000000000000)
            out[p] = np.uint8(np.uint64(48) + lead)
        out[p + np.uint64(1)] = 46  # '.'
        upper = q // np.uint64(1000000000)
        _nine_digits(upper, out, p + np.uint64(2))
        _nine_digits(q - upper * np.uint64(1000000000), out, p + np.uint64(11))
        return _exponent_into(k, out, p + np.uint64(20))

    @numba.njit(cache=True, nogil=True)
    def _table_into(table, bits, rows, lead, lead_at, zero_nonfinite, hi, lo, out, sep, line_end,  # type: ignore[no-untyped-def]  # pragma: no cover
                    slow_at):
        """The rows ``rows`` of ``table`` (2-D, any layout), each after its pre-rendered lead text
        ``lead[lead_at[r]:lead_at[r + 1]]`` (none when ``lead`` is empty; ``bits`` is ``table``
        viewed as uint64), with separators and
        line ends; non-finite values as 0 with ``zero_nonfinite``.  Python's cases are left
        out, their (flat index in ``table``, byte position) recorded in ``slow_at``.

        Two passes: every number's digits first, then the text.  Each number's digits are a
        long chain of dependent operations; computed in a loop of their own, the processor
        overlaps several numbers' chains (about twice as fast as one pass).

        Returns (bytes written, count of Python's cases).
        """
        nrows = rows.size
        ncols = table.shape[1]
        kinds = np.empty(nrows * ncols, dtype=np.uint8)
        digits = np.empty(nrows * ncols, dtype=np.uint64)
        exponents = np.empty(nrows * ncols, dtype=np.int64)
        for r in range(nrows):
            src = np.uint64(rows[r])
            for c in range(ncols):
                i = np.uint64(r * ncols + c)
                uc = np.uint64(c)
                kind, q, k = _decompose(table[src, uc], bits[src, uc], zero_nonfinite, hi, lo)
                kinds[i] = kind
                digits[i] = q
                exponents[i] = k
        has_lead = lead.size > 0
        pos = np.uint64(0)
        nslow = 0
        one = np.uint64(1)
        for r in range(nrows):
            src = rows[r]
            if has_lead:
                a, b = np.uint64(lead_at[src]), np.uint64(lead_at[src + 1])
                for j in range(b - a):
                    out[pos + np.uint64(j)] = lead[a + np.uint64(j)]
                pos += b - a
            for c in range(ncols):
                if c > 0 or has_lead:
                    for j in range(sep.size):
                        out[pos] = sep[np.uint64(j)]
                        pos += one
                i = np.uint64(r * ncols + c)
                kind = kinds[i]
                q = digits[i]
                k = exponents[i]
                if kind == 5:
                    kind, q, k = _decompose_again(table[src, c], k, hi, lo)
                if kind == 4:
                    slow_at[nslow, 0] = src * ncols + c
                    slow_at[nslow, 1] = np.int64(pos)
                    nslow += 1
                else:
                    pos = np.uint64(_emit(kind, q, k, out, pos))
            for j in range(line_end.size):
                out[pos] = line_end[np.uint64(j)]
                pos += one
        return np.int64(pos), nslow

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
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    return table_bytes(table, separator, line_end)


#: ``np.arange(n)`` for the row counts seen (every row of a table, in order).
_ALL_ROWS: dict[int, np.ndarray] = {}
_NO_LEAD = np.empty(0, dtype=np.uint8)
_NO_LEAD_AT = np.zeros(1, dtype=np.int64)


#: Separators and line ends as the kernel takes them, by text (a worker formats the same two
#: for every frame: no encode and array per call).
_CODES: dict[str, np.ndarray] = {}


def _code(text: str) -> np.ndarray:
    code = _CODES.get(text)
    if code is None:
        code = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        if len(_CODES) < 64:
            _CODES[text] = code
    return code


def table_bytes(table: np.ndarray, separator: str = " ", line_end: str = "\n ",
                rows: np.ndarray | None = None, lead: tuple[np.ndarray, np.ndarray] | None = None,
                zero_nonfinite: bool = False) -> bytes:
    """Rows of a 2-D float64 table as ``'%.18e'`` text (ASCII bytes), exactly Python's.

    Parameters
    ----------
    table
        ``(rows, columns)`` float64 (any layout).
    separator, line_end
        Between two values of a row; after each row.
    rows
        Indices of the rows written, in this order (``None``: all).
    lead
        ``(text, offsets)``: each row's text before its first value (then a separator), row
        ``r``'s at ``text[offsets[r]:offsets[r + 1]]``, e.g. a column formatted once
        (:func:`lead_column`).  ``None``: rows begin with their first value.
    zero_nonfinite
        Write NaN and infinities as ``0.000000000000000000e+00`` (as
        ``numpy.nan_to_num`` would make them) instead of ``nan``/``inf``.
    """
    text = table_buffer(table, separator, line_end, rows=rows, lead=lead, zero_nonfinite=zero_nonfinite)
    return text if isinstance(text, bytes) else text.tobytes()


def table_buffer(table: np.ndarray, separator: str = " ", line_end: str = "\n ",
                 rows: np.ndarray | None = None, lead: tuple[np.ndarray, np.ndarray] | None = None,
                 zero_nonfinite: bool = False) -> bytes | memoryview:
    """:func:`table_bytes`'s text without its last copy: a read-only view of the formatted
    bytes (or ``bytes``), for a writer that takes buffers (``os.writev``).

    The same arguments and the same bytes as :func:`table_bytes`.
    """
    table = np.asarray(table, dtype=np.float64)
    nrows, ncols = table.shape
    if rows is None:
        rows = _ALL_ROWS.get(nrows)
        if rows is None:
            rows = _ALL_ROWS[nrows] = np.arange(nrows, dtype=np.int64)
    if not _AVAILABLE:
        values = table[rows]
        if zero_nonfinite:
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if lead is None:
            row = separator.join(["%.18e"] * ncols) + line_end
            return ((row * len(rows)) % tuple(values.ravel().tolist())).encode("ascii")
        text, at = lead
        pieces = [bytes(text[at[r]:at[r + 1]]) + (separator + separator.join(["%.18e"] * ncols)
                                                  % tuple(v) + line_end).encode("ascii")
                  for r, v in zip(rows.tolist(), values.tolist())]
        return b"".join(pieces)
    hi, lo = _power_table()
    sep, end_bytes = _code(separator), _code(line_end)
    lead_text, lead_at = (_NO_LEAD, _NO_LEAD_AT) if lead is None else lead
    size = (int(lead_at[-1]) if lead is not None else 0) + len(rows) * (
        ncols * (27 + sep.size) + end_bytes.size)
    out = np.empty(size, dtype=np.uint8)
    slow_at = np.empty((len(rows) * ncols, 2), dtype=np.int64)
    used, nslow = _table_into(table, table.view(np.uint64), rows, lead_text, lead_at, zero_nonfinite, hi, lo, out, sep, end_bytes,
                              slow_at)
    if nslow == 0:
        return memoryview(out[:used]).toreadonly()  # type: ignore[arg-type]
    pieces = []
    last = 0
    for index, position in slow_at[:nslow].tolist():
        r, c = divmod(index, ncols)
        pieces.append(out[last:position].tobytes())
        pieces.append(("%.18e" % float(table[r, c])).encode("ascii"))  # noqa: UP031
        last = position
    pieces.append(out[last:used].tobytes())
    return b"".join(pieces)


def lead_column(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column formatted once as :func:`table_bytes`'s ``lead``: ``(text, offsets)``."""
    # through the table kernel (one line per value) rather than format_e18's: one compiled
    # function less to load at start-up
    lines = table_bytes(np.asarray(values, dtype=np.float64).reshape(-1, 1), " ", "\n").split(b"\n")[:-1]
    text = np.frombuffer(b"".join(lines), dtype=np.uint8).copy()  # writable: the signature of no lead
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    return text, offsets
