"""Oversized and hostile image files: refused at once, finally, in bounded memory.

A sparse 3 GiB ``###CBF`` file, a small ``.edf.gz`` that declares gigabytes, a gzip bomb
behind a correct header and a TIFF whose tags declare a huge image must each give a
final (not retried) error naming the problem, before the pixels are read.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from saxsdog.errors import CorruptImageError, ImageError, ImageShapeError
from saxsdog.io.images import read_header, read_image

PILATUS = (1043, 981)
GiB = 1 << 30


def _sparse_cbf(path: Path, size: int = 3 * GiB, header: bytes = b"") -> Path:
    with open(path, "wb") as fh:
        fh.write(b"###CBF: VERSION 1.5\r\n" + header)
        fh.truncate(size)  # sparse: no disk blocks
    return path


def _cbf_header(rows: int, cols: int, binsize: int) -> bytes:
    return (b"data_x\r\n_array_data.data\r\n;\r\n--CIF-BINARY-FORMAT-SECTION--\r\n"
            b"Content-Type: application/octet-stream;\r\n"
            b'     conversions="x-CBF_BYTE_OFFSET"\r\n'
            b"X-Binary-Element-Type: \"signed 32-bit integer\"\r\n"
            + f"X-Binary-Size: {binsize}\r\nX-Binary-Size-Fastest-Dimension: {cols}\r\n"
              f"X-Binary-Size-Second-Dimension: {rows}\r\n\r\n".encode()
            + b"\x0c\x1a\x04\xd5")


def _edf_header(rows: int, cols: int, datatype: str = "SignedInteger",
                size: int | None = None) -> bytes:
    itemsize = 4
    size = rows * cols * itemsize if size is None else size
    text = (f"{{\nHeaderID = EH:000001:000000:000000 ;\nByteOrder = LowByteFirst ;\n"
            f"DataType = {datatype} ;\nDim_1 = {cols} ;\nDim_2 = {rows} ;\nSize = {size} ;\n")
    text = text.ljust(511, " ") + "}\n"
    return text.encode()


def _gzip_zeros(path: Path, header: bytes, nbytes: int) -> Path:
    """A gzip file of ``header`` plus ``nbytes`` zeros (a few hundred KB on disk)."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(16 << 20)
    with open(path, "wb") as fh:
        fh.write(comp.compress(header))
        left = nbytes
        while left > 0:
            n = min(left, len(chunk))
            fh.write(comp.compress(chunk[:n]))
            left -= n
        fh.write(comp.flush())
    return path


def _tiff_declaring(path: Path, rows: int, cols: int) -> Path:
    """A 100-byte classic TIFF whose tags declare ``rows`` x ``cols`` int32 pixels."""
    entries = [(256, 4, 1, cols), (257, 4, 1, rows), (258, 3, 1, 32), (259, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1), (279, 4, 1, min(rows * cols * 4, 2**32 - 1)),
               (339, 3, 1, 2)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16))
    return path


def _fails_fast(path: Path, error: type[ImageError], expected_shape=PILATUS, within: float = 1.0
                ) -> ImageError:
    t0 = time.perf_counter()
    with pytest.raises(error) as info:
        read_image(path, expected_shape=expected_shape)
    assert time.perf_counter() - t0 < within
    assert not info.value.retryable, "a hostile file must not be retried"
    assert str(path) in str(info.value)
    return info.value


# --------------------------------------------------------------------------- #
# CBF
# --------------------------------------------------------------------------- #


def test_sparse_3gib_cbf_is_refused_unread(tmp_path):
    p = _sparse_cbf(tmp_path / "x.cbf")
    exc = _fails_fast(p, CorruptImageError)
    assert "not a 1043×981 image" in exc.reason and str(3 * GiB) in exc.reason
    # without an expected shape too: nothing needs 3 GiB
    _fails_fast(p, CorruptImageError, expected_shape=None)


def test_cbf_declaring_another_size_names_both_sizes(tmp_path):
    p = tmp_path / "x.cbf"
    p.write_bytes(b"###CBF: VERSION 1.5\r\n" + _cbf_header(60000, 50000, 10_000) + bytes(100))
    exc = _fails_fast(p, ImageShapeError)
    assert exc.reason.startswith("not a 1043×981 image (header declares 60000×50000")
    assert str(exc) == f"{p}: {exc.reason}"


def test_cbf_declaring_more_binary_data_than_an_image_can_need(tmp_path):
    p = _sparse_cbf(tmp_path / "x.cbf", size=4 << 20,
                    header=_cbf_header(*PILATUS, binsize=2 * GiB))
    exc = _fails_fast(p, CorruptImageError)
    assert "X-Binary-Size" not in exc.reason or "bytes of binary data" in exc.reason


def test_cbf_without_binary_section_in_a_large_file_is_final(tmp_path):
    p = _sparse_cbf(tmp_path / "x.cbf", size=8 << 20)
    _fails_fast(p, CorruptImageError)


# --------------------------------------------------------------------------- #
# EDF (.gz)
# --------------------------------------------------------------------------- #


def test_small_edf_gz_declaring_gigabytes_is_refused_at_once(tmp_path):
    header = _edf_header(15000, 30000, "FloatValue")  # 1.8 GB of float32
    p = _gzip_zeros(tmp_path / "x.edf.gz", header, 64 << 20)
    assert p.stat().st_size < 2 << 20
    exc = _fails_fast(p, ImageShapeError)
    assert exc.reason.startswith("not a 1043×981 image (header declares 15000×30000")
    # no expected shape: still final, not "truncated"
    exc = _fails_fast(p, CorruptImageError, expected_shape=None)
    assert "GiB" in exc.reason


def test_gzip_bomb_behind_a_correct_header_is_not_expanded(tmp_path):
    p = _gzip_zeros(tmp_path / "x.edf.gz", _edf_header(*PILATUS), 512 << 20)
    exc = _fails_fast(p, CorruptImageError, within=2.0)
    assert "decompresses to more than" in exc.reason


def test_edf_size_key_larger_than_the_image_can_need(tmp_path):
    p = tmp_path / "x.edf"
    p.write_bytes(_edf_header(*PILATUS, size=3 * GiB) + bytes(64))
    _fails_fast(p, CorruptImageError)


def test_honest_edf_gz_still_reads(tmp_path):
    from fabio.edfimage import EdfImage

    data = np.arange(PILATUS[0] * PILATUS[1], dtype=np.int32).reshape(PILATUS)
    plain = tmp_path / "ok.edf"
    EdfImage(data=data).write(str(plain))
    gz = tmp_path / "ok.edf.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_image(gz, expected_shape=PILATUS).data, data)


# --------------------------------------------------------------------------- #
# TIFF
# --------------------------------------------------------------------------- #


def test_tiff_declaring_a_huge_image_is_final_not_truncated(tmp_path):
    p = _tiff_declaring(tmp_path / "x.tif", 60000, 50000)
    exc = _fails_fast(p, ImageShapeError)
    assert exc.reason.startswith("not a 1043×981 image (header declares 60000×50000")
    _fails_fast(p, CorruptImageError, expected_shape=None)  # 11 GiB: not "still being written"


# --------------------------------------------------------------------------- #
# The worker reports these at once, as final
# --------------------------------------------------------------------------- #


def test_worker_reports_a_hostile_file_as_final(tmp_path, real_calibration):
    from saxsdog.pipeline.options import QueueOptions
    from saxsdog.pipeline.tasks import ImageTask
    from saxsdog.pipeline.worker import ImageProcessor

    proc = ImageProcessor(real_calibration, QueueOptions())
    for p in (_sparse_cbf(tmp_path / "a.cbf"),
              _gzip_zeros(tmp_path / "b.edf.gz", _edf_header(15000, 30000, "FloatValue"), 1 << 20)):
        t0 = time.perf_counter()
        (result,) = proc.process(ImageTask(path=str(p), root=str(tmp_path)))
        assert time.perf_counter() - t0 < 1.0
        assert result.error and "not a 1043×981 image" in result.error
        assert result.retryable is False


# --------------------------------------------------------------------------- #
# Bounded memory (a fresh process: its peak RSS is the reader's)
# --------------------------------------------------------------------------- #

_MEASURE = r"""
import json, resource, sys
from saxsdog.io.images import read_image
from saxsdog.errors import ImageError
import numpy as np, fabio, fabio.edfimage, zlib, gzip  # imported before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for path, shape in json.loads(sys.argv[1]):
    try:
        read_image(path, expected_shape=tuple(shape) if shape else None)
        out[path] = "read"
    except ImageError as exc:
        out[path] = type(exc).__name__
out["grew_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(out))
"""


@pytest.mark.slow
def test_hostile_files_are_refused_in_bounded_memory(tmp_path):
    cases = [
        (_sparse_cbf(tmp_path / "a.cbf"), PILATUS),
        (_sparse_cbf(tmp_path / "b.cbf"), None),
        (_gzip_zeros(tmp_path / "c.edf.gz", _edf_header(15000, 30000, "FloatValue"), 256 << 20),
         None),
        (_gzip_zeros(tmp_path / "d.edf.gz", _edf_header(*PILATUS), 256 << 20), PILATUS),
        (_gzip_zeros(tmp_path / "e.cbf.gz", b"###CBF: VERSION 1.5\r\n", 256 << 20), PILATUS),
    ]
    arg = json.dumps([[str(p), list(s) if s else None] for p, s in cases])
    run = subprocess.run([sys.executable, "-c", _MEASURE, arg], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert all(out[str(p)] != "read" for p, _ in cases), out
    assert all(out[str(p)] != "IncompleteImageError" for p, _ in cases), out
    # a Pilatus 1M frame is 4 MB; the files declare or expand to 0.25-3 GiB
    assert out["grew_kib"] < 64 * 1024, out


def test_read_header_of_a_sparse_cbf_is_bounded_too(tmp_path):
    p = _sparse_cbf(tmp_path / "x.cbf")
    t0 = time.perf_counter()
    with pytest.raises(CorruptImageError):
        read_header(p)
    assert time.perf_counter() - t0 < 1.0


def test_hdf5_dataset_declaring_a_huge_frame_is_refused_unread(tmp_path):
    import h5py

    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:  # chunked and empty: a few KB on disk
        f.create_dataset("entry/data/data", shape=(1, 60000, 50000), dtype="int32",
                         chunks=(1, 64, 64))
    exc = _fails_fast(p, ImageShapeError)
    assert exc.reason.startswith("not a 1043×981 image (dataset is 60000×50000")
    _fails_fast(p, CorruptImageError, expected_shape=None)
