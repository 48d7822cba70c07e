"""Fixtures of the pipeline tests."""

from __future__ import annotations

import pytest

from saxsdog import Calibration


@pytest.fixture
def cal(data_dir):
    """The real calibration (a fresh object per test: queues may not share one)."""
    return Calibration(data_dir / "cal.json")
