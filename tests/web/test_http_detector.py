"""The page's detector commands over /api/command: frame pixels, mask files both ways (a FIT2D
.msk round-trips unchanged), calibrant d-spacings, calibrating from a server image or an upload,
and the errors a user meets (no frame yet, a path outside the base, a wrong mask size, an
image without rings)."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from webleash_helpers import add_images, calibration_request, command, login

pytest.importorskip("starlette")
pytest.importorskip("httpx")


def pixels(answer) -> np.ndarray:
    d = answer["data"]
    assert d["dtype"] == "float32"
    return np.frombuffer(base64.b64decode(d["data"]), dtype="<f4").reshape(d["data_shape"])


def test_frame_pixels_as_read_and_binned(client, base):
    from saxsdog.io.images import read_image

    login(client)
    image = np.asarray(read_image(base / "template.tif").data)
    got = command(client, "detectorframe", {"image": "template.tif"})
    assert got["result"] == "detectorframe"
    d = got["data"]
    assert d["shape"] == list(image.shape) and d["binning"] == 1 and d["path"] == "template.tif"
    assert np.array_equal(pixels(got), image.astype(np.float32))
    assert d["negative"] == int((image < 0).sum()) and d["max"] == float(image.max())
    assert d["metadata"]["wavelength"] == pytest.approx(1.54987)
    small = command(client, "detectorframe", {"image": "template.tif", "maxside": 400})
    assert small["data"]["binning"] == 3 and small["data"]["data_shape"] == [348, 327]
    binned = pixels(small)
    assert binned[10, 20] == image[30:33, 60:63].max()  # block maximum
    assert binned[-1, -1] == image[1041:, 978:].max()  # the edge block is smaller


def test_latest_frame_of_the_queue(client, handler, base, data_dir):
    from saxsdog.testing import wait_for

    login(client)
    no = command(client, "detectorframe")
    assert no["result"] == "Error" and "no image processed yet" in no["data"]["Error"]
    arg, att = calibration_request(data_dir)
    assert command(client, "new", arg, att)["result"] == "new queue"
    (p,) = add_images(base, 1)
    handler.session.feeder_event(str(p))
    assert wait_for(lambda: handler.session.queue.history.latest is not None, 60)
    got = command(client, "detectorframe")
    assert got["result"] == "detectorframe" and got["data"]["path"] == "run/img_00000.tif"


def test_bad_frame_requests_are_named(client, base, tmp_path):
    login(client)
    outside = command(client, "detectorframe", {"image": "../../etc/passwd"})
    assert outside["result"] == "Error" and "outside" in outside["data"]["Error"]
    missing = command(client, "detectorframe", {"image": "nothing.tif"})
    assert missing["result"] == "Error" and "'nothing.tif' is not a file" in missing["data"]["Error"]
    (base / "junk.tif").write_bytes(b"not an image")
    junk = command(client, "detectorframe", {"image": "junk.tif"})
    assert junk["result"] == "Error" and "junk.tif" in junk["data"]["Error"]
    bad = command(client, "detectorframe", {"image": "template.tif", "maxside": 2})
    assert bad["result"] == "Error" and "$.argument.maxside" in bad["data"]["Error"]


def test_a_fit2d_msk_round_trips_unchanged(client, data_dir):
    """AAA_integ.msk read as the page gets it, written back as .msk through fabio: the same
    mask, and the same bytes (the original has one trailing byte after FIT2D's data, which
    fabio does not write)."""
    from saxsdog.io.masks import read_mask

    login(client)
    original = (data_dir / "AAA_integ.msk").read_bytes()
    got = command(client, "maskdecode", {"filenames": ["AAA_integ.msk"], "shape": [1043, 981]}, [original])
    assert got["result"] == "mask"
    masked = np.frombuffer(base64.b64decode(got["data"]["mask"]), np.uint8).reshape(got["data"]["shape"])
    valid = read_mask(data_dir / "AAA_integ.msk")
    assert np.array_equal(masked == 0, valid) and got["data"]["masked"] == int((~valid).sum())
    back = command(client, "maskencode", {"format": "msk", "shape": [1043, 981]}, [masked.tobytes()])
    assert back["result"] == "maskfile" and back["data"]["name"] == "mask.msk"
    written = base64.b64decode(back["data"]["data"])
    assert written == original[:len(written)] and len(original) - len(written) <= 1
    again = command(client, "maskdecode", {"filenames": ["x.msk"]}, [written])
    assert again["data"]["mask"] == got["data"]["mask"]


@pytest.mark.parametrize("fmt", ["msk", "tif", "edf", "npy"])
def test_every_mask_format_reads_back_in_saxsdogs_orientation(client, tmp_path, fmt):
    from saxsdog.io.masks import read_mask

    login(client)
    masked = np.zeros((7, 11), np.uint8)
    masked[0, :3] = 1  # top row, left: not symmetric under any flip
    masked[5, 9] = 1
    got = command(client, "maskencode", {"format": fmt, "shape": [7, 11]}, [masked.tobytes()])
    path = tmp_path / got["data"]["name"]
    path.write_bytes(base64.b64decode(got["data"]["data"]))
    assert np.array_equal(~read_mask(path, (7, 11)), masked.astype(bool))  # as the queue reads it


def test_bad_masks_are_named(client, data_dir):
    login(client)
    short = command(client, "maskencode", {"format": "msk", "shape": [10, 10]}, [b"\x00" * 99])
    assert short["result"] == "Error" and "99 bytes" in short["data"]["Error"]
    fmt = command(client, "maskencode", {"format": "png", "shape": [1, 1]}, [b"\x00"])
    assert fmt["result"] == "Error" and "$.argument.format" in fmt["data"]["Error"]
    size = command(client, "maskdecode", {"filenames": ["AAA_integ.msk"], "shape": [100, 100]},
                   [(data_dir / "AAA_integ.msk").read_bytes()])
    assert size["result"] == "Error" and "differs from the image size" in size["data"]["Error"]
    junk = command(client, "maskdecode", {"filenames": ["m.edf"]}, [b"rubbish"])
    assert junk["result"] == "Error" and "cannot read mask file" in junk["data"]["Error"]
    none = command(client, "maskdecode", {"filenames": ["m.edf"]})
    assert none["result"] == "Error" and "one mask file" in none["data"]["Error"]


def test_calibrant_d_spacings(client):
    pytest.importorskip("pyFAI")
    login(client)
    got = command(client, "calibrants", {"name": "AgBh"})
    assert got["result"] == "calibrants" and "LaB6" in got["data"]["calibrants"]
    assert got["data"]["calibrant"] == "AgBh"
    assert got["data"]["d_spacings"][:3] == pytest.approx([58.38, 29.19, 19.46])
    bad = command(client, "calibrants", {"name": "unobtainium"})
    assert bad["result"] == "Error" and "unknown calibrant 'unobtainium'" in bad["data"]["Error"]


def test_calibrate_a_server_image_and_an_upload_alike(client, base, data_dir):
    """The page's fit is that of ``saxsdog calibrate``: the same geometry for the image on the
    server and the same image uploaded, with the template's other fields kept."""
    pytest.importorskip("pyFAI")
    from saxsdog.calibrate import calibrate_image

    login(client)
    shutil.copy(data_dir / "agbeh2_1M.tif", base / "agbeh.tif")
    template = json.loads((data_dir / "cal.json").read_text())
    on_server = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh", "template": template})
    assert on_server["result"] == "calibrated", on_server
    g = on_server["data"]["geometry"]
    upload = command(client, "calibrateimage", {"filenames": ["agbeh2_1M.tif"], "calibrant": "AgBh",
                                                "template": template},
                     [(data_dir / "agbeh2_1M.tif").read_bytes()])
    assert upload["data"]["geometry"] == g
    from saxsdog.io.images import read_image

    frame = read_image(data_dir / "agbeh2_1M.tif")
    fit = calibrate_image(np.asarray(frame.data), "AgBh", frame.metadata["wavelength"], (172.0, 172.0))
    assert g["DetectorDistanceMM"] == pytest.approx(fit.geometry.distance_mm, rel=1e-12)
    assert g["BeamCenter"] == pytest.approx(list(fit.geometry.beam_center), rel=1e-12)
    cal = on_server["data"]["calibration"]
    assert cal["Masks"] == template["Masks"] and cal["Geometry"]["DedectorDistanceMM"] == pytest.approx(
        g["DetectorDistanceMM"], abs=1e-3)
    assert len(on_server["data"]["rings"]) >= 5 and on_server["data"]["rms_px"] < 1
    assert len(on_server["data"]["points"]["row"]) == len(on_server["data"]["points"]["line"]) > 100
    print(f"calibrateimage: {on_server['data']['elapsed_s']:.2f} s, distance {g['DetectorDistanceMM']:.3f} mm")


def test_calibrate_with_a_mask_and_bad_input(client, base, data_dir):
    pytest.importorskip("pyFAI")
    from saxsdog.io.masks import read_mask

    login(client)
    shutil.copy(data_dir / "agbeh2_1M.tif", base / "agbeh.tif")
    masked = (~read_mask(data_dir / "AAA_integ.msk")).astype(np.uint8)
    ok = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh", "pixel": [172], "mask": True},
                 [masked.tobytes()])
    assert ok["result"] == "calibrated", ok
    # the old beamstop's mask hides about half of the rings: used, as the user asked, but said
    assert any("the mask hides" in w for w in ok["data"]["warnings"]), ok["data"]["warnings"]
    # a flat image: no rings, said so instead of a confident geometry
    from datetime import datetime

    from saxsdog.testing import write_pilatus_tiff

    write_pilatus_tiff(base / "flat.tif", np.full((300, 400), 100, np.int32), datetime(2024, 5, 1))
    flat = command(client, "calibrateimage", {"image": "flat.tif", "calibrant": "AgBh", "wavelength": 1.54,
                                              "pixel": [172]})
    assert flat["result"] == "Error" and "no rings found" in flat["data"]["Error"]
    import fabio.edfimage

    fabio.edfimage.EdfImage(data=np.full((300, 400), 100, np.int32)).write(str(base / "plain.edf"))
    nowl = command(client, "calibrateimage", {"image": "plain.edf", "calibrant": "AgBh", "pixel": [172]})
    assert nowl["result"] == "Error" and "wavelength is unknown" in nowl["data"]["Error"]
    wrong = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "kryptonite"})
    assert wrong["result"] == "Error" and "unknown calibrant" in wrong["data"]["Error"]
    bad_mask = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh", "mask": True},
                       [b"\x00" * 10])
    assert bad_mask["result"] == "Error" and "10 bytes" in bad_mask["data"]["Error"]
    outside = command(client, "calibrateimage", {"image": "../x.tif", "calibrant": "AgBh"})
    assert outside["result"] == "Error" and "outside" in outside["data"]["Error"]
    neither = command(client, "calibrateimage", {"calibrant": "AgBh"})
    assert neither["result"] == "Error" and "name an image" in neither["data"]["Error"]


def test_calibrate_warns_when_the_wavelength_is_not_the_headers(client, base, data_dir):
    """A wavelength typed into the page that is not the image header's: at the small angles of
    agbeh2_1M.tif a too short one fits with a longer distance, so the page says so with the fit."""
    pytest.importorskip("pyFAI")
    login(client)
    shutil.copy(data_dir / "agbeh2_1M.tif", base / "agbeh.tif")
    answer = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh", "wavelength": 1.2})
    assert answer["result"] == "calibrated", answer
    assert any("differs from the image header's 1.54987 Å by 23%" in w for w in answer["data"]["warnings"])
    assert "differs from the image header" in answer["data"]["report"]
    same = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh"})
    assert not any("differs" in w for w in same["data"]["warnings"])


def test_calibrate_says_the_wavelength_looks_wrong_when_the_distance_guess_disagrees(client, base, data_dir):
    """The page's distance guess plays the command's --distance-mm: a fit far from it names the
    wavelength that would fit (the rings fix distance times wavelength)."""
    pytest.importorskip("pyFAI")
    login(client)
    shutil.copy(data_dir / "agbeh2_1M.tif", base / "agbeh.tif")
    # a 0.77x too short wavelength fits at about 1080 mm; the user knows the camera is at ~830 mm
    answer = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh", "wavelength": 1.19,
                                                "distance": 830})
    assert answer["result"] == "calibrated", answer
    assert any("the wavelength looks wrong" in w and "the distance guess" in w for w in answer["data"]["warnings"])
    right = command(client, "calibrateimage", {"image": "agbeh.tif", "calibrant": "AgBh", "distance": 830})
    assert not any("looks wrong" in w for w in right["data"]["warnings"])
