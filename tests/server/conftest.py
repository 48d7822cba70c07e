"""Fixtures of the server tests: a base directory with a queue folder and a template image."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def base(tmp_path, data_dir):
    """``BASE/run`` (the queue folder) and ``BASE/template.tif``, the real image that
    :func:`server_helpers.add_images` links into the queue."""
    b = tmp_path / "base"
    (b / "run").mkdir(parents=True)
    shutil.copy(data_dir / "buf1_00000.tif", b / "template.tif")
    return b
