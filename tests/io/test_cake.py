"""Cake maps: the NXdata file per frame, Calibration.write_chi and the pipeline's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from saxsdog import Calibration
from saxsdog.core.integrators import CakeIntegrator
from saxsdog.io.cake import azimuthal_profile, cake_bytes, cake_preview, read_cake, write_cake
from saxsdog.testing import run_queue, small_calibration

h5py = pytest.importorskip("h5py")


def _cake_cal(**cake_fields):
    cal = small_calibration()
    radial = dict(cal["Masks"][0])
    cal["Masks"] = [radial, {**radial, "Name": "map", "Cake": {"RadialBins": 24, "AzimuthBins": 10},
                             "RadialRange": [0.05, 1.2], **cake_fields}]
    return cal


@pytest.fixture
def image():
    return np.random.default_rng(5).poisson(50.0, (64, 48)).astype(np.int32)


def test_cake_file_round_trip_and_nxdata_layout(tmp_path: Path, image):
    c = Calibration(_cake_cal(), cache=False)
    it = c.integrators[1]
    assert isinstance(it, CakeIntegrator)
    curve = it.curve(image)
    path = tmp_path / "frame_cC1_cake.h5"
    write_cake(path, it, curve, "frame.tif", {"exposure_time": 1.5, "detector": "P1M"})
    back = read_cake(path)
    assert back["I"].shape == (10, 24) and np.array_equal(back["I"], it.as_map(curve.intensity))
    assert np.array_equal(back["Idev"], it.as_map(curve.poisson))
    assert np.array_equal(back["radial"], it.x) and np.array_equal(back["chi"], it.azimuth)
    assert back["radial_name"] == "q" and back["radial_units"] == "1/nm" and back["units"] == "counts/pixel"
    assert back["radial_edges"].size == 25 and back["chi_edges"].size == 11
    assert back["metadata"] == {"exposure_time": 1.5, "detector": "P1M"} and back["title"] == "frame.tif"
    with h5py.File(path, "r") as f:  # what a NeXus reader follows to plot it
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "cake"
        data = f["entry/cake"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "I"
        assert list(data.attrs["axes"]) == ["chi", "q"]
        assert data.attrs["chi_indices"] == 0 and data.attrs["q_indices"] == 1
        assert "clockwise" in data["chi"].attrs["long_name"]
    assert cake_bytes(it, curve, "frame.tif")[:8] == b"\x89HDF\r\n\x1a\n"


def test_cake_in_two_theta_names_its_axis(tmp_path: Path, image):
    c = Calibration(_cake_cal(Unit="2th_deg", RadialRange=[0.05, 1.5]), cache=False)
    it = c.integrators[1]
    write_cake(tmp_path / "x_cake.h5", it, it.curve(image))
    back = read_cake(tmp_path / "x_cake.h5")
    assert back["radial_name"] == "two_theta" and back["radial_units"] == "degree"


def test_profile_and_preview(image):
    c = Calibration(_cake_cal(), cache=False)
    it = c.integrators[1]
    curve = it.curve(np.full((64, 48), 3.0))
    intensity, error = azimuthal_profile(it, curve)
    filled = it.as_map(it.operator.bin_counts).sum(axis=0) > 0
    assert np.allclose(intensity[filled], 3.0) and np.all(error[filled] > 0)
    p = cake_preview(it, curve, max_shape=(4, 10))
    assert p["shape"] == [10, 24] and len(p["z"]) == 4 and len(p["z"][0]) == 8
    assert all(v is None or v == pytest.approx(3.0) for row in p["z"] for v in row)
    assert len(p["chi"]) == 4 and len(p["radial"]) == 8


def test_write_chi_writes_the_cake_beside_the_curves(tmp_path: Path, image):
    c = Calibration(_cake_cal(), cache=False)
    written = c.write_chi(image, tmp_path / "frame.chi")
    assert [p.name for p in written] == ["frame.chi", "frame_cC1_cake.h5"]
    assert read_cake(written[1])["I"].shape == (10, 24)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["chi", "nxcansas", "nxcansas-run"])
def test_pipeline_writes_one_cake_file_per_frame(tmp_path: Path, image, fmt):
    c = Calibration(_cake_cal(), cache=False)
    root = tmp_path / "data"
    root.mkdir()
    for k in range(2):
        tifffile.imwrite(root / f"img_{k}.tif", image + k)
    q = run_queue(c, root, output_format=fmt, live_filelist=False, keep_curves=True)
    assert not q.history.failures, q.history.failures
    out = tmp_path / "work"  # the default output folder, ../work from the images
    cakes = sorted(p.name for p in out.rglob("*_cake.h5"))
    assert cakes == ["img_0_cC1_cake.h5", "img_1_cC1_cake.h5"]
    other = sorted(p.name for p in out.rglob("img_*") if not p.name.endswith("_cake.h5"))
    assert other == {"chi": ["img_0.chi", "img_1.chi"], "nxcansas": ["img_0.h5", "img_1.h5"],
                     "nxcansas-run": []}[fmt]
    back = read_cake(out / "img_1_cC1_cake.h5")
    expected = c.integrators[1].curve(image + 1)
    assert np.allclose(back["I"], c.integrators[1].as_map(expected.intensity))


@pytest.mark.slow
def test_radial_curves_in_another_unit_keep_chi_files_in_nxcansas(tmp_path: Path, image):
    from saxsdog.io.chi import read_chi
    from saxsdog.io.nxcansas import read_nxcansas

    cal = small_calibration()
    radial = dict(cal["Masks"][0])
    cal["Masks"] = [radial, {**radial, "Unit": "2th_deg"}]
    c = Calibration(cal, cache=False)
    root = tmp_path / "data"
    root.mkdir()
    tifffile.imwrite(root / "img_0.tif", image)
    q = run_queue(c, root, output_format="nxcansas", live_filelist=False)
    assert not q.history.failures, q.history.failures
    out = tmp_path / "work"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("img_")) == ["img_0.h5", "img_0_cR1.chi"]
    assert len(read_nxcansas(out / "img_0.h5")) == 1  # the q curve only: NXcanSAS holds Q
    chi = (out / "img_0_cR1.chi").read_text()
    assert "2$\\\\theta$ [deg]" in chi or "theta" in chi
    assert np.allclose(read_chi(out / "img_0_cR1.chi").q, c.integrators[1].x)


@pytest.mark.parametrize("fmt", ["nxcansas", "nxcansas-run"])
def test_curves_in_inverse_angstrom_go_into_nxcansas_with_their_units(tmp_path: Path, image, fmt):
    """NXcanSAS units follow the entry's Unit: q in Å⁻¹ is a Q (``Q@units = 1/angstrom``), written
    beside the nm⁻¹ curve of the same frame; 2θ is not a Q and keeps its .chi file."""
    from saxsdog.io.nxcansas import read_nxcansas

    cal = small_calibration()
    radial = dict(cal["Masks"][0])
    cal["Masks"] = [radial, {**radial, "Unit": "q_A^-1"}, {**radial, "Unit": "2th_deg"}]
    c = Calibration(cal, cache=False)
    root = tmp_path / "data"
    root.mkdir()
    tifffile.imwrite(root / "img_0.tif", image)
    q = run_queue(c, root, output_format=fmt, live_filelist=False)
    assert not q.history.failures, q.history.failures
    out = tmp_path / "work"
    if fmt == "nxcansas":
        assert sorted(p.name for p in out.iterdir() if p.name.startswith("img_")) == ["img_0.h5", "img_0_cR2.chi"]
        frames = read_nxcansas(out / "img_0.h5")
        assert len(frames) == 2
    else:
        files = sorted(p for p in out.rglob("*.h5"))
        frames = [f for p in files for f in read_nxcansas(p)]
        assert len(frames) == 2, [p.name for p in files]
    units = sorted(f["q_units"] for f in frames)
    assert units == ["1/angstrom", "1/nm"]
    by_unit = {f["q_units"]: f for f in frames}
    for k, unit in ((0, "1/nm"), (1, "1/angstrom")):
        valid = c.integrators[k].operator.area > 0
        assert np.allclose(by_unit[unit]["q"], c.integrators[k].x[valid], rtol=1e-12)
    assert np.allclose(by_unit["1/angstrom"]["q"] * 10, by_unit["1/nm"]["q"], rtol=1e-9)


@pytest.mark.parametrize("first", [{"Cake": {"RadialBins": 20, "AzimuthBins": 12}}, {"Unit": "2th_deg"},
                                   {"Phi-mode": True, "PhiBins": 36}])
def test_curve_plot_of_the_first_entry_in_any_mode(tmp_path: Path, image, first):
    """The -s plot shows the first entry's curve over its own x axis: a cake first gave an
    IndexError (its M·R intensities against R radial centres) and lost the frame, and every
    plot said q [nm⁻¹]."""
    pytest.importorskip("matplotlib")
    cal = small_calibration()
    radial = dict(cal["Masks"][0])
    cal["Masks"] = [{**radial, **first}, radial]
    c = Calibration(cal, cache=False)
    root = tmp_path / "data"
    root.mkdir()
    tifffile.imwrite(root / "img_0.tif", image)
    q = run_queue(c, root, write_svg=True, live_filelist=False)
    assert not q.history.failures, q.history.failures
    svg = (tmp_path / "work" / "img_0.svg").read_text()
    label = c.integrators[0].x_label
    assert label in svg, label
    if "Unit" in first or "Phi-mode" in first:
        assert "nm^{-1}" not in svg
