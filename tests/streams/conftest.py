"""Fixtures of the stream tests: the real calibration and frames as a detector sends them."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from saxsdog import Calibration


@pytest.fixture(scope="module")
def cal(shared_data):
    return Calibration(shared_data / "cal.json")


@pytest.fixture(scope="module")
def frames(shared_data) -> list[np.ndarray]:
    """Pilatus frames as a detector sends them: uint32 (gaps at 2**32 - 1), each one different."""
    base = tifffile.imread(shared_data / "buf1_00000.tif").astype(np.int64)
    return [np.where(base >= 0, base * (k + 1) + k, base).astype(np.uint32) for k in range(5)]
