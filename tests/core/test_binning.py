"""Integration modes on small detectors: log bins, units, ranges, sectors, cake, the χ convention,
GISAXS q scales and the errors of bad input (fast; the pyFAI comparisons on the real Pilatus
data are in test_modes_pyfai.py)."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog import Calibration
from saxsdog.core.binning import (UNITS, BinningError, azimuth_axis, chi_degrees, q_from_unit, radial_axis,
                                  radial_values)
from saxsdog.core.geometry import Geometry
from saxsdog.core.integrators import CakeIntegrator, PhiIntegrator, RadialIntegrator, integral_parameters
from saxsdog.core.operator import (build_cake_operator, build_phi_operator, build_radial_operator,
                                   build_slice_operator, polarization_factor, slice_q_scale)
from saxsdog.errors import CalibrationError
from saxsdog.testing import small_calibration

SHAPE = (120, 97)


@pytest.fixture(scope="module")
def geometry():
    return Geometry(SHAPE, (70.3, 40.8), 200.0, (172.0, 172.0), 1.54, -3.0, 40.0)


@pytest.fixture(scope="module")
def flat():
    """An untilted detector with the beam centre on a pixel corner."""
    return Geometry((101, 101), (50.0, 50.0), 100.0, (172.0, 172.0), 1.54)


# -- log bins and integral parameters -----------------------------------------------------

def test_log_bins_are_geometric_with_geometric_centres(geometry):
    axis = radial_axis(geometry, binning="log", points_per_decade=50, radial_range=(0.02, 2.0))
    assert axis.n_bins == 100 and axis.edges[0] == 0.02 and axis.edges[-1] == 2.0
    ratio = axis.edges[1:] / axis.edges[:-1]
    assert np.allclose(ratio, 10 ** (1 / 50), rtol=1e-12)
    assert np.allclose(axis.centres, np.sqrt(axis.edges[1:] * axis.edges[:-1]), rtol=1e-15)
    # labels: a value lands in the bin whose edges enclose it; outside the range none
    v = np.array([0.0199, 0.02, 0.0201, 1.999, 2.0, 5.0])
    lab = axis.labels(v)
    assert list(lab[[0, 4, 5]]) == [-1, -1, -1] and lab[1] == 0 and lab[3] == 99
    inside = np.geomspace(0.021, 1.99, 1000)
    lab = axis.labels(inside)
    assert np.all((axis.edges[lab] <= inside) & (inside < axis.edges[lab + 1]))


def test_log_operator_is_exact_and_conserves(geometry):
    op = build_radial_operator(geometry, None, 3, binning="log", points_per_decade=40, radial_range=(0.05, 2.0))
    assert op.meta["binning"] == "log" and len(op.meta["edges"]) == op.n_bins + 1
    I = RadialIntegrator(op).integrate(np.full(SHAPE, 4.5))
    assert np.allclose(I[op.bin_counts > 0], 4.5, rtol=1e-12)
    # every counted sub-pixel lies inside the range
    q = geometry.q(3)
    assert np.isclose(op.bin_counts.sum(), ((q >= 0.05) & (q < 2.0)).sum())


def _analytic(q):
    return 1e3 * np.exp(-q * q * 4.0) + 5.0 / (1.0 + q ** 4)


def test_integral_parameters_on_log_bins_equal_a_fine_linear_grid():
    lo, hi = 0.05, 3.0
    edges = np.geomspace(lo, hi, int(np.ceil(100 * np.log10(hi / lo))) + 1)
    centres = np.sqrt(edges[1:] * edges[:-1])
    p_log = integral_parameters(centres, _analytic(centres), edges=edges)
    fine = lo + (np.arange(200_000) + 0.5) * (hi - lo) / 200_000
    p_lin = integral_parameters(fine, _analytic(fine))
    for key in ("I0", "I1", "I2", "correlation_length"):
        assert p_log[key] == pytest.approx(p_lin[key], rel=1e-3), key
    # the uniform-width rule of before is far off on the same log bins
    p_old = integral_parameters(centres, _analytic(centres))
    assert abs(p_old["I0"] / p_lin["I0"] - 1) > 0.5


def test_integral_parameters_without_edges_unchanged():
    q = (np.arange(100) + 0.5) * 0.05
    I = np.exp(-q)
    p = integral_parameters(q, I, 0.5, 3.0)
    sel = (q >= 0.5) & (q <= 3.0)
    dq = q[1] - q[0]  # the midpoint rule with the first spacing, as always
    assert p["I0"] == pytest.approx(np.sum(I[sel]) * dq, rel=1e-14)
    assert p["I2"] == pytest.approx(np.sum(I[sel] * q[sel] ** 2) * dq, rel=1e-14)
    with pytest.raises(ValueError, match="edges"):
        integral_parameters(q, I, edges=np.arange(10.0))


def test_radial_integrator_integrates_log_bins_over_their_edges(geometry):
    op = build_radial_operator(geometry, None, 2, binning="log", points_per_decade=100, radial_range=(0.05, 2.0))
    it = RadialIntegrator(op, {"qStart": 0.0, "qStop": 0.0})
    I = _analytic(op.x)
    got = it.parameters(I)
    expected = integral_parameters(op.x, I, edges=np.asarray(op.meta["edges"]))
    assert got == expected


# -- units -----------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_axis_label_and_meta(geometry, unit):
    op = build_radial_operator(geometry, None, 1, unit=unit)
    assert op.x_label == UNITS[unit].label
    if unit == "q_nm^-1":
        assert "unit" not in op.meta and "edges" not in op.meta  # today's operator, unchanged
        return
    assert op.meta["unit"] == unit and op.meta["nx_unit"] == UNITS[unit].nx_unit
    # the integral parameters stay in q (nm⁻¹): centres and edges converted per unit
    assert np.allclose(op.meta["q_x"], q_from_unit(geometry, unit, op.x), rtol=1e-12)
    assert np.all(np.diff(op.meta["q_edges"]) > 0) and len(op.meta["q_edges"]) == op.n_bins + 1
    # the largest q on the detector lies in the last bin (q is monotonic in each unit)
    assert op.meta["q_edges"][-2] < geometry.max_q() <= op.meta["q_edges"][-1] * (1 + 1e-9) or unit == "r_mm"


def test_default_radial_operator_is_byte_identical_to_before(geometry):
    from saxsdog.core.operator import radial_bins

    op = build_radial_operator(geometry, None, 3, 1.5)
    n, dq = radial_bins(geometry, 1.5)
    assert op.n_bins == n and op.meta == {"dq": dq}
    assert np.array_equal(op.x, (np.arange(n) + 0.5) * dq)
    q = geometry.q(3)
    assert np.array_equal(op.bin_counts, np.bincount(np.minimum((q / dq).astype(np.int64), n - 1).ravel(),
                                                     minlength=n).astype(float))


def test_radial_range_produces_only_bins_inside(geometry):
    op = build_radial_operator(geometry, None, 2, 1.0, unit="2th_deg", radial_range=(0.5, 1.5))
    edges = np.asarray(op.meta["edges"])
    assert edges[0] == 0.5 and edges[-1] == 1.5 and np.all(op.x > 0.5) and np.all(op.x < 1.5)
    assert np.allclose(np.diff(edges), np.diff(edges)[0])


# -- the azimuth convention -------------------------------------------------------------------

def _spot_image(g: Geometry, chi_deg: float, radius_px: float = 30.0, value: float = 100.0):
    """An image that is zero except a 3×3 spot at χ (clockwise from 3 o'clock) and radius."""
    rows, cols = g.shape
    row_c, col_c = rows - g.beam_center[0], g.beam_center[1]  # beam centre from the top-left
    row = row_c + radius_px * np.sin(np.radians(chi_deg))  # clockwise: χ > 0 goes down the image
    col = col_c + radius_px * np.cos(np.radians(chi_deg))
    img = np.zeros(g.shape)
    r, c = int(row), int(col)
    img[r - 1:r + 2, c - 1:c + 2] = value
    return img, (r, c)


def test_spot_60_degrees_above_3_oclock(flat):
    img, (r, c) = _spot_image(flat, -60.0)  # 60° above 3 o'clock: up and to the right
    assert r < 50 and c > 50  # above and right of the beam on the image as read
    rc, cc = flat.pixel_centers(1)
    dx, dy = flat._offsets_mm(rc[:, None], cc[None, :])
    assert chi_degrees(flat, dx, dy)[r, c] == pytest.approx(-60.0, abs=2.0)
    # Phi-mode: the peak is in the bin around χ = −60°
    op = build_phi_operator(flat, None, 3, (0.0, np.inf), 36)
    I = PhiIntegrator(op).integrate(img)
    assert op.x[np.argmax(I)] == pytest.approx(-55.0) or op.x[np.argmax(I)] == pytest.approx(-65.0)
    # a sector around −60° sees it, the mirror sector around +60° does not
    sec = RadialIntegrator(build_radial_operator(flat, None, 3, azimuth_range=(-75, -45)))
    mirror = RadialIntegrator(build_radial_operator(flat, None, 3, azimuth_range=(45, 75)))
    assert sec.integrate(img).max() > 1 and mirror.integrate(img).max() == 0
    # the cake's row of χ = −60° holds it
    cake = CakeIntegrator(build_cake_operator(flat, None, 3, 20, 12))
    m = cake.as_map(cake.integrate(img))
    assert cake.azimuth[np.argmax(m.max(axis=1))] == pytest.approx(-45.0) or \
        cake.azimuth[np.argmax(m.max(axis=1))] == pytest.approx(-75.0)
    assert -90 < cake.azimuth[np.argmax(m.max(axis=1))] < -30
    # the polarization angle uses the same χ: a plane at Angle −60° through the spot gives
    # cos²(φ − A) = 1 there (the counter-clockwise angle +60° would give cos²(120°) = 1/4)
    tth = flat.two_theta(1)[r, c]
    p = polarization_factor(flat, 1.0, float(chi_degrees(flat, dx, dy)[r, c]))[r, c]
    assert p == pytest.approx(1.0 - np.sin(tth) ** 2, rel=1e-9)


def test_chi_down_is_plus_90(flat):
    rc, cc = flat.pixel_centers(1)
    dx, dy = flat._offsets_mm(rc[:, None], cc[None, :])
    chi = chi_degrees(flat, dx, dy)
    assert chi[90, 50] == pytest.approx(90.0, abs=1.0) and chi[10, 50] == pytest.approx(-90.0, abs=1.0)
    assert abs(chi[50, 90]) < 1.0 and abs(chi[50, 10]) > 179.0


def test_wrap_around_sector_is_the_union_of_its_two_halves(geometry):
    wrap = build_radial_operator(geometry, None, 2, azimuth_range=(170, -170))
    a = build_radial_operator(geometry, None, 2, azimuth_range=(170, 180))
    b = build_radial_operator(geometry, None, 2, azimuth_range=(-180, -170))
    assert wrap.bin_counts.sum() > 0
    assert np.array_equal(wrap.bin_counts, a.bin_counts + b.bin_counts)
    axis = azimuth_axis((170, -170), 4)
    assert axis.width == 20 and np.allclose(axis.centres, [172.5, 177.5, -177.5, -172.5])


def test_phi_bins_and_sector(geometry):
    op = build_phi_operator(geometry, None, 2, (0.2, 1.5), 10, azimuth_range=(-90, 90))
    assert op.n_bins == 10 and np.allclose(op.x, -81 + 18 * np.arange(10))
    I = PhiIntegrator(op).integrate(np.full(SHAPE, 2.0))
    assert np.allclose(I[op.bin_counts > 0], 2.0)


def test_cake_layout_and_conservation(geometry):
    op = build_cake_operator(geometry, None, 2, 30, 8, radial_range=(0.1, 2.0))
    it = CakeIntegrator(op)
    assert op.n_bins == 240 and it.map_shape == (8, 30) and op.x.size == 30 and it.azimuth.size == 8
    img = np.random.default_rng(3).random(SHAPE) * 10
    curve = it.curve(img)
    assert it.as_map(curve.intensity).shape == (8, 30)
    # summed over azimuth, the cake's sums are those of a one-sector cake over the same bins
    ref = build_cake_operator(geometry, None, 2, 30, 1, radial_range=(0.1, 2.0))
    s_cake = it.as_map(curve.intensity * op.bin_counts).sum(axis=0)
    r = CakeIntegrator(ref)
    assert np.allclose(s_cake, r.integrate(img) * ref.bin_counts, rtol=1e-10)


# -- GISAXS slices ----------------------------------------------------------------------------

@pytest.mark.parametrize("alpha_i", [0.0, 0.2, 1.0])
def test_vertical_slice_q_z_by_hand_untilted(flat, alpha_i):
    k = 2 * np.pi / 0.154
    ai = np.radians(alpha_i)
    op = build_slice_operator(flat, None, "y", "Vertical", 51, 0, incident_angle_deg=alpha_i)
    # column 50 (1-based 51), centre 50.5: 0.5 px right of the beam; row i: 50 - (i + 0.5) px up
    dx = 0.5 * 0.172
    dy = (101 - (np.arange(101) + 0.5) - 50.0) * 0.172
    delta = np.arctan(dy / np.hypot(100.0, dx))
    assert np.allclose(op.x, k * (np.sin(delta - ai) + np.sin(ai)), rtol=1e-12, atol=1e-12)
    horizon = build_slice_operator(flat, None, "y", "Vertical", 51, 0, alpha_i, reference="horizon")
    assert np.allclose(horizon.x, k * (np.sin(delta) + np.sin(ai)), rtol=1e-12, atol=1e-12)
    # at the direct beam q_z = 0 (was k sin αi before), at the specular spot q_z = 2k sin αi
    spec = np.arctan(0.0)  # δ = 0 → q_z = 0
    assert k * (np.sin(spec - ai) + np.sin(ai)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("alpha_i", [0.0, 0.2, 1.0])
def test_vertical_slice_q_z_by_hand_tilted(alpha_i):
    g = Geometry((101, 81), (50.0, 40.0), 100.0, (172.0, 172.0), 1.54, 5.0, 30.0)
    k = 2 * np.pi / 0.154
    ai = np.radians(alpha_i)
    q = slice_q_scale(g, "y", "Vertical", alpha_i, "direct", band_centre=40.5)
    # by hand: the pixel's position in the lab frame, rotating the detector explicitly
    tilt, rot = np.radians(5.0), np.radians(30.0)
    x_mm = (40.5 - 40.0) * 0.172
    y_mm = (101 - (np.arange(101) + 0.5) - 50.0) * 0.172
    w = np.array([np.cos(rot), np.sin(rot), 0.0])  # in-plane direction tilted out of the plane
    wp = np.array([-np.sin(rot), np.cos(rot), 0.0])
    w_t = np.cos(tilt) * w + np.array([0.0, 0.0, np.sin(tilt)])
    pos = np.array([(x_mm * w[0] + y * w[1]) * w_t + (x_mm * wp[0] + y * wp[1]) * wp + [0, 0, 100.0]
                    for y in y_mm])
    delta = np.arctan2(pos[:, 1], np.hypot(pos[:, 0], pos[:, 2]))
    assert np.allclose(q, k * (np.sin(delta - ai) + np.sin(ai)), rtol=1e-10, atol=1e-10)


def test_cut_position_counts_x_slices_from_the_bottom_edge(flat):
    op = build_slice_operator(flat, None, "x", "InPlane", 10, 0)
    assert op.meta["band"] == [91, 92]  # row 10 from the bottom is row 91 from the top


# -- bad input: clear errors naming the field ----------------------------------------------------

def _cal(**mask_fields):
    cal = small_calibration()
    cal["Masks"][0].update(mask_fields)
    return cal


@pytest.mark.parametrize("fields,path,text", [
    ({"RadialRange": [1.0, 0.5]}, "$.Masks[0].RadialRange", "inverted"),
    ({"RadialRange": [0.5, 0.5]}, "$.Masks[0].RadialRange", "empty"),
    ({"RadialRange": [50.0, 60.0]}, "$.Masks[0].RadialRange", "outside"),
    ({"Binning": "log", "RadialRange": [0.0, 1.0], "PointsPerDecade": 10}, "$.Masks[0].RadialRange", "above 0"),
    ({"Binning": "log"}, "$.Masks[0].PointsPerDecade", "PointsPerDecade"),
    ({"AzimuthRange": [10, 10]}, "$.Masks[0].AzimuthRange", "empty"),
    ({"AzimuthRange": [10, 10.01]}, "$.Masks[0].AzimuthRange", "narrower than one pixel"),
    ({"Cake": {"RadialBins": 10000, "AzimuthBins": 10000}}, "$.Masks[0].Cake", "bins"),
    ({"Cake": {"RadialBins": 10, "AzimuthBins": 10}, "Phi-mode": True}, "$.Masks[0].Cake", "exclude"),
    ({"Phi-mode": True, "qStart": 1.0, "qStop": 0.5}, "$.Masks[0].qStop", "inverted"),
    ({"Phi-mode": True, "RadialRange": [1.0, 0.5]}, "$.Masks[0].RadialRange", "inverted"),
    ({"Phi-mode": True, "RadialRange": [50.0, 60.0]}, "$.Masks[0].RadialRange", "outside"),
    ({"Cake": {"RadialBins": 10, "AzimuthBins": 10}, "RadialRange": [1.0, 0.5]}, "$.Masks[0].RadialRange",
     "inverted"),
    ({"Cake": {"RadialBins": 10, "AzimuthBins": 10}, "AzimuthRange": [10, 10.01]}, "$.Masks[0].AzimuthRange",
     "narrower than one pixel"),
    ({"Cake": {"RadialBins": 100_000, "AzimuthBins": 1000}}, "$.Masks[0].Cake", "bins"),
])
def test_bad_mode_input_is_a_calibration_error_naming_the_field(fields, path, text):
    with pytest.raises(CalibrationError, match=text) as info:
        Calibration(_cal(**fields), cache=False)
    assert info.value.path == path


def test_schema_refuses_unknown_unit_and_binning():
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Unit="q_pm^-1"), cache=False)
    assert info.value.path == "$.Masks[0].Unit"
    with pytest.raises(CalibrationError) as info:
        Calibration(_cal(Binning="cubic"), cache=False)
    assert info.value.path == "$.Masks[0].Binning"


def test_binning_error_names_its_field(geometry):
    with pytest.raises(BinningError) as info:
        radial_values(geometry, "furlong", np.zeros(1), np.zeros(1), np.zeros(1))
    assert info.value.field == "Unit"


# -- calibration and cache ---------------------------------------------------------------------

def test_calibration_builds_every_mode_and_caches_each_separately(tmp_path):
    cal = small_calibration()
    base = dict(cal["Masks"][0])
    cal["Masks"] = [
        base,
        {**base, "Binning": "log", "PointsPerDecade": 20, "RadialRange": [0.05, 1.5]},
        {**base, "Binning": "log", "PointsPerDecade": 40, "RadialRange": [0.05, 1.5]},
        {**base, "Unit": "2th_deg"},
        {**base, "AzimuthRange": [170, -170]},
        {**base, "Phi-mode": True, "PhiBins": 12},
        {**base, "Cake": {"RadialBins": 16, "AzimuthBins": 6}},
    ]
    c = Calibration(cal, cache=tmp_path / "cache")
    kinds = [it.kind for it in c.integrators]
    assert kinds == ["Radial"] * 5 + ["Phi", "Cake"]
    assert c.integrators[2].operator.n_bins == 2 * c.integrators[1].operator.n_bins
    assert c.integrators[5].operator.n_bins == 12 and c.integrators[6].operator.n_bins == 96
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 7  # every parameter is in the key
    again = Calibration(cal, cache=tmp_path / "cache")
    for a, b in zip(c.integrators, again.integrators):
        assert np.array_equal(a.operator.bin_counts, b.operator.bin_counts) and np.array_equal(a.x, b.x)
    assert isinstance(again.integrators[6], CakeIntegrator) and again.integrators[6].map_shape == (6, 16)
    curves = c.curves(np.ones(c.shape))
    assert curves[6].intensity.size == 96
    assert curves[1].parameters["I0"] > 0


def test_cake_of_many_bins_same_sums_in_every_kernel(geometry):
    from saxsdog.core.kernels import _ONE_LANE_BINS, accumulate, available_methods

    op = build_cake_operator(geometry, None, 2, 400, 100, polarization=(0.9, 30.0))
    assert op.n_bins > _ONE_LANE_BINS  # the numba kernel's one-lane path
    img = np.random.default_rng(8).random(SHAPE) * 100
    ref1, ref2 = accumulate(op, img, squares=True, method="scipy")
    for m in available_methods():
        s1, s2 = accumulate(op, img, squares=True, method=m)
        assert np.allclose(s1, ref1, rtol=1e-12, atol=1e-9) and np.allclose(s2, ref2, rtol=1e-12, atol=1e-7)
    # every sub-pixel of the full-circle cake that falls inside the radial range is counted once
    covered = op.entries_per_pixel > 0
    assert np.isclose(ref1.sum(), (op.counts * (img.ravel() * op.correction)[op.entry_pixels]).sum(), rtol=1e-12)
    assert covered.any()


def test_cake_poisson_error_equals_the_base_formula(geometry):
    from saxsdog.core.integrators import Integrator

    it = CakeIntegrator(build_cake_operator(geometry, None, 2, 30, 8))
    I = np.random.default_rng(9).random(it.operator.n_bins) * 50 - 1  # a few negative bins too
    assert np.allclose(it.poisson_error(I), Integrator.poisson_error(it, I), rtol=1e-13, atol=0)


def test_plots_tell_the_units_apart():
    from saxsdog.cli.plotchi import _x_kind

    assert _x_kind(UNITS["2th_deg"].label) == "2theta" and _x_kind(UNITS["r_mm"].label) == "r"
    # q in Å⁻¹ and in nm⁻¹ differ by 10: curves of both on one axis get the warning too
    assert _x_kind(UNITS["q_nm^-1"].label) == "q" and _x_kind(UNITS["q_A^-1"].label) == "q_A"
    assert _x_kind("q [1/angstrom]") == "q_A" and _x_kind("q [nm^-1]") == "q"


def test_plotchi_keeps_each_units_axis_label(tmp_path):
    """saxsplotchi labels a curve's axis with its own unit: a q_A^-1 file was relabelled q [nm⁻¹]."""
    from saxsdog.cli.plotchi import X_LABEL, axis_labels
    from saxsdog.io.chi import read_chi

    cal = small_calibration()
    radial = dict(cal["Masks"][0])
    cal["Masks"] = [radial, {**radial, "Unit": "q_A^-1"}, {**radial, "Unit": "2th_deg"}]
    c = Calibration(cal, cache=False)
    paths = c.write_chi(np.ones(c.geometry.shape), tmp_path / "img.chi")
    labels = [axis_labels(read_chi(p))[0] for p in paths]
    assert labels[0] == X_LABEL
    assert labels[1] == UNITS["q_A^-1"].label and labels[2] == UNITS["2th_deg"].label


def test_phi_mode_ring_in_another_unit_is_the_same_ring(geometry):
    from saxsdog.core.binning import q_from_unit

    lo, hi = 0.3, 0.9  # 2θ in degrees
    by_angle = build_phi_operator(geometry, None, 2, (lo, hi), 24, unit="2th_deg")
    q_lo, q_hi = q_from_unit(geometry, "2th_deg", np.array([lo, hi]))
    by_q = build_phi_operator(geometry, None, 2, (float(q_lo), float(q_hi)), 24)
    assert by_angle.bin_counts.sum() > 0
    # the same sub-pixels but for those on the ring's edges (rounding of the converted bounds)
    assert np.abs(by_angle.bin_counts - by_q.bin_counts).sum() <= 2


def test_slice_reference_from_the_calibration():
    slices = [{"Direction": "y", "Plane": "Vertical", "CutPosition": 30, "CutMargin": 1, "IncidentAngle": 0.4,
               "MaskRef": -1},
              {"Direction": "y", "Plane": "Vertical", "CutPosition": 30, "CutMargin": 1, "IncidentAngle": 0.4,
               "MaskRef": -1, "Reference": "horizon"}]
    c = Calibration(small_calibration(Slices=slices, GISAXSmode=True), cache=False)
    direct, horizon = (it.x for it in c.integrators)
    k = 2 * np.pi / 0.154
    ai = np.radians(0.4)
    # same exit angles δ: horizon − direct = k [sin δ − sin(δ − αi)], k sin αi where δ = αi
    delta = np.arcsin(np.clip(horizon / k - np.sin(ai), -1, 1))
    assert np.allclose(direct, k * (np.sin(delta - ai) + np.sin(ai)), rtol=1e-9, atol=1e-9)
    with pytest.raises(CalibrationError) as info:
        Calibration(small_calibration(Slices=[{**slices[0], "Reference": "sample"}]), cache=False)
    assert info.value.path == "$.Slices[0].Reference"


def test_phi_mode_q_start_and_stop_stay_in_inverse_nm_whatever_the_unit():
    """Unit only says what RadialRange is in: a Phi-mode ring from qStart/qStop (nm⁻¹) is the
    same ring with "Unit": "2th_deg" (qStart/qStop were read as degrees of 2θ)."""
    cal = small_calibration()
    phi = {**cal["Masks"][0], "Phi-mode": True, "qStart": 0.5, "qStop": 1.0, "PhiBins": 12}
    cal["Masks"] = [phi, {**phi, "Unit": "2th_deg"}, {**phi, "Unit": "q_A^-1"}]
    c = Calibration(cal, cache=False)
    counts = [it.operator.bin_counts for it in c.integrators]
    assert counts[0].sum() > 0
    assert np.array_equal(counts[0], counts[1]) and np.array_equal(counts[0], counts[2])
