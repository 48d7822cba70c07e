"""Shared fixtures: the real data folder and a private operator cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def require_data() -> Path:
    """The shared data folder, or skip the test with the reason."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real test data not available (expected at {DATA_DIR})")
    return DATA_DIR


@pytest.fixture
def data_dir() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, for module- and session-scoped fixtures."""
    return require_data()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test session gets its own operator cache, never the user's."""
    monkeypatch.setenv("SAXSDOG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "operator-cache"))


@pytest.fixture(scope="session")
def real_image() -> np.ndarray:
    import fabio

    return fabio.open(str(require_data() / "buf1_00000.tif")).data


@pytest.fixture(scope="session")
def real_calibration():
    """cal.json with its FIT2D mask, built once per session."""
    from saxsdog import Calibration

    return Calibration(require_data() / "cal.json", cache=False)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 3 MiB file system to fill (``saxsdog.testing.fill_disk``); skipped where it
    cannot be mounted (not root)."""
    from saxsdog.testing import mounted_tmpfs

    try:
        with mounted_tmpfs(tmp_path / "small", size_mb=3) as mnt:
            yield mnt
    except OSError as exc:
        if "cannot mount a tmpfs" not in str(exc):
            raise
        pytest.skip(str(exc))
