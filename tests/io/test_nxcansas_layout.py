"""NXcanSAS run files: an entry's scalars are stored in their object headers (compact
layout, cheaper to clone per frame), and readers see exactly the types and values they saw
with the default (contiguous) layout.
"""

from __future__ import annotations

import h5py
import numpy as np

from saxsdog.io.nxcansas import NXcanSASRunWriter, read_nxcansas

HEADER = [
    {"exposure_time": 10.0, "wavelength": 1.54987, "detector": "PILATUS3 1M", "date": "2014-01-31T12:26:52",
     "timestamp": 1391171212.0, "frame": 3, "ok": True, "missing": None, "tags": ["a", 1]},
    {"exposure_time": 10.0, "wavelength": 1.54987, "detector": "PILATUS3 1M", "date": "2014-01-31T12:26:53",
     "timestamp": 1391171213.0, "frame": 4, "ok": False, "missing": None, "tags": ["a", 1]},
]
PARAMS = [{"I0": 501.5, "I1": 762.5, "correlation_length": 1.03, "dummy_pixels": 0},
          {"I0": 502.5, "I1": 763.5, "correlation_length": 1.03, "dummy_pixels": 7}]

#: What h5py hands out for each member, as it did before the layout changed: (dtype, type of value).
EXPECTED = {
    "title": (np.dtype("S6"), np.bytes_), "definition": (np.dtype("S8"), np.bytes_),
    "run": (np.dtype("S6"), np.bytes_),
    "image/exposure_time": (np.dtype(np.float64), np.float64), "image/frame": (np.dtype(np.int64), np.int64),
    "image/ok": (np.dtype(np.bool_), np.bool_), "image/missing": (np.dtype(np.float64), np.float64),
    "image/detector": (np.dtype(object), bytes), "image/date": (np.dtype(object), bytes),
    "image/tags": (np.dtype(object), bytes),
    "parameters/I0": (np.dtype(np.float64), np.float64), "parameters/dummy_pixels": (np.dtype(np.int64), np.int64),
}


def test_scalars_are_compact_and_read_back_as_before(tmp_path):
    path = tmp_path / "run01.h5"
    q = np.linspace(0.1, 3.0, 20)
    with NXcanSASRunWriter(path, q, title="Lauf 1") as w:
        for k in range(2):
            w.append(f"f{k}.tif", np.full(20, k + 1.0), np.full(20, 0.5), HEADER[k], PARAMS[k])
    with h5py.File(path, "r") as f:
        for k in range(2):
            entry = f[f"sasentry{k + 1:02d}"]
            for member, (dtype, kind) in EXPECTED.items():
                ds = entry[member]
                assert ds.shape == () and ds.dtype == dtype, member
                assert type(ds[()]) is kind, member
                assert ds.id.get_create_plist().get_layout() == h5py.h5d.COMPACT, member
            assert entry["image/date"][()] == HEADER[k]["date"].encode()
            assert entry["image/exposure_time"].attrs["units"] == "s"  # attributes stay str
            assert isinstance(entry["image"].attrs["NX_class"], str)
            assert h5py.check_string_dtype(entry["image/detector"].dtype).encoding == "utf-8"
            assert h5py.check_string_dtype(entry["title"].dtype).encoding == "utf-8"
    frames = read_nxcansas(path)
    for k, frame in enumerate(frames):
        assert frame["name"] == f"f{k}.tif" and frame["run"] == "Lauf 1"
        meta = frame["metadata"]
        assert meta["date"] == HEADER[k]["date"] and meta["detector"] == "PILATUS3 1M"
        assert meta["frame"] == HEADER[k]["frame"] and type(meta["frame"]) is int
        assert meta["ok"] is HEADER[k]["ok"] and np.isnan(meta["missing"])
        assert meta["timestamp"] == HEADER[k]["timestamp"] and meta["tags"] == '["a", 1]'
        assert frame["parameters"] == PARAMS[k]
        assert np.array_equal(frame["I"], np.full(20, k + 1.0))
