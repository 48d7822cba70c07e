"""NXcanSAS run files: the entries' strings (title, definition, run, timestamp) read back
exactly, whatever the frame names' lengths and characters.

The entry's string datasets are fixed-length UTF-8 (cheaper to clone than variable-length
ones), one entry skeleton per title length; the ``timestamp`` attribute is written into the
skeleton only when it changes.  These tests pin what a reader sees.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from saxsdog.io.nxcansas import NXcanSASRunWriter, read_nxcansas

NAMES = ["a.tif", "buf1_00000.tif", "", "Probe µ-Ø ä.tif", "scan.h5#12", "b.tif",
         "x" * 200 + ".tif", "buf1_00001.tif", "日本語.cbf", "a.tif#3"]


def write(path, names, dates):
    q = np.linspace(0.1, 3.0, 30)
    with NXcanSASRunWriter(path, q, title="Läuf 1", write_every=3, flush_every=4) as w:
        for k, (name, date) in enumerate(zip(names, dates)):
            w.append(name, np.full(30, k + 1.0), np.full(30, 0.5), {"date": date} if date else {},
                     {"I0": float(k)})
    return path


def test_titles_of_every_length_and_script_read_back_exactly(tmp_path):
    path = write(tmp_path / "run.h5", NAMES, [""] * len(NAMES))
    frames = read_nxcansas(path)
    assert [f["name"] for f in frames] == NAMES
    assert [f["run"] for f in frames] == ["Läuf 1"] * len(NAMES)
    with h5py.File(path, "r") as f:
        entries = [f[f"sasentry{k + 1:02d}"] for k in range(len(NAMES))]
        for entry, name in zip(entries, NAMES):
            # h5py reads variable- and fixed-length strings alike as bytes; asstr() decodes both
            assert entry["title"].asstr()[()] == name
            assert entry["title"][()] == name.encode()
            assert entry["definition"].asstr()[()] == "NXcanSAS"
            assert entry["run"].asstr()[()] == "Läuf 1"
            # fixed-length UTF-8 of exactly the name's bytes (no padding a reader could see)
            assert entry["title"].dtype.kind == "S"
            assert entry["title"].dtype.itemsize == max(1, len(name.encode()))
            assert h5py.check_string_dtype(entry["title"].dtype).encoding == "utf-8"
            assert entry.attrs["canSAS_class"] == "SASentry"  # attributes stay str
        assert [float(e["parameters/I0"][()]) for e in entries] == [float(k) for k in range(len(NAMES))]


def test_sasdata_reads_the_titles(tmp_path):
    pytest.importorskip("sasdata", reason="sasdata (SasView's loader) is not installed")
    from sasdata.dataloader.loader import Loader

    names = [n for n in NAMES if n]  # sasdata names an untitled entry itself
    path = write(tmp_path / "run.h5", names, [""] * len(names))
    loaded = Loader().load(str(path))
    assert [d.title for d in loaded] == names
    assert all(d.run == ["Läuf 1"] for d in loaded)


def test_every_entry_has_its_own_frames_timestamp(tmp_path):
    # frames of one second share their date (the skeleton keeps it); a frame without a date
    # has no timestamp, and the next frame with the same date as before still gets it
    dates = ["2014-01-31T12:26:52", "2014-01-31T12:26:52", "2014-01-31T12:26:53", "",
             "2014-01-31T12:26:53", "2014-01-31T12:26:52", "2014-01-31T12:26:52",
             "", "", "2014-01-31T12:27:00"]
    path = write(tmp_path / "run.h5", NAMES, dates)
    frames = read_nxcansas(path)
    assert [f["timestamp"] for f in frames] == [d or None for d in dates]
    with h5py.File(path, "r") as f:
        for k, date in enumerate(dates):
            attrs = f[f"sasentry{k + 1:02d}/sasdata01"].attrs
            assert attrs.get("timestamp") == (date or None)


def test_a_name_that_is_not_utf8_fails_that_frame_only(tmp_path):
    # a file name with undecodable bytes (os.listdir's surrogate escapes): the frame that has
    # it is refused when appended, naming it, and the frames around it are written
    q = np.linspace(0.1, 3.0, 30)
    with NXcanSASRunWriter(tmp_path / "run.h5", q, write_every=4) as w:
        w.append("a.tif", np.ones(30), np.ones(30))
        with pytest.raises(ValueError, match="not valid UTF-8"):
            w.append("bad\udcff.tif", np.ones(30), np.ones(30))
        for k in range(6):
            w.append(f"b{k}.tif", np.ones(30), np.ones(30))
    assert [f["name"] for f in read_nxcansas(tmp_path / "run.h5")] == ["a.tif"] + [f"b{k}.tif" for k in range(6)]
