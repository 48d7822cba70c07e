"""The format table and the hand-written fast paths, checked against tifffile and fabio."""

from __future__ import annotations

import gzip
import time
import timeit
from pathlib import Path

import numpy as np
import pytest

from saxsdog.io import images
from saxsdog.io.images import (
    FORMATS,
    IMAGE_EXTENSIONS,
    is_image_file,
    read_header,
    read_image,
)
from saxsdog.io.images.registry import format_by_name, strip_image_suffix
from saxsdog.pipeline.naming import image_stem

PILATUS_SHAPE = (1043, 981)


def _real(data_dir: Path, name: str = "buf1_00000.tif") -> Path:
    return data_dir / name


# --------------------------------------------------------------------------- #
# One table
# --------------------------------------------------------------------------- #


def test_every_suffix_of_the_table_is_an_image_name_and_names_its_format():
    """Detection by name, is_image_file, IMAGE_EXTENSIONS and naming agree on every suffix."""
    for fmt in FORMATS:
        for suffix in fmt.suffixes:
            for name in (f"x{suffix}", f"x{suffix.upper()}"):
                assert suffix in IMAGE_EXTENSIONS
                assert is_image_file(name), name
                assert format_by_name(name) is fmt, name
                assert strip_image_suffix(name) == "x", name
                assert image_stem(f"/data/run/{name}") == "x", name


def test_suffixes_the_old_lists_disagreed_on_are_known_everywhere():
    for name in ("a.cbf.bz2", "a.edf.bz2", "a.hdf", "a.nx5"):
        assert is_image_file(name), name
        assert image_stem(name) == "a"
    assert {fmt.name for fmt in FORMATS} == {"tiff", "cbf", "edf", "hdf5"}
    assert IMAGE_EXTENSIONS == frozenset(s for fmt in FORMATS for s in fmt.suffixes)


def test_names_that_are_not_images():
    for name in ("x.txt", ".x.tif", "x.tif.part", "x.tif~", "x.tmp", "s_data_000001.h5", ".tif"):
        assert not is_image_file(name), name
    assert image_stem("y_master.h5") == "y_master"
    assert image_stem("plain.dat") == "plain"


def test_content_decides_the_format_not_the_name(tmp_path, data_dir):
    """A Pilatus TIFF renamed .cbf is read as TIFF (magic first)."""
    p = tmp_path / "renamed.cbf"
    p.write_bytes(_real(data_dir).read_bytes())
    np.testing.assert_array_equal(read_image(p).data, read_image(_real(data_dir)).data)


# --------------------------------------------------------------------------- #
# Fast TIFF path vs tifffile and fabio on the real data
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["buf1_00000.tif", "agbeh2_1M.tif"])
def test_fast_tiff_path_equals_tifffile_and_fabio(data_dir, name):
    import fabio
    import tifffile

    path = _real(data_dir, name)
    with images.open_image(path) as src:
        assert isinstance(src, images.tiff.FastTiffSource)  # the hand-written path
    frame = read_image(path, expected_shape=PILATUS_SHAPE)
    ref = tifffile.imread(path)
    np.testing.assert_array_equal(frame.data, ref)
    assert frame.data.dtype == ref.dtype
    np.testing.assert_array_equal(frame.data, fabio.open(str(path)).data)


def test_fast_tiff_path_is_not_slower_than_tifffile(data_dir):
    import tifffile

    path = str(_real(data_dir))

    def tf_read():
        with tifffile.TiffFile(path) as tf:
            return tf.asarray()

    read_image(path)
    ours = min(timeit.repeat(lambda: read_image(path), number=20, repeat=5, timer=time.process_time))
    theirs = min(timeit.repeat(tf_read, number=20, repeat=5, timer=time.process_time))
    assert ours < theirs * 1.2, (ours, theirs)


# --------------------------------------------------------------------------- #
# Hand-written CBF path vs fabio on the real data (converted to CBF by fabio)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def real_cbf(shared_data, tmp_path_factory):
    import fabio
    from fabio.cbfimage import CbfImage

    data = fabio.open(str(shared_data / "buf1_00000.tif")).data
    folder = tmp_path_factory.mktemp("cbf")
    path = folder / "buf1_00000.cbf"
    img = CbfImage(data=data)
    img.header["_array_data.header_convention"] = "PILATUS_1.2"
    img.header["_array_data.header_contents"] = (
        "# Detector: PILATUS3 1M, S/N 10-0120\r\n# 2014-01-31T12:26:52.000\r\n"
        "# Exposure_time 10.0000000 s\r\n# Wavelength 1.54987 A\r\n")
    img.write(str(path))
    gz = folder / "buf1_00000.cbf.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    return path, gz, data


def test_cbf_path_equals_fabio_on_real_data(real_cbf):
    import fabio

    path, gz, data = real_cbf
    ref = fabio.open(str(path))
    for p in (path, gz):
        frame = read_image(p, expected_shape=PILATUS_SHAPE)
        np.testing.assert_array_equal(frame.data, ref.data)
        np.testing.assert_array_equal(frame.data, data)
        assert frame.data.dtype == np.int32
        meta = frame.metadata
        assert meta["exposure_time"] == pytest.approx(10.0)
        assert meta["wavelength"] == pytest.approx(1.54987)
        assert meta["detector"] == "PILATUS3 1M, S/N 10-0120"
        assert meta["date"] == "2014-01-31T12:26:52"
        assert read_header(p) == meta


def test_cbf_path_does_not_use_fabios_reader(real_cbf, monkeypatch):
    from fabio.cbfimage import CbfImage

    def boom(*args, **kwargs):
        raise AssertionError("fabio's CBF reader used")

    monkeypatch.setattr(CbfImage, "read", boom)
    monkeypatch.setattr(images, "_FabioSource", boom)
    assert read_image(real_cbf[0]).data.shape == PILATUS_SHAPE


def test_cbf_path_is_not_slower_than_fabio(real_cbf):
    """Both spend most of the time in the same compiled decoder (about 1.7 ms here)."""
    import fabio

    p = str(real_cbf[0])
    read_image(p)
    ours = min(timeit.repeat(lambda: read_image(p), number=5, repeat=5, timer=time.process_time))
    theirs = min(timeit.repeat(lambda: fabio.open(p).data, number=5, repeat=5, timer=time.process_time))
    assert ours < theirs * 1.25, (ours, theirs)


def test_every_compressed_and_hdf5_suffix_of_the_table_reads(tmp_path, real_cbf):
    """The suffixes the old lists disagreed on are read, not only recognised."""
    import bz2

    import h5py

    path, _gz, data = real_cbf
    cbz = tmp_path / "a.cbf.bz2"
    cbz.write_bytes(bz2.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_image(cbz, expected_shape=PILATUS_SHAPE).data, data)
    for suffix in (".hdf", ".nx5"):
        p = tmp_path / f"b{suffix}"
        with h5py.File(p, "w") as f:
            f.create_dataset("entry/data/data", data=data[None])
        assert format_by_name(p).name == "hdf5"
        np.testing.assert_array_equal(read_image(p, expected_shape=PILATUS_SHAPE).data, data)


def test_a_format_source_must_read_frames():
    """SourceBase is abstract: a format module whose source has no ``frame`` fails at once."""
    from saxsdog.io.images._base import SourceBase

    class NoFrames(SourceBase):
        path = "x"

    with pytest.raises(TypeError, match="frame"):
        NoFrames()
