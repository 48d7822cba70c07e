"""Fixtures of the calibrant-fit tests: the real detector's gap pattern and calibrant image."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def detector_gaps(shared_data) -> np.ndarray:
    """The Pilatus 1M's dead and gap pixels (negative in the real buffer image)."""
    from saxsdog.io.images import read_image

    return read_image(shared_data / "buf1_00000.tif").data < 0


@pytest.fixture(scope="session")
def agbeh_image(shared_data):
    """The real silver-behenate image (a Frame: data and header metadata)."""
    from saxsdog.io.images import read_image

    return read_image(shared_data / "agbeh2_1M.tif")
