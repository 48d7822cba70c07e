"""The command handler in-process: commands, ledger, restarts, path safety."""

from __future__ import annotations

import os
import time

import pytest

from saxsdog.pipeline import QueueOptions
from saxsdog.server.handler import CommandHandler
from saxsdog.server.ledger import Ledger
from saxsdog.server.paths import PathOutsideBase, resolve_inside
from saxsdog.testing import wait_for

from server_helpers import add_images, new_request


def make_handler(base, **kw) -> CommandHandler:
    return CommandHandler(base, QueueOptions(workers=2, keep_curves=True, curve_interval=0.0), rescan_interval=0, **kw)


@pytest.mark.slow
def test_new_feed_stat_history(base, data_dir):
    h = make_handler(base)
    try:
        arg, att = new_request(data_dir)
        r = h.execute("new", arg, att)
        assert r["result"] == "new queue", r
        for p in add_images(base, 20):
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 20)
        st = h.execute("stat")["data"]["stat"]
        assert st["queue length"] == 0 and st["images processed"] == 20 and st["images failed"] == 0
        for key in ("time interval", "frames per sec", "pics"):
            assert key in st
        files = h.execute("fileslist")["data"]["fileslist"]
        assert len(files) == 20 and all(v["state"] == "done" for v in files.values())
        assert all(v["outputs"][0].startswith("work/") for v in files.values())
        hist = h.execute("plotdata")["data"]["history"]
        assert len(hist["I0"]) == 20 and all(i0 > 0 for i0 in hist["I0"])
        assert all(t is not None for t in hist["time"])
        assert hist["dummy_pixels"] == [0] * 20  # the frames' dummy-pixel counts (none: no MaskNegative)
        plot = h.execute("plot")["data"]
        assert plot["filename"].startswith("run/img_") and len(plot["graphs"]) == 1
        assert plot["graphs"][0]["kind"] == "Radial" and len(plot["graphs"][0]["array"][0]) == 1003
        assert plot["IntegralParameters"]["R0"]["I0"] > 0
        got = h.execute("get")["data"]
        assert got["cal"]["Geometry"]["DedectorDistanceMM"] == 1031.657
        assert len(list((base / "work").glob("*.chi"))) == 20
    finally:
        h.shutdown()


@pytest.mark.slow
def test_preexisting_files_wait_for_readdir(base, data_dir):
    add_images(base, 5)
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        time.sleep(0.5)
        assert h.stat()["images processed"] == 0
        assert h.session.reconcile() == 0  # the scan leaves them alone
        r = h.execute("readdir")
        assert r["result"] == "directory refilled queue" and r["data"]["queued"] == 5
        assert wait_for(lambda: h.stat()["images processed"] == 5)
    finally:
        h.shutdown()


@pytest.mark.slow
def test_events_for_preexisting_files_are_processed(base, data_dir):
    imgs = add_images(base, 3)
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        assert h.session.feeder_event(str(imgs[1])) is None
        assert wait_for(lambda: h.stat()["images processed"] == 1)
        time.sleep(0.3)
        assert h.stat()["images processed"] == 1
    finally:
        h.shutdown()


@pytest.mark.slow
def test_files_without_events_are_found_by_reconciliation(base, data_dir):
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        add_images(base, 7, sub="run/sub")  # no feeder events at all
        assert h.session.reconcile() == 7
        assert wait_for(lambda: h.stat()["images processed"] == 7)
        assert h.session.reconcile() == 0  # known now
    finally:
        h.shutdown()


@pytest.mark.slow
def test_restart_resumes_without_duplicates(base, data_dir):
    h = make_handler(base)
    h.execute("new", *new_request(data_dir))
    imgs = add_images(base, 30)
    for p in imgs[:10]:
        h.session.feeder_event(str(p))
    assert wait_for(lambda: h.stat()["images processed"] == 10)
    qid = h.session.queue_id
    h.shutdown()  # server stops; the remaining 20 images had no events
    h2 = make_handler(base)
    try:
        assert h2.restore() and h2.session.queue_id == qid
        assert wait_for(lambda: h2.stat()["images processed"] == 30)
        counts = h2.ledger.counts(qid)
        assert counts == {"done": 30}
        assert len(list((base / "work").glob("*.chi"))) == 30
    finally:
        h2.shutdown()


@pytest.mark.slow
def test_close_forgets_and_abort(base, data_dir):
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        assert h.execute("close")["result"] == "queue closed"
        assert h.execute("stat")["result"] == "stat"
        assert h.execute("plot")["result"] == "Error"
        assert "no queue" in h.execute("readdir")["data"]["Error"]
        h.execute("new", *new_request(data_dir))
        assert h.execute("abort")["result"] == "queue stopped emptied and closed"
    finally:
        h.shutdown()
    h2 = make_handler(base)
    assert not h2.restore()  # a closed queue is not resumed
    h2.shutdown()


def test_invalid_calibration_and_unknown_command(base, data_dir):
    h = make_handler(base)
    try:
        arg, att = new_request(data_dir)
        arg["calibration"]["Geometry"]["DedectorDistanceMM"] = -1
        r = h.execute("new", arg, att)
        assert r["result"] == "Error" and "$.Geometry.DedectorDistanceMM" in r["data"]["Error"]
        r = h.execute("selfdestruct")
        assert r["result"] == "Error" and "unknown command" in r["data"]["Error"]
        assert h.execute("new", {"calibration": "x"})["result"] == "Error"
    finally:
        h.shutdown()


def test_paths_never_leave_the_base(base, data_dir, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwords.tif").write_text("no")
    os.symlink(outside, base / "run" / "escape")
    h = make_handler(base)
    try:
        # execute() checks the argument against the command's schema first (strings and '..'
        # are no path components); the base-directory check behind it is called directly
        for bad in ["../..", "/etc", "run/escape", ["..", "secret"], "run/../../secret"]:
            r = h.execute("listdir", {"directory": bad})
            assert r["result"] == "Error" and "$.argument.directory" in r["data"]["Error"], bad
            with pytest.raises(PathOutsideBase, match="outside"):
                h.cmd_listdir({"directory": bad}, [])
        r = h.execute("listdir", {"directory": ["run", "escape"]})
        assert r["result"] == "Error" and "outside" in r["data"]["Error"]
        assert h.cmd_listdir({"directory": "run"}, [])["dircontent"] == []
        listing = h.execute("listdir", {"directory": ["run"]})
        assert listing["result"] == "dircontent" and listing["data"]["dircontent"] == []
        assert listing["data"]["directory"] == ["run"]
        arg, att = new_request(data_dir)
        arg["directory"] = ["..", "secret"]
        assert "'..'" in h.execute("new", arg, att)["data"]["Error"]
        with pytest.raises(PathOutsideBase, match="outside"):
            h.cmd_new(arg, att)
        arg, _ = new_request(data_dir)
        arg["calibration"]["Masks"][0]["MaskFile"] = str(data_dir / "AAA_integ.msk")
        r = h.execute("new", arg, [])
        assert r["result"] == "Error" and "$.Masks[0].MaskFile" in r["data"]["Error"]
        h.execute("new", *new_request(data_dir))
        assert "outside" in h.session.feeder_event(str(outside / "passwords.tif"))
        assert "outside" in h.session.feeder_event("../../etc/passwd")
        assert "outside" in h.session.feeder_event(str(base / "run" / "escape" / "passwords.tif"))
        assert "not an image" in h.session.feeder_event(str(base / "run"))
    finally:
        h.shutdown()


def test_resolve_inside(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, ["a"]) == tmp_path.resolve() / "a"
    assert resolve_inside(tmp_path, ".") == tmp_path.resolve()
    assert resolve_inside(tmp_path, str(tmp_path / "a")) == tmp_path.resolve() / "a"
    for bad in ["..", "/", "a/../..", "a\x00b", [1, 2]]:
        with pytest.raises(PathOutsideBase):
            resolve_inside(tmp_path, bad)


def test_ledger_persists_across_connections(tmp_path):
    from saxsdog.pipeline.tasks import ImageResult

    led = Ledger(tmp_path / "l.sqlite")
    led.mark_queued("q", "/a.tif", "1:2")
    led.mark_queued("q", "/b.tif", "1:2")
    led.mark_result("q", ImageResult("/a.tif", outputs=["/a.chi"], parameters={"R0": {"I0": 1.0}},
                                     processed_at=1.0), "1:2")
    led.commit()
    led2 = Ledger(tmp_path / "l.sqlite")  # as after a restart (no close: like a crash)
    assert led2.unfinished("q") == ["/b.tif"]
    assert led2.counts("q") == {"done": 1, "queued": 1}
    assert led2.history("q")[0]["parameters"] == {"R0": {"I0": 1.0}}


@pytest.mark.slow
def test_mask_attachment_format_from_filenames_and_empty_frame(base, data_dir, tmp_path):
    import fabio
    import numpy as np

    masked = np.flipud(fabio.open(str(data_dir / "AAA_integ.msk")).data).astype(np.uint8)
    np.save(tmp_path / "m.npy", masked)
    h = make_handler(base)
    try:
        arg, _ = new_request(data_dir)  # the calibration still says AAA_integ.msk
        arg["filenames"] = ["/somewhere/my-mask.npy"]
        r = h.execute("new", arg, [(tmp_path / "m.npy").read_bytes()])
        assert r["result"] == "new queue", r
        assert h.session.calibration.mask(0).sum() == 666_395
        r = h.execute("new", arg, [b""])  # an empty frame: no mask
        assert r["result"] == "new queue", r
        assert h.session.calibration.mask(0) is None
    finally:
        h.shutdown()


@pytest.mark.slow
def test_a_version_2_calibration_through_the_server(base, data_dir):
    """As a user runs it on the server: a dark beside the images, no mask (the real image's
    gaps are dummy pixels), sigma clipping, exposure time from the headers and a background
    image; the history, the plot and the files carry unit, counts and subtracted curves."""
    import numpy as np

    from saxsdog.io.chi import read_chi
    from saxsdog.io.images import read_image

    np.save(base / "run" / "dark.npy", np.full((1043, 981), 0.5))
    h = make_handler(base)
    try:
        arg, _ = new_request(data_dir)
        arg["calibration"]["Masks"][0]["MaskFile"] = ""
        arg["calibration"].update({
            "Version": 2,
            "Corrections": {"SolidAngle": True, "DarkFile": "dark.npy", "SigmaClip": {"Sigma": 4, "Cycles": 2}},
            "Normalization": {"ExposureTime": "header"},
            "Background": {"File": "../template.tif", "Scale": 0.5}})
        r = h.execute("new", arg, [])
        assert r["result"] == "new queue", r
        for p in add_images(base, 3):
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 3)
        assert h.stat()["images failed"] == 0
        hist = h.execute("plotdata")["data"]["history"]
        assert hist["dummy_pixels"] == [73671] * 3
        assert all(isinstance(n, int) and n >= 0 for n in hist["rejected_pixels"])
        # one value per row in every column (rejected_pixels was appended twice per row)
        assert {k: len(v) for k, v in hist.items()} == {k: 3 for k in hist}
        # the subtracted curve's integral parameters, for the History tab's dashed traces
        assert all(v > 0 for v in hist["I0_sub"]) and len(hist["invariant_sub"]) == 3
        np.testing.assert_allclose(hist["I0_sub"], 0.5 * np.asarray(hist["I0"]), rtol=1e-6)
        graphs = h.execute("plot")["data"]["graphs"]
        assert [g["conf"].get("subtracted", False) for g in graphs] == [False, True]
        assert graphs[0]["unit"] == "counts/pixel/s" and graphs[0]["columnLabels"][1] == "Intensity (counts/pixel/s)"
        assert graphs[0]["dummy_pixels"] == 73671 and "rejected_pixels" in graphs[0]
        chi = read_chi(base / "work" / "img_00000.chi")
        sub = read_chi(base / "work" / "img_00000_sub.chi")
        assert chi.labels[1] == "Intensity (counts/pixel/s)"
        keep = chi.intensity != 0
        # the background is the same image: the subtracted curve is half the curve
        np.testing.assert_allclose(sub.intensity[keep], 0.5 * chi.intensity[keep], rtol=1e-9)
        # the dark, scaled by 1 (a .npy has no exposure time), and the 10 s of the header
        assert read_image(base / "template.tif").metadata["header"]["Exposure_time"].startswith("10.")
    finally:
        h.shutdown()


@pytest.mark.slow
def test_a_refused_calibration_leaves_the_running_queue_running(base, data_dir):
    """Bad input through the server: a ``new`` whose calibration is refused (a dark or flat of
    the wrong size, a flat with zeros or negatives, a transmission <= 0, a background off the
    q range, a file outside the base) names the field, and the queue that was running goes on
    with the images that arrive.  Before, the running queue was stopped first and nothing ran."""
    import numpy as np

    np.save(base / "run" / "small.npy", np.zeros((10, 10)))
    flat = np.ones((1043, 981))
    flat[500, 500], flat[600, 600] = 0.0, -1.0
    np.save(base / "run" / "flat0.npy", flat)
    q = np.linspace(50.0, 60.0, 20)
    (base / "run" / "far.chi").write_text("far\n\n\n20\n" + "".join(f"{x} 1.0 0.1\n" for x in q))
    h = make_handler(base)
    try:
        assert h.execute("new", *new_request(data_dir))["result"] == "new queue"
        running = h.session
        for p in add_images(base, 2):
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 2)
        for blocks, field, fragment in (
                ({"Corrections": {"DarkFile": "small.npy"}}, "$.Corrections.DarkFile", "10×10"),
                ({"Corrections": {"FlatFile": "small.npy"}}, "$.Corrections.FlatFile", "10×10"),
                ({"Corrections": {"FlatFile": "flat0.npy"}}, "$.Corrections.FlatFile", "row 500, column 500"),
                ({"Normalization": {"Transmission": 0}}, "$.Normalization.Transmission", "0"),
                ({"Normalization": {"Transmission": -0.5}}, "$.Normalization.Transmission", "-0.5"),
                ({"Background": {"File": "far.chi"}}, "$.Background.File", "does not overlap"),
                ({"Background": {"File": "/etc/passwd"}}, "$.Background.File", "outside")):
            arg, att = new_request(data_dir)
            arg["calibration"].update({"Version": 2, **blocks})
            r = h.execute("new", arg, att)
            assert r["result"] == "Error", (blocks, r)
            assert field in r["data"]["Error"] and fragment in r["data"]["Error"], (blocks, r)
            assert h.session is running, blocks
        for p in add_images(base, 2, start=2):
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 4)
        assert h.stat()["images failed"] == 0
        # a good calibration still replaces the queue
        assert h.execute("new", *new_request(data_dir))["result"] == "new queue"
        assert h.session is not running and h.session is not None
    finally:
        h.shutdown()
