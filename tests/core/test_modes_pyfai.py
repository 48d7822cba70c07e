"""Integration modes against pyFAI on the real Pilatus 1M data (cal.json geometry and mask).

pyFAI reproduces the calibration's geometry for the image as read (data/README), with full
pixel splitting and no solid-angle correction; saxsdog splits pixels 3 × 3.  Compared on bins
with enough pixels, as the reference tests do.
"""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.core.binning import UNITS, chi_degrees, radial_values
from saxsdog.core.geometry import Geometry
from saxsdog.core.integrators import CakeIntegrator, PhiIntegrator, RadialIntegrator
from saxsdog.core.operator import (build_cake_operator, build_phi_operator, build_radial_operator,
                                   slice_q_scale)

pytest.importorskip("pyFAI", reason="pyFAI is the independent reference")

METHOD = ("full", "csr", "cython")
KW = {"method": METHOD, "correctSolidAngle": False, "polarization_factor": None}


@pytest.fixture(scope="module")
def setup(shared_data):
    import fabio

    from saxsdog import Calibration
    from saxsdog.io.poni import calibration_to_integrator

    cal = Calibration(shared_data / "cal.json", cache=False)
    img = fabio.open(str(shared_data / "buf1_00000.tif")).data
    return cal.geometry, cal.mask(0), img, lambda: calibration_to_integrator(cal.raw)


def _median_rel(ours, ref, area, min_area):
    sel = (area >= min_area) & (ours > 0) & (ref > 0)
    assert sel.sum() >= 20, "too few comparable bins"
    return float(np.median(np.abs(ours[sel] / ref[sel] - 1)))


@pytest.mark.slow
def test_log_bins_match_pyfai_log_unit(setup):
    g, mask, img, new_ai = setup
    op = build_radial_operator(g, mask, 3, binning="log", points_per_decade=100, radial_range=(0.05, 3.0))
    lo, hi = op.meta["edges"][0], op.meta["edges"][-1]
    res = new_ai().integrate1d(img, op.n_bins, unit="log(q.nm)_None", radial_range=(np.log(lo), np.log(hi)),
                               mask=~mask, **KW)
    # pyFAI's bins uniform in ln q are our geometric bins; its positions are float32
    assert np.allclose(np.exp(res.radial), op.x, rtol=1e-6)
    I = RadialIntegrator(op).integrate(img)
    assert _median_rel(I, res.intensity, op.area, 50) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("unit", list(UNITS))
def test_every_unit_matches_pyfai_radial(setup, unit):
    g, mask, img, new_ai = setup
    ai = new_ai()
    # the radial value of every pixel, as pyFAI computes it, to 1e-9 relative
    rc, cc = g.pixel_centers(1)
    dx, dy = g._offsets_mm(rc[:, None], cc[None, :])
    q = g.q_factor * np.sqrt(g.sin2_theta_half(dx, dy))
    ours = radial_values(g, unit, q, dx, dy)
    ref = ai.center_array(g.shape, unit=unit)
    far = ref > 1e-3 * ref.max()  # relative error is meaningless at the beam centre itself
    assert np.abs(ours[far] / ref[far] - 1).max() <= 1e-9
    # the x column equals pyFAI's radial positions of the same bins (pyFAI keeps them in float32)
    op = build_radial_operator(g, mask, 3, 1.0, unit=unit)
    n, w = op.n_bins, op.x[1] - op.x[0]
    res = ai.integrate1d(img, n, unit=unit, radial_range=(0, n * w), mask=~mask, **KW)
    assert np.allclose(res.radial, op.x, rtol=2e-7)
    assert _median_rel(RadialIntegrator(op).integrate(img), res.intensity, op.area, 50) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("sector", [(-30.0, 30.0), (60.0, 120.0), (150.0, -150.0)])
def test_sectors_match_pyfai_azimuth_range(setup, sector):
    g, mask, img, new_ai = setup
    op = build_radial_operator(g, mask, 3, 2.0, azimuth_range=sector)
    ai = new_ai()
    start, stop = sector
    if stop < start:  # a wrap-around sector: pyFAI's χ from 0 to 360°
        ai.setChiDiscAtZero()
        stop += 360.0
    n, w = op.n_bins, op.x[1] - op.x[0]
    res = ai.integrate1d(img, n, unit="q_nm^-1", radial_range=(0, n * w), azimuth_range=(start, stop),
                         mask=~mask, **KW)
    assert _median_rel(RadialIntegrator(op).integrate(img), res.intensity, op.area, 50) <= 1e-3


@pytest.mark.slow
def test_phi_mode_matches_pyfai_integrate_radial(setup):
    g, mask, img, new_ai = setup
    op = build_phi_operator(g, mask, 3, (0.5, 1.0), 72)
    with np.errstate(invalid="ignore", divide="ignore"):  # pyFAI divides by zero in empty χ bins
        res = new_ai().integrate_radial(img, 72, npt_rad=100, radial_range=(0.5, 1.0), azimuth_range=(-180, 180),
                                        radial_unit="q_nm^-1", unit="chi_deg", mask=~mask, **KW)
    assert np.allclose(res.radial, op.x, atol=1e-4)  # same χ bins: the convention is pyFAI's
    assert _median_rel(PhiIntegrator(op).integrate(img), res.intensity, op.area, 50) <= 1e-3


@pytest.mark.slow
def test_chi_is_pyfais_on_a_tilted_detector():
    from saxsdog.io.poni import calibration_to_integrator
    from saxsdog.testing import small_calibration

    cal = small_calibration()
    cal["Geometry"]["Tilt"] = {"TiltRotDeg": 30.0, "TiltAngleDeg": 8.0}
    from saxsdog import Calibration

    g: Geometry = Calibration(cal, cache=False).geometry
    ref = calibration_to_integrator(cal).center_array(g.shape, unit="chi_deg")
    rc, cc = g.pixel_centers(1)
    dx, dy = g._offsets_mm(rc[:, None], cc[None, :])
    diff = np.mod(chi_degrees(g, dx, dy) - ref + 180.0, 360.0) - 180.0
    assert np.abs(diff).max() <= 1e-5  # degrees; the detector-plane angle would be off by ~0.3°


@pytest.mark.slow
@pytest.mark.parametrize("bins,image,min_area", [((200, 36), "real", 20), ((1000, 360), "smooth", 2)])
def test_cake_matches_pyfai_integrate2d(setup, bins, image, min_area):
    g, mask, img, new_ai = setup
    ai = new_ai()
    if image == "smooth":  # small bins: compare the binning, not the counting noise of the frame
        q = g.q(1)
        chi = ai.center_array(g.shape, unit="chi_rad")
        img = 1e3 * np.exp(-q) * (1 + 0.5 * np.cos(2 * chi))
    n_r, n_a = bins
    op = build_cake_operator(g, mask, 3, n_r, n_a, radial_range=(0.05, 2.5))
    it = CakeIntegrator(op)
    res = ai.integrate2d(img, n_r, n_a, unit="q_nm^-1", radial_range=(0.05, 2.5), azimuth_range=(-180, 180),
                         mask=~mask, **KW)
    assert res.intensity.shape == it.map_shape
    assert np.allclose(res.azimuthal, it.azimuth, atol=1e-4) and np.allclose(res.radial, it.x, rtol=1e-6)
    ours = it.as_map(it.integrate(img))
    assert _median_rel(ours, res.intensity, it.as_map(op.area), min_area) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("alpha_i", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("tilt", [(0.0, 0.0), (-0.56, 73.569), (6.0, -40.0)])
def test_slice_q_z_from_pyfais_scattering_directions(alpha_i, tilt):
    """q_z of a vertical slice against the exit angle of pyFAI's 2θ and χ of the same pixels."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    g = Geometry((200, 150), (120.0, 70.0), 300.0, (172.0, 172.0), 1.54, *tilt)
    ai = AzimuthalIntegrator()  # the FIT2D geometry for the image as read (data/README)
    ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center[1], centerY=g.shape[0] - g.beam_center[0],
                tilt=g.tilt_deg, tiltPlanRotation=-g.tilt_rotation_deg, pixelX=172.0, pixelY=172.0)
    ai.wavelength = 1.54e-10
    tth = ai.center_array(g.shape, unit="2th_rad")
    chi = ai.center_array(g.shape, unit="chi_rad")
    col = 80  # CutPosition 81 (1-based)
    # unit scattering direction: up on the image is −χ's sine (χ is clockwise)
    up = np.sin(tth[:, col]) * -np.sin(chi[:, col])
    delta = np.arcsin(up)
    k = 2 * np.pi / 0.154
    ai_rad = np.radians(alpha_i)
    q = slice_q_scale(g, "y", "Vertical", alpha_i, "direct", band_centre=col + 0.5)
    assert np.allclose(q, k * (np.sin(delta - ai_rad) + np.sin(ai_rad)), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("tilt,tolerance", [((0.0, 0.0), 1e-7), ((-0.56, 73.569), 1e-7), ((20.0, -40.0), 1e-7)])
@pytest.mark.parametrize("angle", [-60.0, 0.0, 30.0])
def test_polarization_angle_is_measured_like_chi(tilt, tolerance, angle):
    """The polarization Angle A is an angle of χ (clockwise): saxsdog's P equals pyFAI's with
    factor 2F − 1 and axis_offset −A (pyFAI's offset enters as cos 2(χ + offset))."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    from saxsdog.core.operator import polarization_factor

    g = Geometry((200, 150), (120.0, 70.0), 100.0, (172.0, 172.0), 1.54, *tilt)
    ai = AzimuthalIntegrator()
    ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center[1], centerY=g.shape[0] - g.beam_center[0],
                tilt=g.tilt_deg, tiltPlanRotation=-g.tilt_rotation_deg, pixelX=172.0, pixelY=172.0)
    ai.wavelength = 1.54e-10
    ref = ai.polarization(g.shape, factor=2 * 0.95 - 1, axis_offset=-np.radians(angle))
    # pyFAI's array is float32-precise; χ is taken in the laboratory frame on a tilted detector
    # too (the angle in the detector plane was 3e-6 off at cal.json's tilt, 4e-4 at 20°)
    assert np.abs(polarization_factor(g, 0.95, angle) / ref - 1).max() <= tolerance
