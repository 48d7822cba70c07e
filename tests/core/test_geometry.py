"""Geometry against pyFAI's FIT2D geometry (setFit2D), per pixel."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.core.geometry import Geometry, q_from_two_theta

pyFAI = pytest.importorskip("pyFAI", reason="pyFAI is the independent reference for the geometry")

SHAPE = (1043, 981)


def pyfai_for(g: Geometry):
    """pyFAI integrator reproducing a FIT2D geometry for the image as read (row 0 on top)."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ai = AzimuthalIntegrator()
    ai.setFit2D(directDist=g.distance_mm, centerX=g.beam_center[1], centerY=g.shape[0] - g.beam_center[0],
                tilt=g.tilt_deg, tiltPlanRotation=-g.tilt_rotation_deg,
                pixelX=g.pixel_size_um[1], pixelY=g.pixel_size_um[0])
    ai.wavelength = g.wavelength_A * 1e-10
    return ai


@pytest.mark.parametrize("tilt,rot", [(0.0, 0.0), (-0.56, 73.569), (10.0, 73.569), (-10.0, 73.569),
                                      (10.0, -140.0), (-7.5, 200.0)])
@pytest.mark.slow
def test_two_theta_matches_pyfai_fit2d(tilt, rot):
    g = Geometry(SHAPE, (808.37, 387.772), 1031.657, (172.0, 172.0), 1.54, tilt, rot)
    ref = pyfai_for(g).center_array(SHAPE, unit="2th_rad")
    assert np.abs(g.two_theta() - ref).max() <= 1e-9


def test_non_square_pixels_and_off_detector_centre():
    g = Geometry((300, 200), (-40.0, 250.5), 250.0, (75.0, 172.0), 0.8, 4.0, 30.0)
    ref = pyfai_for(g).center_array((300, 200), unit="2th_rad")
    assert np.abs(g.two_theta() - ref).max() <= 1e-9


def test_q_matches_pyfai_and_formula():
    g = Geometry(SHAPE, (808.37, 387.772), 1031.657, (172.0, 172.0), 1.54, -10.0, 73.569)
    ref = pyfai_for(g).center_array(SHAPE, unit="q_nm^-1")
    q = g.q()
    assert np.allclose(q, ref, rtol=1e-9, atol=1e-12)
    assert np.allclose(q, q_from_two_theta(g.two_theta(), 1.54), rtol=1e-9, atol=1e-12)


def test_beam_centre_convention():
    # Y counts from the bottom edge: the beam centre pixel is near row rows - Y.
    g = Geometry((100, 80), (30.5, 20.5), 100.0, (100.0, 100.0), 1.0)
    tth = g.two_theta()
    row, col = np.unravel_index(np.argmin(tth), tth.shape)
    assert (row, col) == (100 - 31, 20)


@pytest.mark.slow
def test_max_q_bounds_every_subpixel():
    g = Geometry(SHAPE, (808.37, 387.772), 1031.657, (172.0, 172.0), 1.54, -10.0, 73.569)
    assert g.q(3).max() <= g.max_q()
    assert g.q(3).max() > 0.999 * g.max_q()
