"""The absolute-scale fit: water level, reference tables, and the errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saxsdog.io.chi import write_chi
from saxsdog.reduction.absolute import (
    WATER_20C_PER_CM,
    AbsoluteScaleError,
    MeasuredCurve,
    ReferenceTable,
    applied_normalization,
    fit_scale,
    fit_water,
    parse_reference_table,
    read_curve,
    read_reference_table,
    water_compressibility,
    water_cross_section,
    water_density,
    with_absolute_scale,
)


def glassy_carbon(q: np.ndarray) -> np.ndarray:
    """A glassy-carbon-like dΣ/dΩ(q) in 1/cm (q in nm⁻¹): a Guinier term and a power law."""
    return 30.0 * np.exp(-(q * 4.0) ** 2 / 3.0) + 0.08 * q ** -2.6 + 0.02


def noisy_curve(q: np.ndarray, model: np.ndarray, counts_per_unit: float, pixels: np.ndarray,
                seed: int = 3, source: str = "synthetic") -> tuple[MeasuredCurve, float]:
    """A measured mean-counts-per-pixel curve of ``model`` with Poisson noise, and its true factor."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(model * counts_per_unit * pixels).astype(float)
    intensity = counts / pixels
    error = np.sqrt(np.maximum(counts, 1.0)) / pixels
    return MeasuredCurve(q, intensity, error, source), 1.0 / counts_per_unit


# --------------------------------------------------------------------------- water

def test_water_properties_match_published_values() -> None:
    # Kell (1975) at 20 °C: 998.204 kg/m³, 45.89e-6 /bar; at 4 °C the density maximum.
    assert water_density(20.0) == pytest.approx(998.204, abs=1e-3)
    assert water_compressibility(20.0) == pytest.approx(45.89e-11, rel=1e-3)
    assert water_density(4.0) > water_density(0.0) and water_density(4.0) > water_density(8.0)
    assert water_cross_section() == WATER_20C_PER_CM == 0.01632
    # The fluctuation formula n²(Z r_e)² k_B T κ_T gives the published value within 1 %.
    n = water_density(20.0) / 18.01528e-3 * 6.02214076e23
    theory_per_cm = n ** 2 * (10 * 2.8179403262e-15) ** 2 * 1.380649e-23 * 293.15 * water_compressibility(20.0) / 100
    assert theory_per_cm == pytest.approx(WATER_20C_PER_CM, rel=0.01)
    assert water_cross_section(40.0) / WATER_20C_PER_CM == pytest.approx(1.0174, abs=1e-3)


@pytest.mark.parametrize("t", [-5.0, 101.0, float("nan")])
def test_water_temperature_outside_liquid_range_refused(t: float) -> None:
    with pytest.raises(AbsoluteScaleError, match="outside 0–100 °C"):
        water_cross_section(t)


def test_water_curve_gives_known_factor() -> None:
    q = np.linspace(0.1, 3.0, 300)
    curve, true_factor = noisy_curve(q, np.full(q.size, WATER_20C_PER_CM), 2.0e4, np.full(q.size, 400.0))
    fit = fit_water(curve)
    assert fit.factor == pytest.approx(true_factor, rel=0.005)
    assert abs(fit.factor - true_factor) < 4 * fit.uncertainty
    assert fit.points == 300 and fit.q_min == pytest.approx(0.1) and fit.q_max == pytest.approx(3.0)
    assert 0.7 < fit.chi2_reduced < 1.3
    assert "factor:" in fit.report() and "300 points" in fit.report()


def test_water_temperature_changes_the_factor() -> None:
    q = np.linspace(0.1, 3.0, 50)
    curve = MeasuredCurve(q, np.full(q.size, 2.0), np.full(q.size, 0.01), "w.chi")
    assert fit_water(curve, 40.0).factor / fit_water(curve, 20.0).factor == pytest.approx(
        water_cross_section(40.0) / WATER_20C_PER_CM)


def test_water_image_integrated_gives_known_factor() -> None:
    """A synthetic water image (flat, Poisson) integrated by a calibration: factor within 0.5 %."""
    from saxsdog.calibration import Calibration
    from saxsdog.testing import small_calibration

    cal = Calibration(small_calibration(), cache=False)
    rng = np.random.default_rng(11)
    level = 5000.0  # counts per pixel for the water's 0.01632 1/cm
    image = rng.poisson(level, size=cal.shape).astype(np.int32)
    c = cal.curves(image)[0]
    keep = c.has_data & (c.x > 0)
    curve = MeasuredCurve(c.x[keep], c.intensity[keep], c.poisson[keep], "water.tif")
    fit = fit_water(curve)
    assert fit.factor == pytest.approx(WATER_20C_PER_CM / level, rel=0.005)


def test_q_range_limits_the_fit() -> None:
    q = np.linspace(0.1, 10.0, 100)
    intensity = np.where(q < 5, 1.0, 3.0)  # a "structure peak" above 5 nm⁻¹
    curve = MeasuredCurve(q, intensity, np.full(q.size, 0.01), "w.chi")
    fit = fit_water(curve, q_range=(0.1, 4.9))
    assert fit.factor == pytest.approx(WATER_20C_PER_CM)
    assert fit.q_max <= 4.9 and fit.points == 49
    with pytest.raises(AbsoluteScaleError, match=r"w\.chi: fewer than 2 bins with data in the q range 20 – 30"):
        fit_water(curve, q_range=(20.0, 30.0))


# --------------------------------------------------------------------------- reference tables

def _reference_file(tmp_path: Path, q_nm: np.ndarray, sigma_rel: float | None = 0.02,
                    unit_header: str = "# q (A^-1), dSigma/dOmega (1/cm), sigma") -> Path:
    rows = [unit_header]
    values = glassy_carbon(q_nm)
    for qq, v in zip(q_nm / 10.0, values):  # in 1/Å, as the certificate
        rows.append(f"{qq:.6g},{v:.6g}" + (f",{v * sigma_rel:.4g}" if sigma_rel else ""))
    path = tmp_path / "srm3600.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_glassy_carbon_reference_fit_within_one_percent(tmp_path: Path) -> None:
    reference = read_reference_table(_reference_file(tmp_path, np.geomspace(0.08, 2.5, 40)))
    assert reference.q[0] == pytest.approx(0.08, rel=1e-5) and "header" in reference.q_unit_note
    q = np.linspace(0.02, 3.0, 600)  # wider than the reference: only the shared range is used
    pixels = 20.0 + 400.0 * q  # more pixels per bin further out, as on a detector
    curve, true_factor = noisy_curve(q, glassy_carbon(q), 50.0, pixels, seed=5)
    fit = fit_scale(curve, reference)
    assert fit.factor == pytest.approx(true_factor, rel=0.01)
    assert fit.uncertainty > 0 and abs(fit.factor - true_factor) < 5 * fit.uncertainty
    assert fit.q_min >= 0.08 and fit.q_max <= 2.5
    assert fit.points == int(np.sum((q >= reference.q[0]) & (q <= reference.q[-1])))


def test_reference_without_sigma_and_curve_without_errors(tmp_path: Path) -> None:
    reference = read_reference_table(_reference_file(tmp_path, np.geomspace(0.08, 2.5, 40), None))
    assert reference.sigma is None
    q = np.linspace(0.1, 2.0, 100)
    curve = MeasuredCurve(q, glassy_carbon(q) / 7.0, None, "gc.chi")
    fit = fit_scale(curve, reference)
    # log-log interpolation of a smooth curve: ~1e-3 between 40 log-spaced nodes
    assert fit.factor == pytest.approx(7.0, rel=2e-3)
    assert np.isnan(fit.chi2_reduced) and "n/a" in fit.report()


def test_log_log_interpolation_is_exact_for_a_power_law() -> None:
    q_ref = np.geomspace(0.05, 5.0, 7)
    reference = ReferenceTable(q_ref, 3.0 * q_ref ** -4.0, None, "porod.dat")
    q = np.linspace(0.06, 4.0, 80)
    fit = fit_scale(MeasuredCurve(q, q ** -4.0, 1e-3 * q ** -4.0, "s.chi"), reference)
    assert fit.factor == pytest.approx(3.0, rel=1e-10)


def test_no_overlap_is_refused_with_both_ranges(tmp_path: Path) -> None:
    reference = read_reference_table(_reference_file(tmp_path, np.geomspace(0.08, 2.5, 40)))
    q = np.linspace(3.0, 6.0, 50)
    curve = MeasuredCurve(q, np.ones(50), np.full(50, 0.1), "waxs.chi")
    with pytest.raises(AbsoluteScaleError) as info:
        fit_scale(curve, reference)
    message = str(info.value)
    assert "do not overlap" in message and "waxs.chi" in message and "srm3600.csv" in message
    assert "3 to 6 nm⁻¹" in message and "0.08 to 2.5 nm⁻¹" in message


def test_wrong_q_unit_suggested_when_ranges_miss() -> None:
    reference = parse_reference_table("0.01 10\n0.02 5\n0.05 2\n", "gc.dat", "1/nm")
    q = np.linspace(0.1, 2.0, 50)
    with pytest.raises(AbsoluteScaleError, match="--q-unit"):
        fit_scale(MeasuredCurve(q, np.ones(50), np.full(50, 0.1), "gc.chi"), reference)
    assert parse_reference_table("0.01 10\n0.02 5\n", "gc.dat", "1/A").q.tolist() == [0.1, 0.2]
    assert "no unit" in parse_reference_table("0.01 10\n0.02 5\n", "gc.dat").q_unit_note


@pytest.mark.parametrize("text, problem", [
    ("# q I\n0.1,1.0\n0.2,-3.0\n0.3,1.0\n", r"gc\.csv, line 3: dΣ/dΩ = -3 is not positive"),
    ("0.1,1.0\n-0.2,1.0\n", r"gc\.csv, line 2: q = -0.2 is not positive"),
    ("0.1,1,0.1\n0.2,1,-0.1\n", r"gc\.csv, line 2: σ = -0.1 is negative"),
    ("q\n0.1\n0.2\n", r"gc\.csv, line 2: missing column"),
    ("q,I\n0.1,1\n0.2,x\n", r"gc\.csv, line 3: not a number"),
    ("# only a header\n", r"gc\.csv: no data rows"),
    ("0.1,1\n0.1,2\n", r"gc\.csv, lines 1 and 2: q = 0.1 is given twice"),
])
def test_bad_reference_tables_name_file_and_problem(text: str, problem: str) -> None:
    with pytest.raises(AbsoluteScaleError, match=problem):
        parse_reference_table(text, "gc.csv")


def test_reference_table_formats(tmp_path: Path) -> None:
    for text in ("q I sigma\n0.2 2 0.1\n0.1 1 0.1\n", "0.1;1;0.1\n0.2;2;0.1\n", "0.1\t1\t0.1\n0.2\t2\t0.1\n"):
        table = parse_reference_table(text, "t.dat")
        assert table.q.tolist() == [0.1, 0.2] and table.value.tolist() == [1.0, 2.0]  # sorted by q
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AbsoluteScaleError, match=r"empty\.csv: the file is empty"):
        read_reference_table(empty)
    with pytest.raises(AbsoluteScaleError, match=r"missing\.csv: no such file"):
        read_reference_table(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- measured curves

def test_read_chi_curve_drops_empty_bins(tmp_path: Path) -> None:
    path = tmp_path / "water.chi"
    q = np.linspace(0.0, 1.0, 11)
    intensity = np.full(11, 2.0)
    error = np.full(11, 0.1)
    intensity[3] = error[3] = 0.0  # an empty bin, as the original writes it
    write_chi(path, [q, intensity, error], {"Normalization": {"AbsoluteScale": 2.5, "ThicknessMM": 1.0}})
    curve = read_curve(path)
    assert curve.q.size == 9  # q = 0 and the empty bin dropped
    assert applied_normalization(curve.calibration) == (2.5, 1.0)
    assert applied_normalization(None) == (1.0, None)


def test_bad_measured_curves_name_file_and_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.chi"
    empty.write_text("")
    with pytest.raises(AbsoluteScaleError, match=r"empty\.chi: the file is empty"):
        read_curve(empty)
    with pytest.raises(AbsoluteScaleError, match=r"nothere\.chi: no such file"):
        read_curve(tmp_path / "nothere.chi")
    garbage = tmp_path / "garbage.chi"
    garbage.write_text("a\nb\nc\nd\n1 2 x\n")
    with pytest.raises(AbsoluteScaleError, match=r"garbage\.chi: not a \.chi file"):
        read_curve(garbage)
    zeros = tmp_path / "zeros.chi"
    write_chi(zeros, [np.linspace(0.1, 1, 5), np.zeros(5), np.zeros(5)])
    with pytest.raises(AbsoluteScaleError, match=r"zeros\.chi: the curve has no bins with data"):
        read_curve(zeros)
    negative = MeasuredCurve(np.linspace(0.1, 1, 5), np.full(5, -1.0), np.full(5, 0.1), "neg.chi")
    with pytest.raises(AbsoluteScaleError, match=r"neg\.chi: the measured intensity is not positive"):
        fit_water(negative)


def test_nxcansas_curve_is_read(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    from saxsdog.io.nxcansas import write_nxcansas

    q = np.linspace(0.1, 2.0, 40)
    path = tmp_path / "water.h5"
    write_nxcansas(path, [{"name": "water", "q": q, "I": np.full(40, 3.0), "Idev": np.full(40, 0.03)}])
    curve = read_curve(path)
    assert curve.q.size == 40
    assert fit_water(curve).factor == pytest.approx(WATER_20C_PER_CM / 3.0)


def test_with_absolute_scale_keeps_the_rest() -> None:
    cal = {"Wavelength": 1.54, "Normalization": {"ThicknessMM": 1.0}}
    out = with_absolute_scale(cal, 0.25)
    assert out == {"Wavelength": 1.54, "Normalization": {"ThicknessMM": 1.0, "AbsoluteScale": 0.25}}
    assert cal["Normalization"] == {"ThicknessMM": 1.0}
    with pytest.raises(AbsoluteScaleError, match="not a positive number"):
        with_absolute_scale(cal, -1.0)


def test_plain_column_curve_files(tmp_path: Path) -> None:
    dat = tmp_path / "water.dat"
    dat.write_text("# water from another program\nq I sigma\n" + "".join(f"{q:.3f} 2.0 0.02\n" for q in np.linspace(0.1, 2, 30)))
    curve = read_curve(dat)
    assert curve.q.size == 30 and curve.calibration is None
    assert fit_water(curve).factor == pytest.approx(WATER_20C_PER_CM / 2.0)
    two = tmp_path / "two.csv"
    two.write_text("0.1,2\n0.2,2\n0.3,2\n")
    assert read_curve(two).error is None
    short = tmp_path / "short.dat"
    short.write_text("0.1 2 0.1\n0.2\n")
    with pytest.raises(AbsoluteScaleError, match=r"short\.dat, line 2: missing column"):
        read_curve(short)


@pytest.mark.slow
def test_water_image_on_the_real_detector(real_calibration, data_dir: Path) -> None:
    """A flat Poisson "water" image on the Pilatus 1M geometry and FIT2D mask of cal.json,
    with the detector's gap pixels (−1) as the real image has them: the factor within 0.5 %."""
    from saxsdog.io.images import read_image

    real = read_image(data_dir / "buf1_00000.tif").data
    level = 40.0  # counts per pixel: a short water exposure
    image = np.random.default_rng(8).poisson(level, size=real.shape).astype(np.int32)
    image[real < 0] = real[real < 0]  # gaps and dead pixels
    c = real_calibration.curves(image)[0]
    keep = c.has_data & (c.x > 0) & (c.intensity > 0)
    fit = fit_water(MeasuredCurve(c.x[keep], c.intensity[keep], c.poisson[keep], "water.tif"))
    assert fit.factor == pytest.approx(WATER_20C_PER_CM / level, rel=0.005)
