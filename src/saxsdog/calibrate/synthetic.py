"""Synthetic calibrant images with a known geometry (for tests, benchmarks and demos).

The rings are drawn with saxsdog's own :class:`~saxsdog.core.geometry.Geometry` (the FIT2D
convention the calibration stores), Gaussian in 2θ, over a smooth background, with Poisson
noise, the detector's dead/gap pixels (negative values) and a beamstop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saxsdog.core.geometry import Geometry

__all__ = ["Scenario", "fake_calibrant_image", "random_scenarios", "reviewer_scenarios", "visible_rings"]


def fake_calibrant_image(geometry: Geometry, d_spacings: np.ndarray, *, width_px: float = 1.2,
                         gaps: np.ndarray | None = None, beamstop_px: float | None = 25.0,
                         peak_counts: float = 2000.0, background_counts: float = 50.0,
                         seed: int | None = 0) -> np.ndarray:
    """An int32 calibrant image for ``geometry``.

    Parameters
    ----------
    geometry
        The geometry the image is made with.
    d_spacings
        The calibrant's d-spacings in Å.
    width_px
        Ring width (Gaussian σ) in pixels at the beam centre's distance, in 2θ.
    gaps
        Boolean map of dead/gap pixels (set to −1), image shape.
    beamstop_px
        Radius of a round beamstop at the beam centre (with an arm to the top edge), pixels;
        ``None``: no beamstop.  Nothing is drawn when the centre is off the detector.
    peak_counts, background_counts
        Counts at the first ring's maximum, and of the flat background.
    seed
        Poisson noise seed; ``None``: no noise (expected counts, rounded).
    """
    tth = geometry.two_theta()
    pixel_mm = geometry.pixel_size_um[1] * 1e-3
    sigma = width_px * pixel_mm / geometry.distance_mm
    lam = geometry.wavelength_A
    x = lam / (2.0 * np.asarray(d_spacings, dtype=np.float64))
    x = x[x < 1.0]
    tth_lines = 2.0 * np.arcsin(x)
    tth_max = float(tth.max()) + 5 * sigma
    expected = background_counts * (1.0 + 3.0 / (1.0 + (tth / (0.01 + 20 * sigma)) ** 2))
    for k, t in enumerate(tth_lines[tth_lines < tth_max]):
        amplitude = peak_counts / (1.0 + 0.15 * k)
        near = np.abs(tth - t) < 6 * sigma
        expected[near] += amplitude * np.exp(-0.5 * ((tth[near] - t) / sigma) ** 2)
    if seed is None:
        image = np.rint(expected)
    else:
        image = np.random.default_rng(seed).poisson(expected).astype(np.float64)
    rows, cols = geometry.shape
    y_c, x_c = geometry.beam_center
    row_c = rows - y_c
    if beamstop_px and 0 <= x_c < cols and 0 <= row_c < rows:
        rr, cc = np.ogrid[:rows, :cols]
        disk = (rr + 0.5 - row_c) ** 2 + (cc + 0.5 - x_c) ** 2 < beamstop_px ** 2
        arm = (np.abs(cc + 0.5 - x_c) < beamstop_px / 3) & (rr + 0.5 < row_c)
        shadow = disk | arm
        image[shadow] = np.rint(image[shadow] * 0.01)
    if gaps is not None:
        image[gaps] = -1
    return image.astype(np.int32)


@dataclass(frozen=True)
class Scenario:
    """One synthetic calibrant geometry: the calibrant and the geometry the image is made with."""

    calibrant: str
    geometry: Geometry


def random_scenarios(n: int, seed: int = 2026, shape: tuple[int, int] = (1043, 981),
                     pixel_um: float = 172.0, calibrants: tuple[str, ...] = ("AgBh", "LaB6", "CeO2"),
                     first_lines: dict[str, float] | None = None) -> list[Scenario]:
    """``n`` random geometries: distance 150–5000 mm (log-uniform), tilt 0–15° at any rotation,
    the beam centre on the detector or (one in three) off it.

    The wavelength is chosen so that the calibrant's first line falls 60–250 px from the
    beam centre (else a 1M detector 5 m away would see no more than one ring of LaB6).
    ``first_lines`` gives each calibrant's largest d-spacing in Å (default: pyFAI's values
    for AgBh, LaB6 and CeO2).
    """
    d_first = first_lines or {"AgBh": 58.38, "LaB6": 4.156826, "CeO2": 3.12441816}
    rng = np.random.default_rng(seed)
    rows, cols = shape
    out = []
    for i in range(n):
        calibrant = calibrants[i % len(calibrants)]
        distance = float(np.exp(rng.uniform(np.log(150.0), np.log(5000.0))))
        r1_mm = rng.uniform(*((60.0, 250.0) if calibrant == "AgBh" else (150.0, 350.0))) * pixel_um * 1e-3
        two_theta_1 = np.arctan(r1_mm / distance)
        wavelength = float(2 * d_first[calibrant] * np.sin(two_theta_1 / 2))
        if i % 3 == 2:  # off the detector, by up to 150 px on one side
            side = rng.integers(4)
            off = rng.uniform(10.0, 150.0)
            x_c = [-off, cols + off, rng.uniform(0, cols), rng.uniform(0, cols)][side]
            y_c = [rng.uniform(0, rows), rng.uniform(0, rows), -off, rows + off][side]
        else:
            x_c = rng.uniform(0.15 * cols, 0.85 * cols)
            y_c = rng.uniform(0.15 * rows, 0.85 * rows)
        geometry = Geometry(shape=shape, beam_center=(float(y_c), float(x_c)), distance_mm=distance,
                            pixel_size_um=(pixel_um, pixel_um), wavelength_A=wavelength,
                            tilt_deg=float(rng.uniform(0.0, 15.0)), tilt_rotation_deg=float(rng.uniform(-180, 180)))
        out.append(Scenario(calibrant, geometry))
    return out


#: The calibrants' largest d-spacings (Å), pyFAI's values.
FIRST_LINES_A = {"AgBh": 58.38, "LaB6": 4.156826, "CeO2": 3.12441816}


def reviewer_scenarios(n: int, seed: int = 1, family: str = "issue", distance_law: str = "log",
                       shape: tuple[int, int] = (1043, 981), pixel_um: float = 172.0) -> list[Scenario]:
    """``n`` random geometries drawn as a reviewer of the acceptance range would draw them.

    A random calibrant (AgBh, LaB6, CeO2); the distance 150–5000 mm, log-uniform
    (``distance_law="log"``) or uniform (``"uniform"``); the tilt uniform in 0–15° at a
    uniform rotation; the beam centre uniform over the detector (half the cases) or over a box
    reaching half a detector width beyond every edge.  The wavelength: for ``family="issue"``
    such that the first line falls 60–250 px (AgBh) or 150–350 px (LaB6, CeO2) from the
    centre, as :func:`random_scenarios`; for ``"realistic"`` uniform in 0.5–1.6 Å, whatever
    that leaves on the detector (see :func:`visible_rings`).  The same ``(seed, family,
    distance_law)`` always gives the same list; a longer list starts with the shorter one.
    """
    rows, cols = shape
    rng = np.random.default_rng([seed, ["issue", "realistic"].index(family), ["log", "uniform"].index(distance_law)])
    out = []
    for _ in range(n):
        calibrant = str(rng.choice(["AgBh", "LaB6", "CeO2"]))
        if distance_law == "log":
            distance = float(np.exp(rng.uniform(np.log(150.0), np.log(5000.0))))
        else:
            distance = float(rng.uniform(150.0, 5000.0))
        tilt = float(rng.uniform(0.0, 15.0))
        rotation = float(rng.uniform(-180.0, 180.0))
        if rng.random() < 0.5:
            x_c, y_c = float(rng.uniform(0, cols)), float(rng.uniform(0, rows))
        else:
            x_c, y_c = float(rng.uniform(-0.5 * cols, 1.5 * cols)), float(rng.uniform(-0.5 * rows, 1.5 * rows))
        if family == "issue":
            r1_px = rng.uniform(*((60.0, 250.0) if calibrant == "AgBh" else (150.0, 350.0)))
            two_theta_1 = np.arctan(r1_px * pixel_um * 1e-3 / distance)
            wavelength = float(2 * FIRST_LINES_A[calibrant] * np.sin(two_theta_1 / 2))
        else:
            wavelength = float(rng.uniform(0.5, 1.6))
        geometry = Geometry(shape=shape, beam_center=(y_c, x_c), distance_mm=distance,
                            pixel_size_um=(pixel_um, pixel_um), wavelength_A=wavelength, tilt_deg=tilt,
                            tilt_rotation_deg=rotation)
        out.append(Scenario(calibrant, geometry))
    return out


def visible_rings(geometry: Geometry, d_spacings: np.ndarray, valid: np.ndarray, width_px: float = 1.2,
                  beamstop_px: float = 25.0) -> int:
    """How many calibrant rings have at least 300 valid pixels within ±2σ of their crest,
    outside the beamstop (as :func:`fake_calibrant_image` draws them): fewer than two, and a
    refusal is the right answer."""
    tth = geometry.two_theta()
    sigma = width_px * geometry.pixel_size_um[1] * 1e-3 / geometry.distance_mm
    rows, cols = geometry.shape
    y_c, x_c = geometry.beam_center
    rr, cc = np.ogrid[:rows, :cols]
    usable = valid & ((rr + 0.5 - (rows - y_c)) ** 2 + (cc + 0.5 - x_c) ** 2 >= (beamstop_px + 3) ** 2)
    t = np.sort(tth[usable])
    x = geometry.wavelength_A / (2 * np.asarray(d_spacings, dtype=np.float64))
    lines = 2 * np.arcsin(x[x < 1])
    lines = lines[(lines > t[0]) & (lines < t[-1])] if t.size else lines[:0]
    counts = np.searchsorted(t, lines + 2 * sigma) - np.searchsorted(t, lines - 2 * sigma)
    return int(np.sum(counts >= 300))
