"""``saxsdmerge``: the command line over saxsdog.merge."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="pandas is needed for the data merge")

from saxsdog.cli.dmerge import main  # noqa: E402
from saxsdog.merge import merge_data, read_merged, unix_to_mac  # noqa: E402

START = datetime(2014, 1, 31, 12, 26, 52)
T0 = START.timestamp()
N = 50


@pytest.fixture
def beamline(tmp_path):
    import tifffile

    images = tmp_path / "images"
    images.mkdir()
    for k in range(N):
        when = START + timedelta(seconds=10 * k + 0.3)
        desc = (f"# Detector: PILATUS 1M\r\n# {when.isoformat(timespec='milliseconds')}\r\n"
                "# Exposure_time 2.0000000 s\r\n")
        tifffile.imwrite(images / f"img_{k:05d}.tif", np.zeros((4, 4), np.int32),
                         description=desc, metadata=None)
    offset = 500.0  # the logs' clock is 500 s ahead of the detector's
    (tmp_path / "datalogger.log").write_text("Time\tTemperature\tIoni\n" + "".join(
        f"{unix_to_mac(T0 - 5 + i + offset):.3f}\t{20 + 0.01 * i:.2f}\t{1000 + i}\n"
        for i in range(520)))
    (tmp_path / "peakinteg.log").write_text("Time\tDuration\tDiode_avg\n" + "".join(
        f"{unix_to_mac(T0 + 10 * k - 0.05 + offset):.3f}\t2.0\t{5 + k}\n" for k in range(N)))
    return tmp_path


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_offset_option_and_all_formats(beamline, capsys):
    outs = [beamline / "m.csv", beamline / "m.json", beamline / "m.hdf", beamline / "m.xlsx"]
    args = ["-b", "-t", "500", beamline / "images", beamline / "peakinteg.log",
            beamline / "datalogger.log"]
    for o in outs:
        args[:0] = ["-o", o]
    code, _, err = run(args, capsys)
    assert code == 0, err
    for o in outs:
        assert f"write: {o}" in err
        df = read_merged(o)
        assert len(df) == N
        assert list(df["Ioni (Dlog)"]) == [1005 + 10 * k for k in range(N)]
        assert list(df["Diode_avg (Peak)"]) == [5 + k for k in range(N)]
    assert not (beamline / "m_sync.png").exists()  # -b: no plot


def test_syncfirst_matches_the_library(beamline, capsys):
    code, out, err = run(["-l", "-b", beamline / "images", beamline / "peakinteg.log",
                          beamline / "datalogger.log"], capsys)
    assert code == 0, err
    printed = pd.read_csv(io.StringIO(out))  # no -o: CSV on stdout
    assert list(printed["Diode_avg (Peak)"]) == [5 + k for k in range(N)]
    assert "time shift of the logs: -499.650 s" in err
    conf = {"LogDataTables": [
        {"Name": "Peak", "FirstImageCorrelation": True,
         "Files": [{"LocalPath": str(beamline / "peakinteg.log")}]},
        {"Name": "Dlog", "Files": [{"LocalPath": str(beamline / "datalogger.log")}]}]}
    lib = merge_data(conf, beamline, beamline / "images")
    np.testing.assert_array_equal(printed["Ioni (Dlog)"].to_numpy(), lib["Ioni (Dlog)"].to_numpy())
    # Without synchronisation the logs start after every image.
    code, out, _ = run(["-b", beamline / "images", beamline / "peakinteg.log"], capsys)
    assert pd.read_csv(io.StringIO(out))["Diode_avg (Peak)"].isna().all()


@pytest.mark.slow
def test_sync_plot_written_unless_batch(beamline, capsys):
    code, _, err = run(["-o", beamline / "out.csv", "-l", beamline / "images",
                        beamline / "peakinteg.log"], capsys)
    assert code == 0, err
    png = beamline / "out_sync.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, _ = run(["-b", "--plot", beamline / "check.png", "-o", beamline / "o2.csv",
                      beamline / "images", beamline / "peakinteg.log"], capsys)
    assert code == 0 and (beamline / "check.png").exists()


def test_configuration_file(beamline, capsys, monkeypatch):
    monkeypatch.chdir(beamline)
    conf = {"TimeOffset": "500",
            "LogDataTables": [{"Name": "Dlog", "TimeEpoc": "Mac",
                               "Files": [{"RemotePath": ["datalogger.log"], "LocalPath": ""}]}],
            "OutputFormats": {"csv": True, "hdf": False, "exel": True, "json": False},
            "OutputFileName": "results/merged",
            "HDFOptions": {"IncludeCHI": False, "IncludeTIF": False}}
    (beamline / "conf.json").write_text(json.dumps(conf))
    code, _, err = run(["-C", "conf.json", "-b", "images"], capsys)
    assert code == 0, err
    for suffix in (".csv", ".xlsx"):
        df = read_merged(beamline / "results" / f"merged{suffix}")
        assert list(df["Ioni (Dlog)"]) == [1005 + 10 * k for k in range(N)]


def test_bad_configuration_names_the_field(beamline, capsys):
    bad = {"LogDataTables": [{"TimeEpoch": "Windows", "Files": [{"LocalPath": "x.log"}]}]}
    (beamline / "bad.json").write_text(json.dumps(bad))
    code, _, err = run(["-C", beamline / "bad.json", "-b", beamline / "images"], capsys)
    assert code == 1
    assert "$.LogDataTables[0].TimeEpoch" in err and "'Windows'" in err


def test_usage_errors(beamline, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(beamline / "images")])
    assert info.value.code == 2
    code, _, err = run(["-b", beamline / "images", beamline / "missing.log"], capsys)
    assert code == 1 and "log file not found" in err
    code, _, err = run(["-b", "-o", beamline / "x.parquet", beamline / "images",
                        beamline / "peakinteg.log"], capsys)
    assert code == 1 and "unknown output format" in err


@pytest.mark.slow
def test_i0_and_curves_of_a_saxsdog_run_are_included_by_default(data_dir, tmp_path):
    """saxsdog over images/, then saxsdmerge images/ LOG: I0/I1/I2 come along without --filelist."""
    import subprocess
    import sys

    from saxsdog.testing import link_images

    link_images(data_dir / "buf1_00000.tif", tmp_path / "images", 3)
    r = subprocess.run([sys.executable, "-m", "saxsdog.cli.saxsdog", "-c", str(data_dir / "cal.json"), "-S",
                        str(tmp_path / "images")], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    filelist = pd.read_csv(tmp_path / "work" / "results" / "filelist.txt", sep="\t")
    header_time = datetime(2014, 1, 31, 12, 26, 52).timestamp()  # the real image's header
    (tmp_path / "peak.log").write_text("Time\tDiode\n" + "".join(
        f"{unix_to_mac(header_time - 30 + 10 * k):.3f}\t{k}\n" for k in range(6)))
    out = tmp_path / "merged.hdf"
    r = subprocess.run([sys.executable, "-m", "saxsdog.cli.dmerge", "-b", "-c", "-o", str(out),
                        str(tmp_path / "images"), str(tmp_path / "peak.log")],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "no integral parameters" not in r.stderr and "no .chi curves" not in r.stderr
    merged = read_merged(out)
    assert len(merged) == 3
    np.testing.assert_allclose(merged["I0"].to_numpy(), filelist["I0"].to_numpy())
    assert {Path(p).name for p in merged["chi_file"]} == {"img_00000.chi", "img_00001.chi", "img_00002.chi"}
    import h5py

    with h5py.File(out, "r") as f:
        assert len(f["Graphs"]) == 3  # -c: the curves are in the file


def test_includechi_without_curves_says_so(beamline, capsys):
    code, _, err = run(["-b", "-c", "-o", beamline / "m.hdf", beamline / "images", beamline / "peakinteg.log"],
                       capsys)
    assert code == 0, err
    assert f"-c: no .chi curves found for the {N} image(s), so none are included" in err
    assert "no integral parameters (I0, I1, I2) found" in err and "--filelist or --chidir" in err
    code, _, err = run(["-b", "-o", beamline / "m.csv", beamline / "images", beamline / "peakinteg.log"], capsys)
    assert "-c:" not in err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "Examples:" in text and "saxsdmerge -c -o merged.hdf" in text
