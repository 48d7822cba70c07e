"""Mask files: the FIT2D .msk reader gives fabio's mask without importing fabio."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from saxsdog.errors import MaskError
from saxsdog.io.masks import _read_fit2d_mask, read_mask


def fabio_mask(path):
    import fabio

    return np.flipud(fabio.open(str(path)).data) == 0


def test_the_real_msk_is_read_as_fabio_reads_it(data_dir):
    path = data_dir / "AAA_integ.msk"
    valid = read_mask(path, (1043, 981))
    assert valid.dtype == bool and valid.shape == (1043, 981)
    assert np.array_equal(valid, fabio_mask(path))


@pytest.mark.parametrize("shape", [(7, 1), (5, 31), (3, 32), (4, 33), (9, 64), (2, 981)])
def test_msk_widths_around_the_32_bit_words(tmp_path, shape):
    """Widths below, at and past a 32-bit word: the padding bits are dropped, the bit order
    is fabio's (written by fabio's own writer)."""
    import fabio.fit2dmaskimage

    rng = np.random.default_rng(sum(shape))
    masked = (rng.random(shape) > 0.5).astype(np.uint8)
    path = tmp_path / "m.msk"
    fabio.fit2dmaskimage.fit2dmaskimage(data=masked).write(str(path))
    assert np.array_equal(_read_fit2d_mask(path), fabio.open(str(path)).data)
    assert np.array_equal(read_mask(path), fabio_mask(path))


def test_a_short_or_foreign_msk_is_left_to_fabio_and_refused_clearly(tmp_path, data_dir):
    short = tmp_path / "short.msk"
    short.write_bytes((data_dir / "AAA_integ.msk").read_bytes()[:5000])
    assert _read_fit2d_mask(short) is None
    with pytest.raises(MaskError, match="cannot read mask file"):
        read_mask(short)
    foreign = tmp_path / "foreign.msk"
    foreign.write_bytes(b"not a mask" * 200)
    assert _read_fit2d_mask(foreign) is None
    with pytest.raises(MaskError):
        read_mask(foreign)


def test_loading_a_calibration_with_a_msk_does_not_import_fabio(data_dir):
    """fabio (with h5py, lxml and hdf5plugin, a tenth of a second) is imported only for a
    format saxsdog does not read itself."""
    code = ("import sys; from saxsdog import Calibration; "
            f"Calibration({str(data_dir / 'cal.json')!r}); print('fabio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
