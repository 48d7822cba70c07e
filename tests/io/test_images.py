"""Tests of saxsdog.io.images: TIFF (fast path and tifffile), CBF, EDF, HDF5."""

from __future__ import annotations

import bz2
import gzip
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from saxsdog.errors import (
    CorruptImageError,
    ImageError,
    ImageShapeError,
    IncompleteImageError,
)
from saxsdog.io import images
from saxsdog.io.images import (
    IMAGE_EXTENSIONS,
    Frame,
    count_frames,
    is_image_file,
    iter_frames,
    read_header,
    read_image,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BUF1 = DATA / "buf1_00000.tif"
AGBEH = DATA / "agbeh2_1M.tif"
PILATUS_SHAPE = (1043, 981)

needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"real test data folder {DATA} is absent"
)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _pattern(shape=(64, 48), dtype=np.int32, seed=0) -> np.ndarray:
    """A non-trivial image with Pilatus-style dead (-1) and gap (-2) pixels."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5000, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.signedinteger):
        a[..., 3, :] = -2
        a[..., shape[-2] // 2, shape[-1] // 3] = -1
    return a


def _truncate(src: Path, dst: Path, nbytes: int) -> Path:
    dst.write_bytes(src.read_bytes()[:nbytes])
    return dst


PILATUS_DESCRIPTION = (
    "# Detector: PILATUS 1M, S/N 10-0120\r\n"
    "# 2013-06-06T17:57:26.675\r\n"
    "# Pixel_size 172e-6 m x 172e-6 m\r\n"
    "# Silicon sensor, thickness 0.000450 m\r\n"
    "# Exposure_time 1.0000000 s\r\n"
    "# Exposure_period 1.0030000 s\r\n"
    "# Wavelength 1.5499 A\r\n"
)


def _write_tiff(path: Path, data: np.ndarray, **kwargs) -> Path:
    import tifffile

    tifffile.imwrite(path, data, **kwargs)
    return path


def _write_eiger(
    folder: Path,
    stacks: list[np.ndarray],
    prefix: str = "series",
    compress: bool = True,
) -> Path:
    """Write an Eiger-style master file linking to one data file per stack."""
    import h5py
    import hdf5plugin

    master = folder / f"{prefix}_master.h5"
    for k, stack in enumerate(stacks, start=1):
        with h5py.File(folder / f"{prefix}_data_{k:06d}.h5", "w") as f:
            opts = hdf5plugin.Bitshuffle(cname="lz4") if compress else {}
            ds = f.create_dataset(
                "entry/data/data",
                data=stack,
                chunks=(1,) + stack.shape[1:],
                **opts,
            )
            ds.attrs["image_nr_low"] = 1
            ds.attrs["image_nr_high"] = stack.shape[0]
    with h5py.File(master, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for k in range(1, len(stacks) + 1):
            data[f"data_{k:06d}"] = h5py.ExternalLink(
                f"{prefix}_data_{k:06d}.h5", "/entry/data/data"
            )
        det = entry.create_group("instrument/detector")
        det["count_time"] = 0.099
        det["frame_time"] = 0.1
        det["description"] = b"Dectris EIGER2 Si 1M"
        det["detectorSpecific/data_collection_date"] = b"2021-03-04T05:06:07.500+01:00"
        beam = entry.create_group("instrument/beam")
        beam["incident_wavelength"] = 1.0332
        beam["incident_wavelength"].attrs["units"] = "angstrom"
    return master


# --------------------------------------------------------------------------- #
# Real Pilatus TIFFs
# --------------------------------------------------------------------------- #


@needs_data
@pytest.mark.parametrize("path", [BUF1, AGBEH], ids=["buf1", "agbeh"])
def test_real_tiff_matches_fabio(path):
    import fabio

    frame = read_image(path)
    expected = fabio.open(str(path)).data
    assert isinstance(frame, Frame)
    assert frame.data.shape == PILATUS_SHAPE
    assert frame.data.dtype == np.int32
    assert frame.data.dtype.isnative
    assert frame.data.flags.c_contiguous
    np.testing.assert_array_equal(frame.data, expected)
    assert frame.path == str(path)
    assert (frame.index, frame.nframes) == (0, 1)


@needs_data
def test_real_tiff_values():
    data = read_image(BUF1).data
    # Pilatus 1M: gaps between modules are -1 (or -2), counts are non-negative.
    assert data.min() < 0
    assert set(np.unique(data[data < 0]).tolist()) <= {-1, -2}
    assert data.max() > 0
    # A full row of the horizontal module gap (rows 195..211 on a Pilatus 1M).
    assert (data[200, :] < 0).all()


@needs_data
def test_real_tiff_metadata():
    meta = read_image(BUF1).metadata
    assert meta["exposure_time"] == pytest.approx(10.0)
    assert meta["wavelength"] == pytest.approx(1.54987)
    assert meta["detector"] == "PILATUS3 1M, S/N 10-0120"
    # No Pilatus date line in this header: the TIFF DateTime tag is used, as local time.
    assert meta["date"] == "2014-01-31T12:26:52"
    assert meta["timestamp"] == pytest.approx(datetime(2014, 1, 31, 12, 26, 52).timestamp())
    assert read_header(BUF1) == meta
    assert count_frames(BUF1) == 1


@needs_data
def test_real_tiff_iter_frames():
    frames = list(iter_frames(BUF1, expected_shape=PILATUS_SHAPE))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].data, read_image(BUF1).data)
    assert frames[0].metadata == read_header(BUF1)


@needs_data
def test_real_tiff_uses_fast_path(monkeypatch):
    """Pilatus TIFFs must not go through tifffile or fabio (speed)."""

    def boom(*args, **kwargs):
        raise AssertionError("slow path used")

    monkeypatch.setattr(images.tiff, "_tifffile_open", boom)
    monkeypatch.setattr(images, "_FabioSource", boom)
    frame = read_image(BUF1)
    assert frame.data.shape == PILATUS_SHAPE


@needs_data
def test_real_tiff_expected_shape():
    assert read_image(BUF1, expected_shape=PILATUS_SHAPE).data.shape == PILATUS_SHAPE
    with pytest.raises(ImageShapeError) as info:
        read_image(BUF1, expected_shape=(1679, 1475))
    msg = str(info.value)
    assert "1043" in msg and "981" in msg and "1679" in msg and "1475" in msg
    assert info.value.path == str(BUF1)
    with pytest.raises(ImageShapeError):
        list(iter_frames(BUF1, expected_shape=(981, 1043)))


@needs_data
@pytest.mark.parametrize("fraction", [0.6, 0.999])
def test_truncated_real_tiff_is_incomplete(tmp_path, fraction):
    size = BUF1.stat().st_size
    t = _truncate(BUF1, tmp_path / "cut.tif", int(size * fraction))
    with pytest.raises(IncompleteImageError) as info:
        read_image(t)
    assert info.value.retryable
    assert "truncated" in info.value.reason
    with pytest.raises(IncompleteImageError):
        list(iter_frames(t))


@needs_data
@pytest.mark.parametrize("nbytes", [1, 2, 4, 7, 100, 300, 700, 4096])
def test_real_tiff_cut_inside_header_is_incomplete(tmp_path, nbytes):
    t = _truncate(BUF1, tmp_path / "cut.tif", nbytes)
    with pytest.raises(IncompleteImageError):
        read_image(t)


@needs_data
def test_frame_index_out_of_range_tiff():
    with pytest.raises(ImageError, match="out of range"):
        read_image(BUF1, frame=1)


# --------------------------------------------------------------------------- #
# Synthetic TIFFs: fast-path variants and tifffile fallback
# --------------------------------------------------------------------------- #


def test_pilatus_header_with_date_line(tmp_path):
    data = _pattern()
    p = _write_tiff(tmp_path / "p.tif", data, description=PILATUS_DESCRIPTION)
    frame = read_image(p)
    np.testing.assert_array_equal(frame.data, data)
    m = frame.metadata
    assert m["date"] == "2013-06-06T17:57:26.675000"
    assert m["timestamp"] == pytest.approx(
        datetime(2013, 6, 6, 17, 57, 26, 675000).timestamp()
    )
    assert m["exposure_time"] == pytest.approx(1.0)
    assert m["wavelength"] == pytest.approx(1.5499)
    assert m["detector"] == "PILATUS 1M, S/N 10-0120"


def test_pilatus_old_date_format(tmp_path):
    desc = "# 2009/Jun/26 16:01:31.170\r\n# Exposure_time 0.5 s\r\n"
    p = _write_tiff(tmp_path / "old.tif", _pattern(), description=desc)
    m = read_header(p)
    assert m["date"] == "2009-06-26T16:01:31.170000"
    assert m["exposure_time"] == pytest.approx(0.5)
    assert "wavelength" not in m


def test_tiff_without_header_has_empty_metadata(tmp_path):
    import tifffile

    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, _pattern(), metadata=None, software=False)
    assert read_image(p).metadata == {}


@pytest.mark.parametrize(
    "dtype", [np.int32, np.uint16, np.uint8, np.float32, np.float64, np.int16, np.uint32]
)
def test_tiff_dtypes(tmp_path, dtype):
    data = _pattern(dtype=dtype)
    p = _write_tiff(tmp_path / "d.tif", data)
    frame = read_image(p)
    assert frame.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(frame.data, data)


def test_big_endian_tiff_is_returned_native(tmp_path):
    data = _pattern()
    p = _write_tiff(tmp_path / "be.tif", data, byteorder=">")
    assert p.read_bytes()[:2] == b"MM"
    frame = read_image(p)
    assert frame.data.dtype == np.int32 and frame.data.dtype.isnative
    np.testing.assert_array_equal(frame.data, data)


def test_frames_are_read_into_a_reused_buffer(tmp_path):
    """iter_frames(buffer=...) fills one array frame after frame (no new 4 MB array each
    time), little- and big-endian alike, with the same pixels as a plain read."""
    from saxsdog.io.images import ReadBuffer

    buf = ReadBuffer()
    first = _pattern()
    second = first[::-1].copy() * 3
    p1 = _write_tiff(tmp_path / "a.tif", first)
    p2 = _write_tiff(tmp_path / "b.tif", second, byteorder=">")
    (f1,) = iter_frames(p1, buffer=buf)
    np.testing.assert_array_equal(f1.data, first)
    address = f1.data.__array_interface__["data"][0]
    (f1_again,) = iter_frames(p1, buffer=buf)
    assert f1_again.data.__array_interface__["data"][0] == address  # the same memory, reused
    (f2,) = iter_frames(p2, buffer=buf)  # another byte order: its own array, swapped in place
    assert f2.data.dtype.isnative
    np.testing.assert_array_equal(f2.data, second)
    (f2_again,) = iter_frames(p2, buffer=buf)
    assert f2_again.data.__array_interface__["data"][0] == f2.data.__array_interface__["data"][0]
    np.testing.assert_array_equal(f2_again.data, second)
    np.testing.assert_array_equal(read_image(p2).data, second)  # without a buffer: unchanged


def _mappings_of(path: Path) -> int:
    """How many mappings of ``path`` this process holds (/proc/self/maps)."""
    name = str(path.resolve())
    with open("/proc/self/maps") as fh:
        return sum(1 for line in fh if line.rstrip("\n").endswith(name))


def test_a_mapping_buffer_gives_views_of_the_file_and_releases_them(tmp_path):
    """ReadBuffer(map_files=True): a native-order TIFF's frame is a view of the mapped file
    (not of the buffer's array), with the pixels and metadata of a plain read and the
    flags of a read frame (writable, aligned, C-contiguous: the compiled kernels' signature);
    the mapping goes with the frame.  A file in the other byte order is read and swapped."""
    import gc

    from saxsdog.io.images import ReadBuffer

    buf = ReadBuffer(map_files=True)
    first = _pattern()
    p1 = _write_tiff(tmp_path / "a.tif", first, description=PILATUS_DESCRIPTION)
    (f1,) = iter_frames(p1, buffer=buf)
    np.testing.assert_array_equal(f1.data, first)
    assert f1.metadata == read_image(p1).metadata
    assert f1.data.dtype == read_image(p1).data.dtype and f1.data.dtype.isnative
    assert f1.data.flags.writeable and f1.data.flags.aligned and f1.data.flags.c_contiguous
    assert buf._array is None  # nothing was read into the buffer
    assert _mappings_of(p1) == 1
    (f1_again,) = iter_frames(p1, buffer=buf)  # each frame its own mapping, valid while held
    np.testing.assert_array_equal(f1.data, first)
    del f1, f1_again
    gc.collect()
    assert _mappings_of(p1) == 0
    second = first[::-1].copy() * 3
    p2 = _write_tiff(tmp_path / "b.tif", second, byteorder=">")
    (f2,) = iter_frames(p2, buffer=buf)  # big-endian: read into the buffer and swapped
    assert f2.data.dtype.isnative and _mappings_of(p2) == 0
    np.testing.assert_array_equal(f2.data, second)


@needs_data
def test_the_real_pilatus_image_mapped_is_the_image_read():
    from saxsdog.io.images import ReadBuffer

    (mapped,) = iter_frames(BUF1, expected_shape=PILATUS_SHAPE, buffer=ReadBuffer(map_files=True))
    plain = read_image(BUF1, expected_shape=PILATUS_SHAPE)
    assert mapped.data.dtype == plain.data.dtype and mapped.data.shape == PILATUS_SHAPE
    np.testing.assert_array_equal(mapped.data, plain.data)
    assert mapped.metadata == plain.metadata


def test_a_file_cut_short_after_its_header_was_parsed_is_incomplete_not_mapped(tmp_path):
    """Truncated between the header check and the mapping (its writer started it again):
    retryable IncompleteImageError, never a mapping past the end of the file (SIGBUS)."""
    from saxsdog.io.images import ReadBuffer, open_image

    p = _write_tiff(tmp_path / "cut.tif", _pattern())
    with open_image(p) as src:
        with open(p, "r+b") as fh:
            fh.truncate(1000)
        src.buffer = ReadBuffer(map_files=True)
        with pytest.raises(IncompleteImageError, match="truncated"):
            src.frame(0)
    assert _mappings_of(p) == 0


def test_multistrip_tiff(tmp_path):
    data = _pattern(shape=(100, 30))
    p = _write_tiff(tmp_path / "ms.tif", data, rowsperstrip=7)
    import tifffile

    with tifffile.TiffFile(p) as tf:
        assert len(tf.pages[0].dataoffsets) > 1
    np.testing.assert_array_equal(read_image(p).data, data)


def test_compressed_tiff_uses_tifffile(tmp_path):
    data = _pattern(shape=(200, 150))
    p = _write_tiff(tmp_path / "z.tif", data, compression="zlib")
    frame = read_image(p)
    np.testing.assert_array_equal(frame.data, data)
    assert count_frames(p) == 1


def test_truncated_compressed_tiff_is_incomplete(tmp_path):
    # tifffile writes the IFD after the data, so a cut file may lack the IFD or the data.
    data = _pattern(shape=(300, 200))
    p = _write_tiff(tmp_path / "z.tif", data, compression="zlib", rowsperstrip=50)
    size = p.stat().st_size
    for frac in (0.3, 0.6, 0.95):
        t = _truncate(p, tmp_path / f"cut{frac}.tif", int(size * frac))
        with pytest.raises(IncompleteImageError):
            read_image(t)


def test_multipage_tiff(tmp_path):
    import tifffile

    stack = np.stack([_pattern(seed=s) for s in range(3)])
    p = tmp_path / "stack.tif"
    with tifffile.TiffWriter(p) as tw:
        for a in stack:
            tw.write(a, description=PILATUS_DESCRIPTION)
    assert count_frames(p) == 3
    frames = list(iter_frames(p))
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.nframes == 3 for f in frames)
    for f, a in zip(frames, stack):
        np.testing.assert_array_equal(f.data, a)
    np.testing.assert_array_equal(read_image(p, frame=2).data, stack[2])
    assert read_image(p, frame=1).metadata["exposure_time"] == pytest.approx(1.0)
    with pytest.raises(ImageError, match="out of range"):
        read_image(p, frame=3)


def test_rgb_tiff_is_rejected(tmp_path):
    p = _write_tiff(tmp_path / "rgb.tif", np.zeros((10, 12, 3), np.uint8), photometric="rgb")
    with pytest.raises(CorruptImageError, match="not 2-D"):
        read_image(p)


# --------------------------------------------------------------------------- #
# Empty, missing, corrupt
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["x.tif", "x.cbf", "x.edf", "x.h5", "x.nxs", "x.edf.gz"])
def test_zero_byte_file_is_incomplete(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")
    for fn in (read_image, read_header, count_frames, lambda q: list(iter_frames(q))):
        with pytest.raises(IncompleteImageError, match="empty"):
            fn(p)


@pytest.mark.parametrize("name", ["x.tif", "x.tiff", "x.cbf", "x.edf", "x.h5", "x.hdf5", "x.xyz"])
def test_text_file_is_corrupt(tmp_path, name):
    p = tmp_path / name
    p.write_text("this is not an image, just some text\n" * 20)
    with pytest.raises(CorruptImageError) as info:
        read_image(p)
    assert not info.value.retryable
    assert info.value.path == str(p)
    with pytest.raises(CorruptImageError):
        list(iter_frames(p))


@pytest.mark.parametrize("name", ["g.tif", "g.cbf", "g.edf", "g.h5", "g.edf.gz"])
def test_garbage_bytes_are_corrupt(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 10000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptImageError):
        read_image(p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.tif"
    for fn in (read_image, read_header, count_frames, lambda q: list(iter_frames(q))):
        with pytest.raises(ImageError) as info:
            fn(p)
        assert type(info.value) is ImageError
        assert info.value.reason == "no such file"
        assert not info.value.retryable


def test_directory_is_not_an_image(tmp_path):
    d = tmp_path / "dir.tif"
    d.mkdir()
    with pytest.raises(ImageError, match="directory"):
        read_image(d)


def test_tiff_with_ifd_beyond_eof_is_incomplete(tmp_path):
    # Header says the IFD is at byte 10**6 but the file stops early.
    p = tmp_path / "h.tif"
    p.write_bytes(b"II*\x00" + (10**6).to_bytes(4, "little") + b"\x00" * 100)
    with pytest.raises(IncompleteImageError):
        read_image(p)


# --------------------------------------------------------------------------- #
# EDF and CBF via fabio
# --------------------------------------------------------------------------- #


def _write_edf(path: Path, data: np.ndarray, header: dict | None = None) -> Path:
    from fabio.edfimage import EdfImage

    EdfImage(data=data, header=header or {}).write(str(path))
    return path


def _write_cbf(path: Path, data: np.ndarray, pilatus_header: str | None = None) -> Path:
    from fabio.cbfimage import CbfImage

    img = CbfImage(data=data)
    if pilatus_header is not None:
        img.header["_array_data.header_contents"] = pilatus_header
    img.write(str(path))
    return path


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32])
def test_edf_roundtrip(tmp_path, dtype):
    data = _pattern(shape=(120, 90), dtype=dtype)
    p = _write_edf(
        tmp_path / "a.edf",
        data,
        {
            "ExposureTime": "2.5",
            "Date": "Fri Jun  6 17:57:26 2013",
            "WaveLength": "1.0332e-10",
            "Detector": "Pilatus 300k",
        },
    )
    frame = read_image(p, expected_shape=(120, 90))
    assert frame.data.dtype == np.dtype(dtype)
    assert frame.data.flags.c_contiguous
    np.testing.assert_array_equal(frame.data, data)
    m = frame.metadata
    assert m["exposure_time"] == pytest.approx(2.5)
    assert m["wavelength"] == pytest.approx(1.0332)  # metres in EDF -> Å
    assert m["date"] == "2013-06-06T17:57:26"
    assert m["timestamp"] == pytest.approx(datetime(2013, 6, 6, 17, 57, 26).timestamp())
    assert m["detector"] == "Pilatus 300k"
    assert read_header(p) == m
    assert count_frames(p) == 1
    with pytest.raises(ImageShapeError):
        read_image(p, expected_shape=(90, 120))


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32, np.float64, np.int8, np.uint32])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_plain_edf_is_read_without_fabio_as_fabio_reads_it(tmp_path, monkeypatch, dtype, byteorder):
    """A plain single-frame EDF is read with one preadv (into a reused buffer when given): the
    same pixels, dtype and metadata as through fabio."""
    from fabio.edfimage import EdfImage

    from saxsdog.io.images import ReadBuffer, edf

    from fabio.edfimage import NUMPY_EDF_DTYPE

    data = _pattern(shape=(120, 90), dtype=dtype)
    stored = data.astype(np.dtype(dtype).newbyteorder(byteorder))
    lines = [f"ByteOrder = {'LowByteFirst' if byteorder == '<' else 'HighByteFirst'} ;",
             f"DataType = {NUMPY_EDF_DTYPE[str(np.dtype(dtype))]} ;", "Dim_1 = 90 ;", "Dim_2 = 120 ;",
             f"Size = {stored.nbytes} ;", "ExposureTime = 2.5 ;", "Title = x = y ;", "Monitor =  12  ;",
             "WaveLength = 1.0332e-10 ;"]
    text = "{\n" + "\n".join(lines) + "\n"
    header = (text + " " * (512 - len(text) - 2) + "}\n").encode("ascii")  # blocks of 512 bytes, as EDF has
    p = tmp_path / "a.edf"
    p.write_bytes(header + stored.tobytes())
    import fabio

    from saxsdog.io.images._base import metadata_from_keys

    img = fabio.open(str(p))  # what the fabio path made of it
    ref_data, ref_meta = img.data, metadata_from_keys(dict(img.header))
    np.testing.assert_array_equal(ref_data, data)

    def no_fabio(*a, **k):
        raise AssertionError("a plain EDF must not go through fabio")

    monkeypatch.setattr(EdfImage, "read", no_fabio)
    fast = read_image(p, expected_shape=(120, 90))
    buf = ReadBuffer()
    (into,) = iter_frames(p, buffer=buf)
    for frame in (fast, into):
        assert frame.data.dtype == np.dtype(dtype) and frame.data.dtype.isnative and frame.data.flags.c_contiguous
        np.testing.assert_array_equal(frame.data, ref_data)
        assert frame.metadata == ref_meta
    assert count_frames(p) == 1
    monkeypatch.undo()
    assert edf.plain_edf(p.read_bytes()[:8192], p.stat().st_size) is not None
    assert edf.plain_edf(p.read_bytes()[:8192], p.stat().st_size + 1) is None  # more data: fabio decides


def test_edf_gz_and_bz2(tmp_path):
    data = _pattern(shape=(50, 40))
    p = _write_edf(tmp_path / "a.edf", data, {"ExposureTime": "1"})
    gz = tmp_path / "a.edf.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    np.testing.assert_array_equal(read_image(gz).data, data)
    bz = tmp_path / "a.edf.bz2"
    bz.write_bytes(bz2.compress(p.read_bytes()))
    np.testing.assert_array_equal(read_image(bz).data, data)
    cut = _truncate(gz, tmp_path / "cut.edf.gz", gz.stat().st_size // 2)
    with pytest.raises(IncompleteImageError):
        read_image(cut)


def test_multiframe_edf(tmp_path):
    from fabio.edfimage import EdfImage

    stack = [_pattern(shape=(30, 20), seed=s) for s in range(3)]
    img = EdfImage(data=stack[0], header={"ExposureTime": "1"})
    for a in stack[1:]:
        img.append_frame(data=a, header={"ExposureTime": "1"})
    p = tmp_path / "multi.edf"
    img.write(str(p))
    assert count_frames(p) == 3
    frames = list(iter_frames(p))
    assert [f.index for f in frames] == [0, 1, 2]
    for f, a in zip(frames, stack):
        np.testing.assert_array_equal(f.data, a)
        assert f.nframes == 3
    np.testing.assert_array_equal(read_image(p, frame=2).data, stack[2])


@pytest.mark.parametrize("cut", [1, 5, 100, 300, 511, 512, 0.5, 0.9, -1])
def test_truncated_edf_is_incomplete(tmp_path, cut):
    p = _write_edf(tmp_path / "a.edf", _pattern(shape=(200, 150)), {"ExposureTime": "1"})
    size = p.stat().st_size
    n = int(size * cut) if isinstance(cut, float) else (size + cut if cut < 0 else cut)
    t = _truncate(p, tmp_path / "cut.edf", n)
    with pytest.raises(IncompleteImageError):
        read_image(t)


def test_cbf_roundtrip_with_pilatus_header(tmp_path):
    data = _pattern(shape=(195, 487))
    p = _write_cbf(tmp_path / "a.cbf", data, PILATUS_DESCRIPTION)
    frame = read_image(p, expected_shape=(195, 487))
    assert frame.data.dtype == np.int32
    np.testing.assert_array_equal(frame.data, data)
    m = frame.metadata
    assert m["exposure_time"] == pytest.approx(1.0)
    assert m["wavelength"] == pytest.approx(1.5499)
    assert m["date"] == "2013-06-06T17:57:26.675000"
    assert m["detector"] == "PILATUS 1M, S/N 10-0120"
    assert read_header(p) == m
    assert count_frames(p) == 1
    assert [f.index for f in iter_frames(p)] == [0]
    with pytest.raises(ImageShapeError):
        read_image(p, expected_shape=(487, 195))


@pytest.mark.parametrize("cut", [3, 50, 400, 0.5, 0.9, -40])
def test_truncated_cbf_is_incomplete(tmp_path, cut):
    p = _write_cbf(tmp_path / "a.cbf", _pattern(shape=(200, 150)))
    size = p.stat().st_size
    n = int(size * cut) if isinstance(cut, float) else (size + cut if cut < 0 else cut)
    t = _truncate(p, tmp_path / "cut.cbf", n)
    with pytest.raises(IncompleteImageError):
        read_image(t)


def test_cbf_with_damaged_binary_is_corrupt(tmp_path):
    p = _write_cbf(tmp_path / "a.cbf", _pattern(shape=(200, 150)))
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)  # same length, different content: MD5 mismatch
    bad = tmp_path / "bad.cbf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptImageError):
        read_image(bad)


# --------------------------------------------------------------------------- #
# HDF5: Eiger master files and NeXus
# --------------------------------------------------------------------------- #


@pytest.fixture
def eiger(tmp_path, monkeypatch):
    stack = _pattern(shape=(5, 64, 48), dtype=np.uint32, seed=7)
    master = _write_eiger(tmp_path, [stack])
    # External links must resolve relative to the master file, not the cwd.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return master, stack


def test_eiger_data_is_bitshuffle_lz4(eiger, tmp_path):
    import h5py

    with h5py.File(tmp_path / "series_data_000001.h5", "r") as f:
        assert "32008" in f["entry/data/data"]._filters  # bitshuffle filter id


def _open_files_under(folder) -> list[str]:
    import os

    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            names.append(target)
    return names


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
def test_eiger_files_are_closed_after_reading_while_frames_are_kept(eiger, tmp_path):
    # The frames' header fields keep their source; the files it opened (the master and
    # the data files its external links name) must still be closed, or workers forked
    # later share the HDF5 library's open file and their reads fail.
    master, stack = eiger
    kept = list(iter_frames(master, expected_shape=(64, 48)))
    assert _open_files_under(tmp_path) == []
    assert len(kept) == 5 and kept[0].metadata["header"] is not None


def test_eiger_master_reads_all_frames(eiger):
    master, stack = eiger
    assert count_frames(master) == 5
    frames = list(iter_frames(master, expected_shape=(64, 48)))
    assert len(frames) == 5
    for i, (f, a) in enumerate(zip(frames, stack)):
        assert (f.index, f.nframes) == (i, 5)
        assert f.path == str(master)
        assert f.data.dtype == np.uint32
        assert f.data.flags.c_contiguous
        np.testing.assert_array_equal(f.data, a)
    np.testing.assert_array_equal(read_image(master, frame=3).data, stack[3])
    with pytest.raises(ImageError, match="out of range"):
        read_image(master, frame=5)
    with pytest.raises(ImageShapeError):
        read_image(master, expected_shape=(48, 64))


def test_eiger_metadata(eiger):
    master, _ = eiger
    m0 = read_header(master)
    assert m0["exposure_time"] == pytest.approx(0.099)
    assert m0["wavelength"] == pytest.approx(1.0332)
    assert m0["detector"] == "Dectris EIGER2 Si 1M"
    start = datetime(2021, 3, 4, 5, 6, 7, 500000, tzinfo=timezone(timedelta(hours=1)))
    assert m0["timestamp"] == pytest.approx(start.timestamp())
    assert datetime.fromisoformat(m0["date"]) == start
    m3 = read_image(master, frame=3).metadata
    assert m3["timestamp"] == pytest.approx(start.timestamp() + 0.3)


def test_eiger_several_data_files(tmp_path):
    a = _pattern(shape=(3, 20, 10), dtype=np.uint16, seed=1)
    b = _pattern(shape=(2, 20, 10), dtype=np.uint16, seed=2)
    master = _write_eiger(tmp_path, [a, b])
    assert count_frames(master) == 5
    got = np.stack([f.data for f in iter_frames(master)])
    np.testing.assert_array_equal(got, np.concatenate([a, b]))
    np.testing.assert_array_equal(read_image(master, frame=4).data, b[1])


def test_eiger_missing_data_file_is_incomplete(eiger, tmp_path):
    master, _ = eiger
    (tmp_path / "series_data_000001.h5").unlink()
    with pytest.raises(IncompleteImageError, match="data_000001"):
        read_image(master)


def test_eiger_truncated_data_file_is_incomplete(eiger, tmp_path):
    master, _ = eiger
    data_file = tmp_path / "series_data_000001.h5"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size * 6 // 10])
    with pytest.raises(IncompleteImageError):
        list(iter_frames(master))


@pytest.mark.parametrize("cut", [4, 100, 0.6, -8])
def test_truncated_hdf5_is_incomplete(eiger, tmp_path, cut):
    master, _ = eiger
    size = master.stat().st_size
    n = int(size * cut) if isinstance(cut, float) else (size + cut if cut < 0 else cut)
    t = _truncate(master, tmp_path / "cut_master.h5", n)
    with pytest.raises(IncompleteImageError):
        read_image(t)


def test_nexus_signal_is_preferred(tmp_path):
    import h5py
    import hdf5plugin

    stack = _pattern(shape=(4, 16, 12), dtype=np.int32, seed=3)
    p = tmp_path / "scan.nxs"
    with h5py.File(p, "w") as f:
        f.attrs["default"] = "entry"
        # A decoy 3-D dataset that comes first alphabetically.
        f.create_dataset("aaa/decoy", data=np.zeros((2, 5, 5), np.float32))
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "result"
        res = entry.create_group("result")
        res.attrs["NX_class"] = "NXdata"
        res.attrs["signal"] = "images"
        res.create_dataset("images", data=stack, chunks=(1, 16, 12), **hdf5plugin.Bitshuffle())
        entry["start_time"] = "2020-01-02T03:04:05"
    assert count_frames(p) == 4
    frames = list(iter_frames(p))
    np.testing.assert_array_equal(np.stack([f.data for f in frames]), stack)
    assert frames[2].metadata["date"] == "2020-01-02T03:04:05"


def test_nexus_nxdata_without_default(tmp_path):
    import h5py

    img = _pattern(shape=(16, 12), dtype=np.float32)
    p = tmp_path / "single.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("a/other", data=np.zeros((3, 4, 4)))
        g = f.create_group("z/measurement")
        g.attrs["NX_class"] = np.bytes_("NXdata")
        g.attrs["signal"] = np.bytes_("frame")
        g["frame"] = img
    frame = read_image(p)
    assert (frame.index, frame.nframes) == (0, 1)
    np.testing.assert_array_equal(frame.data, img)


def test_generic_hdf5_first_3d_dataset(tmp_path):
    import h5py

    stack = _pattern(shape=(2, 10, 8), dtype=np.int32)
    p = tmp_path / "plain.hdf5"
    with h5py.File(p, "w") as f:
        f["meta/value"] = np.arange(5)
        f["images/stack"] = stack
        f["images/stack"].attrs["note"] = "big-endian test below"
    assert count_frames(p) == 2
    np.testing.assert_array_equal(read_image(p, frame=1).data, stack[1])


def test_hdf5_big_endian_dataset_is_native(tmp_path):
    import h5py

    a = _pattern(shape=(10, 8), dtype=np.int32)
    p = tmp_path / "be.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("img", data=a.astype(">i4"))
    frame = read_image(p)
    assert frame.data.dtype.isnative and frame.data.dtype == np.int32
    np.testing.assert_array_equal(frame.data, a)


def test_hdf5_without_images_is_corrupt(tmp_path):
    import h5py

    p = tmp_path / "nothing.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(10)
        f["s"] = "text"
    with pytest.raises(CorruptImageError, match="no 2-D or 3-D"):
        read_image(p)


# --------------------------------------------------------------------------- #
# is_image_file / IMAGE_EXTENSIONS / Frame
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "name, expected",
    [
        ("buf1_00000.tif", True),
        ("BUF1_00000.TIF", True),
        ("a.tiff", True),
        ("a.cbf", True),
        ("a.edf", True),
        ("a.edf.gz", True),
        ("a.cbf.gz", True),
        ("series_master.h5", True),
        ("scan.hdf5", True),
        ("scan.nxs", True),
        ("/some/dir.d/x.tif", True),
        ("series_data_000001.h5", False),  # read through its master
        (".buf1_00000.tif", False),
        ("buf1_00000.tif.part", False),
        ("buf1_00000.tif.tmp", False),
        ("buf1_00000.tif~", False),
        ("buf1_00000.chi", False),
        ("cal.json", False),
        ("notes.txt", False),
        ("a.msk", False),
        ("tif", False),
        (".tif", False),
        ("", False),
    ],
)
def test_is_image_file(name, expected):
    assert is_image_file(name) is expected
    if name:
        assert is_image_file(Path(name)) is expected


def test_image_extensions():
    assert isinstance(IMAGE_EXTENSIONS, frozenset)
    assert {".tif", ".tiff", ".cbf", ".edf", ".h5", ".hdf5", ".nxs"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


def test_frame_defaults():
    f = Frame(data=np.zeros((2, 3)), path="x.tif")
    g = Frame(data=np.zeros((2, 3)), path="y.tif")
    assert (f.index, f.nframes, f.metadata) == (0, 1, {})
    f.metadata["a"] = 1
    assert g.metadata == {}


# --------------------------------------------------------------------------- #
# No bare library exception escapes
# --------------------------------------------------------------------------- #


def _sample_files(tmp_path: Path) -> list[Path]:
    out = [
        _write_tiff(tmp_path / "s.tif", _pattern(shape=(40, 30)), description=PILATUS_DESCRIPTION),
        _write_tiff(tmp_path / "z.tif", _pattern(shape=(40, 30)), compression="zlib"),
        _write_edf(tmp_path / "s.edf", _pattern(shape=(40, 30))),
        _write_cbf(tmp_path / "s.cbf", _pattern(shape=(40, 30))),
    ]
    out.append(_write_eiger(tmp_path, [_pattern(shape=(3, 40, 30), dtype=np.uint32)]))
    for src in (out[2], out[3]):  # compressed EDF and CBF
        gz = tmp_path / (src.name + ".gz")
        gz.write_bytes(gzip.compress(src.read_bytes()))
        out.append(gz)
    return out


def test_every_truncation_point_raises_only_image_errors(tmp_path):
    """Cut each format at many points: result is a full read or an ImageError."""
    rng = np.random.default_rng(5)
    for src in _sample_files(tmp_path):
        raw = src.read_bytes()
        expected = [f.data for f in iter_frames(src)]
        cuts = sorted(set(rng.integers(1, len(raw), 40).tolist()) | {1, 2, 8, 16, len(raw) - 1})
        for n in cuts:
            dst = tmp_path / f"cut_{n}_{src.name}"
            dst.write_bytes(raw[:n])
            try:
                frames = list(iter_frames(dst))
            except IncompleteImageError:
                pass
            except ImageError as exc:  # pragma: no cover - reported with context
                pytest.fail(f"{src.name} cut at {n}/{len(raw)}: {type(exc).__name__}: {exc}")
            else:
                # Only a cut after the pixel data may succeed, and then correctly.
                assert len(frames) == len(expected), (src.name, n)
                for f, e in zip(frames, expected):
                    np.testing.assert_array_equal(f.data, e, err_msg=f"{src.name} cut at {n}")
            finally:
                dst.unlink()


# --------------------------------------------------------------------------- #
# Raw header fields: metadata["header"] (the calibration's Normalization reads them)
# --------------------------------------------------------------------------- #

_MONITOR_LINES = "# Flux 2.5e6 ph/s\r\n# Transmission: 0.81\r\n# Tau = 0 s\r\n"


@needs_data
def test_real_tiff_header_fields():
    fields = read_image(BUF1).metadata["header"]
    assert fields["Exposure_time"] == "10.0000000 s"
    assert fields["Wavelength"] == "1.54987 A"
    assert fields["Threshold_setting"] == "4000 eV"  # the ':' after the key is dropped
    assert fields["N_excluded_pixels"] == "137"  # so is '='
    assert read_header(BUF1)["header"] == fields
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


def test_tiff_header_fields_from_pilatus_lines(tmp_path):
    p = _write_tiff(tmp_path / "m.tif", _pattern(), description=PILATUS_DESCRIPTION + _MONITOR_LINES)
    fields = read_image(p).metadata["header"]
    assert fields["Flux"] == "2.5e6 ph/s" and fields["Transmission"] == "0.81" and fields["Tau"] == "0 s"
    assert "2013-06-06T17" not in "".join(fields)  # the date line has no key
    assert read_header(p)["header"] == fields


def test_tiff_header_fields_through_tifffile(tmp_path):
    import tifffile

    p = tmp_path / "z.tif"
    tifffile.imwrite(p, _pattern(), description=PILATUS_DESCRIPTION + _MONITOR_LINES, compression="zlib",
                     metadata=None)
    assert read_image(p).metadata["header"]["Flux"] == "2.5e6 ph/s"


def test_cbf_header_fields(tmp_path):
    p = _write_cbf(tmp_path / "a.cbf", _pattern(shape=(20, 30)), PILATUS_DESCRIPTION + _MONITOR_LINES)
    m = read_image(p).metadata
    assert m["header"]["Flux"] == "2.5e6 ph/s" and m["header"]["Transmission"] == "0.81"
    assert m["header"]["Exposure_time"].startswith("1")
    assert "X-Binary-Size" in m["header"]  # the MIME keys too
    assert read_header(p) == m


def test_edf_header_fields_keep_their_spelling(tmp_path):
    p = _write_edf(tmp_path / "a.edf", _pattern(), {"Monitor": "12345.5", "count_time": "0.5", "Title": "x y"})
    m = read_image(p).metadata
    assert m["header"]["Monitor"] == "12345.5" and m["header"]["Title"] == "x y"
    assert m["exposure_time"] == pytest.approx(0.5)
    assert read_header(p) == m  # the first header read without the pixels gives the same


def test_hdf5_header_fields_scalars_attributes_and_per_frame(tmp_path):
    import h5py

    p = tmp_path / "n.h5"
    stack = _pattern(shape=(3, 20, 10), dtype=np.uint16)
    with h5py.File(p, "w") as f:
        f.attrs["beamline"] = "saxs"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        det = entry.create_group("instrument/detector")
        det["count_time"] = 0.25
        det["count_time"].attrs["units"] = "s"
        entry["instrument/monitor/integral"] = np.array([100.0, 200.0, 300.0])  # one per frame
        entry["sample/transmission"] = 0.5
        entry["sample/name"] = b"lysozyme"
        entry.create_dataset("data/data", data=stack)
    frames = list(iter_frames(p))
    h0, h2 = frames[0].metadata["header"], frames[2].metadata["header"]
    assert h0["count_time"] == "0.25" and h0["entry/instrument/detector/count_time"] == "0.25"
    assert h0["transmission"] == "0.5" and h0["name"] == "lysozyme"
    assert h0["@beamline"] == "saxs" and h0["entry/instrument/detector/count_time@units"] == "s"
    assert (h0["integral"], h2["integral"]) == ("100.0", "300.0")  # read at the frame's index
    assert h2["entry/instrument/monitor/integral"] == "300.0"
    assert "data" not in h0 and "entry/data/data" not in h0  # not the images
    assert frames[0].metadata["exposure_time"] == pytest.approx(0.25)


def test_eiger_master_header_fields(eiger):
    master, _ = eiger
    h = read_header(master)["header"]
    assert h["count_time"] == "0.099" and h["frame_time"] == "0.1"
    assert h["description"] == "Dectris EIGER2 Si 1M"
    assert not any(k.startswith("entry/data/data_") for k in h)  # external links are not followed


def test_header_fields_are_bounded():
    from saxsdog.io.images._base import MAX_HEADER_FIELDS, MAX_HEADER_VALUE, pilatus_header_fields

    text = "\n".join(f"# Key{i} {'v' * (MAX_HEADER_VALUE + 10)}" for i in range(MAX_HEADER_FIELDS + 50))
    fields = pilatus_header_fields(text)
    assert len(fields) == MAX_HEADER_FIELDS
    assert max(len(v) for v in fields.values()) == MAX_HEADER_VALUE


def test_hdf5_header_fields_are_read_when_first_looked_at_even_after_close(tmp_path):
    import pickle

    import h5py

    p = tmp_path / "n.h5"
    with h5py.File(p, "w") as f:
        f["entry/instrument/monitor/Flux"] = 1234.5
        f.create_dataset("entry/data/data", data=_pattern(shape=(2, 20, 10), dtype=np.uint16))
    frame = read_image(p, frame=1)  # the file is closed when read_image returns
    header = frame.metadata["header"]
    assert header._fields is None  # nothing scanned yet: opening a file costs what it did
    assert header["Flux"] == "1234.5" and dict(header)["entry/instrument/monitor/Flux"] == "1234.5"
    assert pickle.loads(pickle.dumps(header)) == dict(header)
    assert type(pickle.loads(pickle.dumps(frame.metadata))["header"]) is dict
    assert read_header(p) == read_image(p).metadata


def test_header_lines_are_parsed_once_and_the_memory_of_them_is_bounded():
    """A worker remembers the header lines it has parsed (a series repeats them): the fields
    are the same on the second frame, a changed line is parsed anew, and a header of many
    distinct or very long lines cannot grow the memory without bound."""
    from saxsdog.io.images import _base

    first = "# Detector: PILATUS 1M\n# 2013-06-06T17:57:26.675\n# Exposure_time 10.0 s\n# Tau = 0 s\n"
    second = first.replace("10.0 s", "20.0 s")
    expected = {"Detector": "PILATUS 1M", "Exposure_time": "10.0 s", "Tau": "0 s"}
    assert _base.pilatus_header_fields(first) == expected
    assert _base.pilatus_header_fields(first) == expected
    assert _base.pilatus_header_fields(second) == {**expected, "Exposure_time": "20.0 s"}
    many = "\n".join(f"# Key{i} {i}" for i in range(_base._KNOWN_LINES + 100))
    fields = _base.pilatus_header_fields(many)
    assert len(fields) == _base.MAX_HEADER_FIELDS and fields["Key7"] == "7"
    assert len(_base._HEADER_LINES) <= _base._KNOWN_LINES
    long_line = "# Long " + "x" * 2 * _base._KNOWN_LINE_LENGTH
    assert _base.pilatus_header_fields(long_line) == {"Long": "x" * 2 * _base._KNOWN_LINE_LENGTH}
    assert long_line not in _base._HEADER_LINES


# --------------------------------------------------------------------------- #
# The first-IFD layout decoded once per distinct IFD (tiff._LAYOUTS)
# --------------------------------------------------------------------------- #


def _series(tmp_path: Path, n: int = 3) -> list[tuple[Path, np.ndarray]]:
    """Files of one series: the same IFD byte for byte, other pixels and other header text
    (same length: a Pilatus series' headers differ in their date and counter only)."""
    out = []
    for i in range(n):
        data = _pattern(seed=i)
        desc = PILATUS_DESCRIPTION.replace("17:57:26.675", f"17:57:2{i}.675").replace("1.5499", f"1.549{i}")
        out.append((_write_tiff(tmp_path / f"s_{i:05d}.tif", data, description=desc), data))
    return out


def test_a_series_decodes_its_ifd_once_and_each_file_keeps_its_own_pixels_and_header(tmp_path, monkeypatch):
    from saxsdog.io.images import tiff

    monkeypatch.setattr(tiff, "_LAYOUTS", {})
    decoded = []
    real = tiff._decode_layout
    monkeypatch.setattr(tiff, "_decode_layout", lambda *a: decoded.append(a[0]) or real(*a))
    series = _series(tmp_path)
    for i, (p, data) in enumerate(series):
        frame = read_image(p, expected_shape=data.shape)
        np.testing.assert_array_equal(frame.data, data)
        assert frame.metadata["date"] == f"2013-06-06T17:57:2{i}.675000"
        assert frame.metadata["wavelength"] == pytest.approx(float(f"1.549{i}"))
        assert frame.metadata == read_header(p)
    assert decoded == [str(series[0][0])]  # the other files: the cached layout
    assert len(tiff._LAYOUTS) == 1
    for p, data in series:  # what the cached layout gives is what a fresh parse gives
        head = p.read_bytes()[:8192]
        with open(p, "rb") as fh:
            cached = tiff.parse_tiff(str(p), fh, p.stat().st_size, head, data.shape)
            tiff._LAYOUTS.clear()
            fresh = tiff.parse_tiff(str(p), fh, p.stat().st_size, head, data.shape)
        assert cached == fresh and cached.fast and "Exposure_time" in cached.description


def test_a_cached_layout_still_checks_each_files_size_and_the_expected_shape(tmp_path, monkeypatch):
    """A file of the series cut short after its header (still being written) is incomplete
    (retryable), and a caller expecting another shape is refused, although the IFD is known."""
    from saxsdog.io.images import tiff

    monkeypatch.setattr(tiff, "_LAYOUTS", {})
    (first, data), (second, _), (third, _) = _series(tmp_path)
    read_image(first, expected_shape=data.shape)  # decodes and caches the layout
    whole = second.read_bytes()
    second.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(IncompleteImageError, match="truncated"):
        read_image(second, expected_shape=data.shape)
    with pytest.raises(ImageShapeError):
        read_image(third, expected_shape=(data.shape[0] + 1, data.shape[1]))
    second.write_bytes(whole)  # complete now: read as the others
    assert read_image(second, expected_shape=data.shape).data.shape == data.shape


def test_ifds_with_numbers_outside_the_entries_are_not_cached(tmp_path, monkeypatch):
    """Strip offsets stored elsewhere in the file (several strips) may differ between files
    whose entries are equal: such layouts are decoded for every file."""
    from saxsdog.io.images import tiff

    monkeypatch.setattr(tiff, "_LAYOUTS", {})
    data = _pattern(shape=(100, 30))
    p = _write_tiff(tmp_path / "ms.tif", data, rowsperstrip=7)
    np.testing.assert_array_equal(read_image(p).data, data)
    assert tiff._LAYOUTS == {}
