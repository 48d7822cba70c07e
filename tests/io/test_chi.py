"""The .chi format: byte compatibility with the original writer and reading all variants."""

from __future__ import annotations

import io
import os
import json

import numpy as np
import pytest

from saxsdog.io.chi import RADIAL_LABELS, ChiFormatter, format_chi, read_chi, write_chi


def original_writer(columns, calibration, parameters, labels) -> bytes:
    """The original's call: numpy.savetxt with a four-line JSON header."""
    data = np.array(columns).T
    header = (json.dumps(calibration) + "\n" + json.dumps(parameters) + "\n" + json.dumps(labels)
              + "\n" + "   " + str(data.shape[0]))
    buf = io.BytesIO()
    np.savetxt(buf, data, fmt="%.18e", delimiter=" ", newline="\n ", header=header, comments="")
    return buf.getvalue()


def test_bytes_identical_to_numpy_savetxt():
    rng = np.random.default_rng(0)
    cols = [np.linspace(0.001, 5, 257), rng.random(257) * 1e4, rng.random(257)]
    cal = {"Title": "x", "Wavelength": 1.54}
    par = {"I0": 1.5, "I1": 2.0, "I2": 3.25}
    ours = format_chi(cols, cal, par, RADIAL_LABELS)
    assert ours == original_writer(cols, cal, par, RADIAL_LABELS)
    assert ours.endswith(b"\n ")
    assert ours.split(b"\n")[4].startswith(b" ")


def test_nan_never_reaches_a_file(tmp_path):
    write_chi(tmp_path / "a.chi", [np.array([1.0, 2.0]), np.array([np.nan, 3.0]), np.array([np.inf, 1.0])])
    text = (tmp_path / "a.chi").read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower()
    back = read_chi(tmp_path / "a.chi")
    assert back.intensity.tolist() == [0.0, 3.0] and back.error.tolist() == [0.0, 1.0]


def test_reads_original_2014_output(data_dir):
    c = read_chi(data_dir / "reference" / "buf1_00000.saxsdog.chi")
    assert c.q.size == 1003 and c.error is not None
    assert c.calibration is None and c.header[1] == "q [nm^-1]"
    assert np.isclose(c.q[0], 3.366602370545553665e-03)


def test_reads_fit2d_output(data_dir):
    c = read_chi(data_dir / "reference" / "buf1_00000.fit2d.chi")
    assert c.q.size == 1002 and c.error is None
    assert np.isclose(c.intensity[13], 4.2949194e03)


def test_row_count_mismatch_is_an_error(tmp_path):
    p = tmp_path / "bad.chi"
    p.write_text("{}\n{}\n[]\n   3\n 1 2 3\n")
    with pytest.raises(ValueError, match="announces 3 rows"):
        read_chi(p)
    p.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match="not a .chi file"):
        read_chi(p)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_chi(tmp_path / "a.chi", [np.arange(3.0)] * 3)
    assert list(tmp_path.iterdir()) == []


def test_cached_formatter_gives_the_same_bytes():
    rng = np.random.default_rng(3)
    q = np.linspace(0.001, 5, 300)
    f = ChiFormatter(q, {"Title": "t"}, RADIAL_LABELS)
    for _ in range(3):
        i, e = rng.random(300) * 1e5, rng.random(300)
        i[:7] = np.nan
        par = {"I0": float(rng.random())}
        assert f.render(i, e, par) == format_chi([q, i, e], {"Title": "t"}, par, RADIAL_LABELS)


def test_formatter_bytes_equal_savetxt_on_awkward_values():
    """The formatter writes through saxsdog.io.fastfloat: subnormals, negative zero, powers of
    ten, halfway-looking values, huge and tiny numbers must still be savetxt's bytes."""
    from saxsdog.io import fastfloat

    assert fastfloat.available()
    rng = np.random.default_rng(17)
    n = 2000
    q = np.sort(rng.random(n)) * 5
    awkward = np.array([0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1e-300, 1e300, 1e22, 1e23, 0.5,
                        2.5, 1.0000000000000000005, 9.9999999999999999995e7, 123456789012345678.5,
                        np.nan, np.inf, -np.inf])
    i = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)
    e = np.abs(rng.standard_normal(n)) * 10.0 ** rng.integers(-300, 300, n)
    i[:awkward.size] = awkward
    e[-awkward.size:] = awkward
    f = ChiFormatter(q, {"Title": "t"}, RADIAL_LABELS)
    par = {"I0": 1.0}
    ours = f.render(i, e, par)
    clean = [np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0) for c in (q, i, e)]
    assert ours == original_writer(clean, {"Title": "t"}, par, RADIAL_LABELS)
    keep = rng.random(n) > 0.3
    assert f.render(i, e, par, keep=keep) == original_writer([c[keep] for c in clean], {"Title": "t"}, par,
                                                             RADIAL_LABELS)


def test_formatter_drops_empty_bins_only_when_asked(tmp_path):
    """Empty bins stay 0 rows (the original's layout) unless ``keep`` drops them; the dropped
    file is what format_chi writes for the kept rows, and read_chi reads it."""
    from saxsdog.io.chi import drop_empty_bins

    q = np.linspace(0.01, 5, 50)
    i = np.linspace(1.0, 2.0, 50)
    e = np.full(50, 0.1)
    has_data = np.ones(50, dtype=bool)
    has_data[:5] = has_data[20:22] = False
    i[~has_data] = e[~has_data] = 0.0
    f = ChiFormatter(q, {"Title": "t"}, RADIAL_LABELS)
    full = f.render(i, e, {"I0": 1.0})
    assert full == f.render(i, e, {"I0": 1.0}, keep=np.ones(50, dtype=bool))
    assert full == format_chi([q, i, e], {"Title": "t"}, {"I0": 1.0}, RADIAL_LABELS)
    dropped = f.render(i, e, {"I0": 1.0}, keep=has_data)
    assert dropped == format_chi(drop_empty_bins([q, i, e], has_data), {"Title": "t"}, {"I0": 1.0}, RADIAL_LABELS)
    (tmp_path / "d.chi").write_bytes(dropped)
    back = read_chi(tmp_path / "d.chi")
    np.testing.assert_array_equal(back.q, q[has_data])
    np.testing.assert_array_equal(back.intensity, i[has_data])
    assert back.header[3].strip() == "43"
    assert f.render(i, e, {"I0": 1.0}) == full  # the cached rows are untouched


def test_stale_partials_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".a.chi.{dead}.1234.part"
    live = tmp_path / f".b.chi.{os.getpid()}.1234.part"
    other = tmp_path / ".notes.part"
    for p in (stale, live, other):
        p.write_text("x")
    from saxsdog.io.atomic import remove_stale_partials

    assert remove_stale_partials(tmp_path) == 1
    assert not stale.exists() and live.exists() and other.exists()


def test_partials_of_zombie_writers_are_stale(tmp_path):
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited but not waited for: a zombie
        with open(f"/proc/{child.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    stale = tmp_path / f".a.chi.{child.pid}.1.part"
    stale.write_text("x")
    from saxsdog.io.atomic import remove_stale_partials

    try:
        assert remove_stale_partials(tmp_path) == 1 and not stale.exists()
    finally:
        child.wait()


def test_render_parts_are_the_rendered_bytes_in_pieces_for_every_unit_and_row_choice():
    """render_parts (what a worker hands to one os.writev) joins to render's bytes, and these
    are savetxt's, whichever unit labels the intensity (the labels line is kept per unit) and
    whether empty bins are dropped; the table piece is a read-only view, not a copy."""
    from saxsdog.io.chi import intensity_label

    rng = np.random.default_rng(5)
    q = np.linspace(0.01, 5, 120)
    f = ChiFormatter(q, {"Title": "t"}, RADIAL_LABELS)
    for unit in (None, "counts/pixel", "1/cm/sr", "1/cm/sr", "counts/pixel/s"):
        i, e = rng.random(120) * 1e3, rng.random(120)
        keep = rng.random(120) > 0.2
        par = {"I0": float(rng.random())}
        labels = list(RADIAL_LABELS)
        if unit is not None:
            labels[1] = intensity_label(unit)
        for rows in (None, keep):
            parts = f.render_parts(i, e, par, keep=rows, unit=unit)
            joined = b"".join(parts)
            assert joined == f.render(i, e, par, keep=rows, unit=unit)
            cols = [q, i, e] if rows is None else [c[rows] for c in (q, i, e)]
            assert joined == original_writer(cols, {"Title": "t"}, par, labels)
            assert isinstance(parts[-1], memoryview) and parts[-1].readonly
