"""Detector geometry in the FIT2D convention, as used by the original SAXSDOG.

Coordinates
-----------
The image is a 2-D array as read from file: row 0 at the top, ``shape = (rows, cols)``.
Pixel ``(i, j)`` covers ``[j, j+1)`` horizontally and ``[i, i+1)`` vertically (rows
counted from the top edge).  FIT2D counts the vertical coordinate from the *bottom*
edge, so the calibration's ``BeamCenter = [Y, X]`` means the direct beam hits the
detector at ``x = X`` (from the left edge) and ``y_top = rows - Y`` (from the top edge).

Tilt
----
The detector plane is tilted by ``tilt`` (FIT2D "angle of detector tilt in plane")
about an axis in the plane; ``tilt_rotation`` (FIT2D "rotation angle of tilting plane")
orients it.  For an in-plane vector of length ``r`` at azimuth ``psi`` (counter-clockwise
from the horizontal axis, vertical axis pointing up), the component along the beam is
``r sin(alpha)`` with ``sin(alpha) = sin(tilt) cos(psi - tilt_rotation)`` (the distortion
angle, eq. 1 of the SAXSDOG paper, J. Appl. Cryst. 2022).  The sample-to-pixel vector then
has a component ``d + r sin(alpha)`` along the beam and ``r cos(alpha)`` across it, which
gives 2θ exactly (the law of cosines, eq. 2-3 of the paper).  This reproduces pyFAI's
``setFit2D`` to machine precision.

Everything here is pure NumPy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Geometry", "q_from_two_theta"]


@dataclass(frozen=True)
class Geometry:
    """Experimental geometry of a flat area detector (FIT2D convention).

    Parameters
    ----------
    shape
        Image shape ``(rows, cols)``.
    beam_center
        ``(Y, X)`` in pixels: Y from the bottom edge, X from the left edge.
    distance_mm
        Sample to beam-centre distance along the beam, in mm.
    pixel_size_um
        ``(vertical, horizontal)`` pixel size in µm.
    wavelength_A
        Wavelength in Å.
    tilt_deg
        Tilt angle of the detector plane, degrees.
    tilt_rotation_deg
        Rotation of the tilting plane, degrees.
    """

    shape: tuple[int, int]
    beam_center: tuple[float, float]
    distance_mm: float
    pixel_size_um: tuple[float, float]
    wavelength_A: float
    tilt_deg: float = 0.0
    tilt_rotation_deg: float = 0.0

    @property
    def q_factor(self) -> float:
        """``4π/λ`` in nm⁻¹ (λ given in Å)."""
        return 4.0 * np.pi / (self.wavelength_A * 0.1)

    # -- coordinates ---------------------------------------------------------------
    def _offsets_mm(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal and vertical (upward) offsets from the beam centre in mm.

        ``rows``/``cols`` are continuous coordinates from the top/left edges.
        """
        nrows = self.shape[0]
        y_c, x_c = self.beam_center
        px_v, px_h = self.pixel_size_um
        dx = (np.asarray(cols, dtype=np.float64) - x_c) * (px_h * 1e-3)
        dy = ((nrows - np.asarray(rows, dtype=np.float64)) - y_c) * (px_v * 1e-3)
        return dx, dy

    def _along_beam(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Component of the in-plane offset along the beam: ``r sin(alpha)``."""
        tilt = np.radians(self.tilt_deg)
        rot = np.radians(self.tilt_rotation_deg)
        along: np.ndarray = np.sin(tilt) * (dx * np.cos(rot) + dy * np.sin(rot))
        return along

    def sin2_theta_half(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """``sin²(θ)`` (θ = half the scattering angle) for offsets in mm.

        Written without trigonometric functions and without cancellation at small
        angles: with ``u = r sin(alpha)`` and ``l`` the sample–pixel distance,
        ``sin²θ = (r² − u²) / (2 l (l + d + u))``.
        """
        d = self.distance_mm
        r2 = dx * dx + dy * dy
        u = self._along_beam(dx, dy)
        l = np.sqrt(d * d + r2 + 2.0 * d * u)
        sin2: np.ndarray = (r2 - u * u) / (2.0 * l * (l + d + u))
        return sin2

    def pixel_centers(self, oversampling: int = 1, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row and column coordinates of (sub-)pixel centres.

        Parameters
        ----------
        oversampling
            Each pixel is split into ``oversampling × oversampling`` sub-pixels.
        rows
            Optional slice of detector rows to cover (for block-wise processing).

        Returns
        -------
        (row_coords, col_coords)
            1-D arrays; row coordinates for the selected rows times ``oversampling``.
        """
        nrows, ncols = self.shape
        sub = (np.arange(oversampling) + 0.5) / oversampling
        r0, r1, _ = (rows or slice(0, nrows)).indices(nrows)
        row_coords = (np.arange(r0, r1)[:, None] + sub[None, :]).ravel()
        col_coords = (np.arange(ncols)[:, None] + sub[None, :]).ravel()
        return row_coords, col_coords

    # -- per-pixel maps ------------------------------------------------------------
    def two_theta(self, oversampling: int = 1) -> np.ndarray:
        """Scattering angle 2θ (radians) at every (sub-)pixel centre."""
        rc, cc = self.pixel_centers(oversampling)
        dx, dy = self._offsets_mm(rc[:, None], cc[None, :])
        u = self._along_beam(dx, dy)
        r2 = dx * dx + dy * dy
        tth: np.ndarray = np.arctan2(np.sqrt(np.maximum(r2 - u * u, 0.0)), self.distance_mm + u)
        return tth

    def q(self, oversampling: int = 1) -> np.ndarray:
        """Scattering vector modulus q in nm⁻¹ at every (sub-)pixel centre."""
        rc, cc = self.pixel_centers(oversampling)
        dx, dy = self._offsets_mm(rc[:, None], cc[None, :])
        q: np.ndarray = self.q_factor * np.sqrt(self.sin2_theta_half(dx, dy))
        return q

    def azimuth(self, oversampling: int = 1) -> np.ndarray:
        """Azimuth ψ in radians at every (sub-)pixel centre.

        Measured in the detector plane from the horizontal axis (pointing right),
        counter-clockwise as the image is displayed with row 0 at the top, in (−π, π].
        """
        rc, cc = self.pixel_centers(oversampling)
        dx, dy = self._offsets_mm(rc[:, None], cc[None, :])
        psi: np.ndarray = np.arctan2(dy, dx)
        return psi

    def solid_angle(self) -> np.ndarray:
        """Relative solid angle of every pixel, 1 at normal incidence (pyFAI's convention).

        The solid angle a pixel subtends, divided by that of a pixel at the foot of the
        perpendicular from the sample onto the detector plane (pyFAI's PONI):
        ``Ω = cos³(incidence) = (L / l)³`` with ``L = d cos(tilt)`` the sample's
        perpendicular distance from the (tilted) detector plane and ``l`` its distance
        to the pixel centre, ``l² = d² + r² + 2 d r sin(alpha)`` (see the module
        docstring).  Evaluated at pixel centres as pyFAI's ``solidAngleArray``; measured
        intensities are divided by it.

        Returns
        -------
        numpy.ndarray
            float64 array of the image shape, in (0, 1].
        """
        rc, cc = self.pixel_centers(1)
        dx, dy = self._offsets_mm(rc[:, None], cc[None, :])
        d = self.distance_mm
        l2 = d * d + dx * dx + dy * dy + 2.0 * d * self._along_beam(dx, dy)
        perpendicular = d * np.cos(np.radians(self.tilt_deg))
        cos_incidence = perpendicular / np.sqrt(l2)
        omega: np.ndarray = cos_incidence ** 3
        return omega

    def max_radius_px(self) -> float:
        """Largest distance, in pixels, from the beam centre to a detector corner."""
        nrows, ncols = self.shape
        y_c, x_c = self.beam_center
        ys = np.array([0.0, nrows]) - y_c
        xs = np.array([0.0, ncols]) - x_c
        return float(np.sqrt(xs[:, None] ** 2 + ys[None, :] ** 2).max())

    def max_q(self) -> float:
        """Largest q (nm⁻¹) anywhere on the detector surface.

        Along any straight line through the beam centre 2θ grows monotonically with
        the distance, so the maximum over the rectangle lies on its boundary; the
        boundary is sampled finely (10 points per pixel) and a tiny margin added.
        """
        nrows, ncols = self.shape
        rr = np.linspace(0.0, nrows, 10 * nrows + 1)
        cc = np.linspace(0.0, ncols, 10 * ncols + 1)
        edges_r = np.concatenate([rr, rr, np.zeros_like(cc), np.full_like(cc, nrows)])
        edges_c = np.concatenate([np.zeros_like(rr), np.full_like(rr, ncols), cc, cc])
        dx, dy = self._offsets_mm(edges_r, edges_c)
        return float(self.q_factor * np.sqrt(self.sin2_theta_half(dx, dy)).max()) * (1 + 1e-12)


def q_from_two_theta(two_theta: np.ndarray, wavelength_A: float) -> np.ndarray:
    """q = 4π/λ · sin(2θ/2) in nm⁻¹ for λ in Å."""
    return 4.0 * np.pi / (wavelength_A * 0.1) * np.sin(np.asarray(two_theta) / 2.0)
