"""Data consolidation: log tables + image headers + integral parameters, one row per image."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, UTC
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="pandas is needed for the data merge")

from saxsdog.io.chi import write_chi  # noqa: E402
from saxsdog.merge import (MAC_EPOCH_OFFSET, MergeConfigError, MergeError, mac_to_unix,  # noqa: E402
                           merge, merge_data, normalize_config, read_log_table, read_merged,
                           sync_plot, unix_to_mac, write_merged)
from saxsdog.testing import write_pilatus_tiff  # noqa: E402

N_IMAGES = 50
START = datetime(2014, 1, 31, 12, 26, 52)          # naive: local time, as Pilatus headers
T0 = START.timestamp()
EXPOSURE = 2.0
LOG_START = -5                                     # logger starts 5 s before the first image
LOG_ROWS = 520


def image_offset(k: int) -> float:
    """Seconds of image k after the first: every 10 s, mostly 0.3 s after a logger tick;
    every 7th exactly on a tick (an exact match must take that row)."""
    return 10.0 * k + (0.0 if k % 7 == 0 else 0.3)


def write_images(folder: Path, n: int = N_IMAGES, zero_at: float | None = None) -> list[Path]:
    paths = [write_pilatus_tiff(folder / f"img_{k:05d}.tif", np.full((6, 5), k, np.int32),
                                START + timedelta(seconds=image_offset(k)), EXPOSURE) for k in range(n)]
    if zero_at is not None:
        write_pilatus_tiff(folder / "zero_1M_00000.tif", np.zeros((6, 5), np.int32),
                           START + timedelta(seconds=zero_at), 0.1)
    return paths


def write_logger(path: Path, clock_offset: float = 0.0, epoch: str = "Mac") -> None:
    """A 1-s data logger: Mac-epoch time, temperature, ion chamber, a text status."""
    lines = ["Time\tTemperature\tIoni\tStatus"]
    for i in range(LOG_ROWS):
        t = T0 + LOG_START + i + clock_offset
        t = unix_to_mac(t) if epoch == "Mac" else t
        lines.append(f"{t:.3f}\t{20 + 0.01 * i:.2f}\t{1000 + i}\t{'ok' if i % 2 else 'busy'}")
    path.write_text("\n".join(lines) + "\n")


def write_shutter(path: Path, clock_offset: float = 0.0, epoch: str = "Mac") -> None:
    """Shutter / peak-integration log: one row per shutter opening, 0.05 s before the image."""
    lines = ["Time\tDuration\tDiode_avg"]
    for k in range(N_IMAGES):
        t = T0 + 10.0 * k - 0.05 + clock_offset
        t = unix_to_mac(t) if epoch == "Mac" else t
        lines.append(f"{t:.3f}\t{EXPOSURE}\t{5 + k}")
    path.write_text("\n".join(lines) + "\n")


def config(logger: Path, shutter: Path, **table_opts) -> dict:
    peak = {"Name": "Peak", "TimeEpoch": "Mac", "TimeOffset": 0,
            "Files": [{"LocalPath": str(shutter)}]}
    peak.update(table_opts)
    return {
        "TimeOffset": 0,
        "LogDataTables": [
            peak,
            {"Name": "Dlog", "TimeEpoch": "Mac", "TimeOffset": 0, "FirstImageCorrelation": False,
             "Files": [{"RemotePath": [str(logger)], "LocalPath": ""}]},
        ],
        "OutputFormats": {"csv": False, "hdf": False, "exel": False, "json": False},
        "OutputFileName": "merged",
        "HDFOptions": {"IncludeCHI": False, "IncludeTIF": False},
    }


@pytest.fixture
def beamline(tmp_path):
    images = tmp_path / "images"
    write_images(images)
    write_logger(tmp_path / "datalogger.log")
    write_shutter(tmp_path / "peakinteg.log")
    return tmp_path


def expected_row(log_times: np.ndarray, t: float) -> int | None:
    """Independent definition: index of the last log row at or before t."""
    best = None
    for i, lt in enumerate(log_times):
        if lt <= t:
            best = i
    return best


# --------------------------------------------------------------------------- #
# Merging
# --------------------------------------------------------------------------- #


def test_merge_previous_value_per_image(beamline):
    df = merge_data(config(beamline / "datalogger.log", beamline / "peakinteg.log"),
                    beamline, beamline / "images")
    assert len(df) == N_IMAGES
    assert list(df["file"]) == [f"img_{k:05d}.tif" for k in range(N_IMAGES)]
    logger_times = np.array([T0 + LOG_START + i for i in range(LOG_ROWS)])
    for k, row in df.iterrows():
        t = T0 + image_offset(k)
        assert row["image_time"] == pytest.approx(t, abs=1e-6)
        assert row["exposure_time"] == EXPOSURE
        i = expected_row(logger_times, t)
        assert row["Temperature (Dlog)"] == pytest.approx(20 + 0.01 * i)
        assert row["Ioni (Dlog)"] == 1000 + i
        assert row["Status (Dlog)"] == ("ok" if i % 2 else "busy")
        assert row["time (Dlog)"] == pytest.approx(logger_times[i], abs=1e-3)
        assert row["Diode_avg (Peak)"] == 5 + k          # the shutter row just before
        assert row["Duration (Peak)"] == EXPOSURE
    # Exact match on a logger tick takes that tick (image 7 at +70.0 s = logger row 75).
    assert df.loc[7, "Ioni (Dlog)"] == 1075
    # 0.3 s after a tick takes that tick (image 1 at +10.3 s = logger row 15).
    assert df.loc[1, "Ioni (Dlog)"] == 1015


def test_images_before_the_first_log_row_get_no_values(beamline):
    write_logger(beamline / "late.log", clock_offset=100.0)
    conf = config(beamline / "late.log", beamline / "peakinteg.log")
    df = merge_data(conf, beamline, beamline / "images")
    # logger starts at +95 s: images 0..9 (up to +90.3 s) have no logger values.
    assert df.loc[:9, "Temperature (Dlog)"].isna().all()
    assert df.loc[10:, "Temperature (Dlog)"].notna().all()
    assert df.loc[10, "Ioni (Dlog)"] == 1005  # +100.0 s → row 5 of the late logger


def test_global_and_table_offsets(beamline):
    base = merge_data(config(beamline / "datalogger.log", beamline / "peakinteg.log"),
                      beamline, beamline / "images")
    # The same logs written by clocks 3600 s ahead.
    write_logger(beamline / "dl_ahead.log", clock_offset=3600.0)
    write_shutter(beamline / "pk_ahead.log", clock_offset=3600.0)
    conf = config(beamline / "dl_ahead.log", beamline / "pk_ahead.log")
    unshifted = merge_data(conf, beamline, beamline / "images")
    assert unshifted["Temperature (Dlog)"].isna().all()  # all images before the logs
    conf["TimeOffset"] = 3600
    shifted = merge_data(conf, beamline, beamline / "images")
    for col in ("Temperature (Dlog)", "Ioni (Dlog)", "Diode_avg (Peak)"):
        np.testing.assert_array_equal(shifted[col].to_numpy(), base[col].to_numpy())
    # Per-table offsets add to the global one.
    conf["TimeOffset"] = 3000
    conf["LogDataTables"][0]["TimeOffset"] = 600
    conf["LogDataTables"][1]["TimeOffset"] = "600"  # numeric strings as in the manual's example
    shifted2 = merge_data(conf, beamline, beamline / "images")
    np.testing.assert_array_equal(shifted2["Ioni (Dlog)"].to_numpy(), base["Ioni (Dlog)"].to_numpy())
    np.testing.assert_allclose(shifted2["time (Dlog)"], base["time (Dlog)"], atol=1e-6)


def test_syncfirst_aligns_first_shutter_row_with_first_image(beamline):
    offset = 1234.5  # unknown clock offset of the logs
    write_logger(beamline / "dl.log", clock_offset=offset)
    write_shutter(beamline / "pk.log", clock_offset=offset)
    conf = config(beamline / "dl.log", beamline / "pk.log", FirstImageCorrelation=True)
    res = merge(conf, beamline, beamline / "images")
    # First shutter row at T0 - 0.05 + offset moves onto the first image (T0).
    assert res.shift == pytest.approx(0.05 - offset, abs=1e-6)
    assert res.logs["Peak"]["time"].iloc[0] == pytest.approx(T0, abs=1e-6)
    df = res.table
    logger_times = np.array([T0 + LOG_START + i + offset for i in range(LOG_ROWS)]) + res.shift
    for k, row in df.iterrows():
        i = expected_row(logger_times, row["image_time"])
        assert row["Ioni (Dlog)"] == 1000 + i
        assert row["Diode_avg (Peak)"] == 5 + k
    # Without the sync every image precedes the logs.
    conf["LogDataTables"][0]["FirstImageCorrelation"] = False
    assert merge_data(conf, beamline, beamline / "images")["Ioni (Dlog)"].isna().all()


def test_synczero_uses_the_zero_image(tmp_path):
    images = tmp_path / "images"
    write_images(images, zero_at=-30.0)  # the zero image, 30 s before the series
    offset = -777.25
    write_logger(tmp_path / "dl.log", clock_offset=offset - 40)  # logger starts early enough
    write_shutter(tmp_path / "pk.log", clock_offset=offset)
    conf = config(tmp_path / "dl.log", tmp_path / "pk.log", ZeroImageCorrelation=True)
    res = merge(conf, tmp_path, images)
    # shift = zero image time - first shutter row time
    assert res.shift == pytest.approx((T0 - 30.0) - (T0 - 0.05 + offset), abs=1e-6)
    assert len(res.table) == N_IMAGES + 1
    assert res.table["file"].iloc[0] == "zero_1M_00000.tif"
    # No zero image: a clear error.
    conf["ZeroImagePattern"] = "*nothing*"
    with pytest.raises(MergeError, match="no image matches"):
        merge(conf, tmp_path, images)


def test_mac_epoch_conversion_is_exact(tmp_path):
    assert MAC_EPOCH_OFFSET == 2082844800
    mac_epoch = datetime(1904, 1, 1, tzinfo=UTC)
    unix_epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (unix_epoch - mac_epoch).total_seconds() == MAC_EPOCH_OFFSET
    assert mac_to_unix(2082844800) == 0
    assert mac_to_unix(3473867212.25) == 1391022412.25
    assert unix_to_mac(mac_to_unix(3473867212.125)) == 3473867212.125
    # A Mac-epoch log and a Unix-epoch log of the same instants merge identically.
    images = tmp_path / "images"
    write_images(images, n=5)
    write_logger(tmp_path / "mac.log", epoch="Mac")
    write_logger(tmp_path / "unix.log", epoch="Unix")
    conf = {"LogDataTables": [
        {"Name": "M", "TimeEpoch": "Mac", "Files": [{"LocalPath": str(tmp_path / "mac.log")}]},
        {"Name": "U", "TimeEpoc": "Unix", "Files": [{"LocalPath": str(tmp_path / "unix.log")}]},
    ]}
    df = merge_data(conf, tmp_path, images)
    np.testing.assert_array_equal(df["Ioni (M)"].to_numpy(), df["Ioni (U)"].to_numpy())
    np.testing.assert_allclose(df["time (M)"], df["time (U)"], atol=1e-3)


def test_concatenated_files_and_iso_times(tmp_path):
    images = tmp_path / "images"
    write_images(images, n=4)
    first = ["time,value"] + [f"{(START + timedelta(seconds=s)).isoformat()},{s}" for s in (0, 10)]
    second = ["time,value"] + [f"{(START + timedelta(seconds=s)).isoformat()},{s}" for s in (20, 30)]
    (tmp_path / "a.csv").write_text("\n".join(first) + "\n")
    (tmp_path / "b.csv").write_text("\n".join(second) + "\n")
    conf = {"LogDataTables": [{"Name": "iso", "TimeEpoch": "Unix",
                               "Files": [{"LocalPath": "b.csv"}, {"LocalPath": "a.csv"}]}]}
    df = merge_data(conf, tmp_path, images)  # relative paths resolve against base_dir
    assert list(df["value (iso)"]) == [0, 10, 20, 30]


def test_image_records_as_dicts_with_filelist_and_chi(tmp_path):
    write_logger(tmp_path / "dl.log")
    records = [{"file": f"/data/run/img_{k:05d}.tif", "date": (START + timedelta(seconds=image_offset(k))).isoformat(),
                "exposure_time": 1.5, "sample": f"S{k}"} for k in range(3)]
    results = tmp_path / "results"
    results.mkdir()
    (results / "filelist.txt").write_text(
        "file\toutput\tI0\tI1\tI2\timage_time\n"
        + "".join(f"/data/run/img_{k:05d}.tif\t/nowhere/img_{k:05d}.chi\t{k + 0.5}\t{k + 1.5}\t{k + 2.5}\t\n"
                  for k in range(2)))
    chi = tmp_path / "chi"
    chi.mkdir()
    write_chi(chi / "img_00002.chi", [np.arange(3.0), np.ones(3), np.ones(3)], {},
              {"I0": 7.0, "I1": 8.0, "I2": 9.0, "invariant": 9.0, "correlation_length": None})
    conf = {"LogDataTables": [{"Name": "Dlog", "Files": [{"LocalPath": "dl.log"}]}],
            "Images": {"FileList": "results/filelist.txt", "ChiDirectory": "chi"}}
    df = merge_data(conf, tmp_path, records)
    assert list(df["file"]) == ["img_00000.tif", "img_00001.tif", "img_00002.tif"]
    assert list(df["sample"]) == ["S0", "S1", "S2"]
    assert list(df["I0"]) == [0.5, 1.5, 7.0]
    assert list(df["I2"]) == [2.5, 3.5, 9.0]
    assert math.isnan(df.loc[2, "correlation_length"])
    assert df.loc[2, "chi_file"] == str(chi / "img_00002.chi")
    assert list(df["Ioni (Dlog)"]) == [1005, 1015, 1025]


def test_confine_refuses_paths_outside_base(beamline):
    conf = config(beamline / "datalogger.log", beamline / "peakinteg.log")
    conf["LogDataTables"][0]["Files"] = [{"LocalPath": "../../etc/passwd"}]
    with pytest.raises(MergeError, match="outside the base directory"):
        merge_data(conf, beamline, "images", confine=True)


def test_missing_log_file_is_reported(beamline):
    conf = config(beamline / "nope.log", beamline / "peakinteg.log")
    with pytest.raises(MergeError, match="log file not found: .*nope.log"):
        merge_data(conf, beamline, beamline / "images")


def test_read_log_table_header_forms(tmp_path):
    p = tmp_path / "c.log"
    p.write_text("# written by the shutter control\n# Time  Duration  Diode\n"
                 "3473867212.0  2.0  5\n3473867222.0  2.0  6\n")
    df = read_log_table(p)
    assert list(df.columns) == ["time", "Duration", "Diode"]
    assert df["Diode"].tolist() == [5, 6]
    p.write_text("Ioni\tTime stamp\n1\t10\n2\t20\n")
    assert read_log_table(p)["time"].tolist() == [10, 20]   # the column named like time
    assert read_log_table(p, 0)["time"].tolist() == [1, 2]
    p.write_text("1 2\n3 4\n")
    with pytest.raises(MergeError, match="no header"):
        read_log_table(p)


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bad, path", [
    ({"LogDataTables": [{"TimeEpoch": "Windows", "Files": [{"LocalPath": "a"}]}]},
     "$.LogDataTables[0].TimeEpoch"),
    ({"OutputFormats": {"csv": "yes"}}, "$.OutputFormats.csv"),
    ({"TimeOffset": "ten"}, "$.TimeOffset"),
    ({"LogDataTables": [{"Name": "x"}]}, "$.LogDataTables[0].Files"),
    ({"LogDataTables": [{"Files": [{"LocalPath": "a"}], "Colour": 1}]}, "$.LogDataTables[0].Colour"),
    ({"LogDataTables": [{"Files": [{"LocalPath": "a"}], "FirstImageCorrelation": 1}]},
     "$.LogDataTables[0].FirstImageCorrelation"),
    ({"HDFOptions": {"IncludeCHI": None}}, "$.HDFOptions.IncludeCHI"),
    ({"LogDataTables": [{"Files": [{"LocalPath": ""}]}]}, "$.LogDataTables[0].Files[0].LocalPath"),
    ({"LogDataTables": [{"Files": [{"LocalPath": "a"}]}, {"Files": [{"LocalPath": "b"}]}]},
     "$.LogDataTables[1].Name"),
    ([1, 2], "$"),
])
def test_bad_configuration_names_the_field(bad, path):
    with pytest.raises(MergeConfigError) as info:
        normalize_config(bad)
    assert info.value.path == path
    assert path in str(info.value)


def test_manual_example_configuration_is_valid():
    example = {"TimeOffset": "0", "HDFOptions": {"IncludeCHI": False, "IncludeTIF": False},
               "OutputFormats": {"exel": False, "hdf": False, "json": False, "csv": False},
               "OutputFileName": "../results/merged"}
    conf = normalize_config(example)
    assert conf["TimeOffset"] == 0.0 and conf["LogDataTables"] == []
    old = normalize_config({"OutputFileBaseName": "out", "OutputFormats": {"excel": True},
                            "LogDataTables": [{"TimeEpoc": "Unix", "Files": [{"RemotePath": ["a", "b.log"]}]}]})
    assert old["OutputFileName"] == "out" and old["OutputFormats"]["exel"] is True
    table = old["LogDataTables"][0]
    assert table["TimeEpoch"] == "Unix" and table["Name"] == "log" and table["TimeOffset"] == 0.0
    assert table["FirstImageCorrelation"] is False


def test_merge_data_raises_config_error_before_reading(tmp_path):
    with pytest.raises(MergeConfigError, match=r"\$\.LogDataTables\[0\]\.TimeEpoch"):
        merge_data({"LogDataTables": [{"TimeEpoch": 1, "Files": [{"LocalPath": "x"}]}]}, tmp_path)


# --------------------------------------------------------------------------- #
# Output formats
# --------------------------------------------------------------------------- #


def assert_frames_equal(got, want):
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in want.columns:
        w = want[c]
        g = got[c]
        if pd.api.types.is_numeric_dtype(w):
            np.testing.assert_allclose(g.to_numpy(dtype=float), w.to_numpy(dtype=float),
                                       rtol=1e-15, atol=0, equal_nan=True, err_msg=c)
        else:
            assert [str(x) for x in g.fillna("")] == [str(x) for x in w.fillna("")], c


def test_all_four_formats_round_trip(beamline):
    df = merge_data(config(beamline / "datalogger.log", beamline / "peakinteg.log"),
                    beamline, beamline / "images")
    out = beamline / "out" / "merged"
    written = write_merged(df, out, {"csv": True, "json": True, "hdf": True, "exel": True})
    assert set(written) == {"csv", "json", "hdf", "exel"}
    assert [p.name for p in written.values()] == ["merged.csv", "merged.json", "merged.hdf",
                                                    "merged.xlsx"]
    assert not list((beamline / "out").glob("*.part"))
    for path in written.values():
        assert_frames_equal(read_merged(path), df)
    # Independent readers of each format.
    assert_frames_equal(pd.read_csv(written["csv"]), df)
    records = json.loads(written["json"].read_text())
    assert len(records) == N_IMAGES and records[7]["Ioni (Dlog)"] == 1075
    assert records[0]["file"] == "img_00000.tif"
    import h5py
    import openpyxl

    with h5py.File(written["hdf"], "r") as f:
        cols = json.loads(f["LogData"].attrs["columns"])
        assert cols == list(df.columns)
        ds = next(d for d in f["LogData"].values() if d.attrs["column"] == "Ioni (Dlog)")
        np.testing.assert_array_equal(ds[()], df["Ioni (Dlog)"].to_numpy())
    wb = openpyxl.load_workbook(written["exel"], read_only=True)
    rows = list(wb["LogData"].iter_rows(values_only=True))
    assert list(rows[0]) == list(df.columns)
    assert rows[8][list(df.columns).index("Ioni (Dlog)")] == 1075
    assert rows[1][list(df.columns).index("image_time")] == df.loc[0, "image_time"]


def test_format_from_suffix_and_hdf_extras(beamline):
    df = merge_data(config(beamline / "datalogger.log", beamline / "peakinteg.log"),
                    beamline, beamline / "images").head(3)
    written = write_merged(df, beamline / "x.h5", include_tif=True)
    import h5py

    with h5py.File(written["hdf"], "r") as f:
        assert sorted(f["Images"]) == ["img_00000.tif", "img_00001.tif", "img_00002.tif"]
        np.testing.assert_array_equal(f["Images/img_00002.tif"][()], np.full((6, 5), 2))
    with pytest.raises(MergeError, match="unknown output format"):
        write_merged(df, beamline / "x.parquet")


def test_sync_plot_png(beamline):
    res = merge(config(beamline / "datalogger.log", beamline / "peakinteg.log"), beamline,
                beamline / "images")
    assert res.sync_table == "Peak"
    path = sync_plot(res, beamline / "sync.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_classifier_columns_of_the_filelist_reach_the_merge_table(tmp_path):
    """The coordinator's values (CorMap, alarms) are only in results/filelist.txt, not in the
    workers' .chi headers: the merge takes every column of the file list, not just I0-I2."""
    results = tmp_path / "results"
    results.mkdir()
    header = "file\toutput\tI0\tI1\tI2\timage_time\tGuinier.Rg\tGuinier.status\tCorMap.P_adjusted\tCorMap.similar\talarms\n"
    rows = ["/data/run/img_00000.tif\t/nowhere/a.chi\t1.0\t2.0\t3.0\t100.0\t2.5\tok\t\t\t\n",
            "/data/run/img_00001.tif\t/nowhere/b.chi\t1.1\t2.1\t3.1\t101.0\t\tfailed: no Guinier region\t0.001\tFalse\t"
            "CorMap.P_adjusted=0.001 below 0.01\n"]
    (results / "filelist.txt").write_text(header + "".join(rows))
    from saxsdog.merge import image_table, read_filelist

    fl = read_filelist(results / "filelist.txt")
    assert fl["Guinier.Rg"].iloc[0] == 2.5 and math.isnan(fl["Guinier.Rg"].iloc[1])
    assert fl["CorMap.similar"].iloc[1] == 0.0 and math.isnan(fl["CorMap.similar"].iloc[0])
    df = image_table(filelist=results / "filelist.txt")
    assert list(df["I0"]) == [1.0, 1.1]
    assert df.loc[0, "Guinier.Rg"] == 2.5 and math.isnan(df.loc[1, "Guinier.Rg"])
    assert df.loc[1, "CorMap.P_adjusted"] == 0.001 and df.loc[1, "CorMap.similar"] == 0.0
    assert df.loc[1, "Guinier.status"] == "failed: no Guinier region"
    assert df.loc[1, "alarms"].startswith("CorMap.P_adjusted=")
