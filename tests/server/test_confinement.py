"""Issue 11, Part 3 item 4: nothing outside the server's base directory is read or written.

The attacker here can write inside the base directory (a beamline user, a compromised
acquisition machine): after ``new`` they plant symbolic links to outside files, swap the
queue folder or the output folder for a link to an outside folder, or pre-make
``results/filelist.txt`` as a link.  Each test does that as the attacker would and checks
that nothing outside is read (no output, no ledger row) or written, and that the refusal
says why.  The handler runs in-process with real workers; one test runs a real server.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from saxsdog.calibration import Calibration
from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.naming import OutputRefused, check_output_folder, open_output, write_output_bytes
from saxsdog.pipeline.tasks import ImageTask
from saxsdog.pipeline.worker import ImageProcessor
from saxsdog.server.handler import CommandHandler
from saxsdog.testing import link_images, wait_for

from server_helpers import new_request


@pytest.fixture
def outside(tmp_path, data_dir):
    """A folder outside the base with an image the attacker wants integrated."""
    o = tmp_path / "outside"
    o.mkdir()
    shutil.copy(data_dir / "buf1_00000.tif", o / "secret.tif")
    return o


def make_handler(base, options=None, **kw) -> CommandHandler:
    return CommandHandler(base, options or QueueOptions(workers=1), rescan_interval=0, **kw)


def add_image(base: Path, name: str, folder: str = "run") -> Path:
    p = base / folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    os.link(base / "template.tif", p)
    return p


def known_names(h: CommandHandler) -> set[str]:
    return {Path(p).name for p in h.ledger.known(h.session.queue_id)}


def outputs_named(root: Path, stem: str) -> list[Path]:
    return [p for p in root.rglob(f"{stem}*.chi")]


def test_link_planted_after_new_is_skipped_by_the_reconciliation_scan(base, outside, data_dir):
    """Before: the scan queued run/evil.tif → outside/secret.tif and integrated it."""
    h = make_handler(base)
    try:
        assert h.execute("new", *new_request(data_dir))["result"] == "new queue"
        os.symlink(outside / "secret.tif", base / "run" / "evil.tif")
        add_image(base, "honest.tif")
        assert h.session.reconcile() == 1  # the honest one only
        assert wait_for(lambda: "honest.tif" in known_names(h) and h.session.queue.queue_length == 0)
        assert h.session.queue.wait_until_idle(60)
        assert "evil.tif" not in known_names(h)
        assert outputs_named(base, "evil") == [] and outputs_named(outside.parent, "evil") == []
        assert outputs_named(base / "work", "honest")
    finally:
        h.shutdown()


def test_link_planted_after_new_is_skipped_by_readdir(base, outside, data_dir):
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        os.symlink(outside / "secret.tif", base / "run" / "evil.tif")
        os.makedirs(base / "run" / "sub")
        os.symlink(outside / "secret.tif", base / "run" / "sub" / "evil2.tif")
        add_image(base, "honest.tif")
        r = h.execute("readdir")
        assert r["result"] == "directory refilled queue", r
        assert r["data"]["queued"] == 1
        assert h.session.queue.wait_until_idle(60)
        assert not {"evil.tif", "evil2.tif"} & known_names(h)
        assert outputs_named(base, "evil") == []
    finally:
        h.shutdown()


def test_link_planted_after_new_is_ignored_by_the_watch(base, outside, data_dir):
    """``-w``: the watcher reported the link's creation and the queue integrated its target."""
    h = make_handler(base, watch=True)
    try:
        h.execute("new", *new_request(data_dir))
        os.symlink(outside / "secret.tif", base / "run" / "evil.tif")
        add_image(base, "honest.tif")  # after the link: once it is done, the link's events are past
        assert wait_for(lambda: outputs_named(base / "work", "honest") != [])
        assert h.session.queue.wait_until_idle(60)
        assert "evil.tif" not in known_names(h)
        assert outputs_named(base, "evil") == []
    finally:
        h.shutdown()


def test_feeder_event_for_a_link_to_outside_is_rejected(base, outside, data_dir):
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        os.symlink(outside / "secret.tif", base / "run" / "evil.tif")
        why = h.session.feeder_event("run/evil.tif")
        assert why is not None and "outside" in why
    finally:
        h.shutdown()


def test_queue_folder_swapped_for_a_link_is_refused_not_processed(base, outside, data_dir):
    """Before: the scans walked the link and integrated outside/secret.tif into base/work."""
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        os.rename(base / "run", base / "run.orig")
        os.symlink(outside, base / "run")
        assert h.session.reconcile() == 0
        st = h.stat()
        assert st["error"] and "symbolic link" in st["error"] and "run" in st["error"], st
        r = h.execute("readdir")
        assert r["result"] == "Error" and "symbolic link" in r["data"]["Error"], r
        time.sleep(0.3)  # nothing queued: there is nothing to wait for
        assert h.session.queue.wait_until_idle(10)
        assert "secret.tif" not in known_names(h)
        assert outputs_named(base, "secret") == [] and outputs_named(outside.parent, "secret") == []
        # a feeder event through the swapped folder is refused as well
        assert h.session.feeder_event("run/secret.tif") is not None
        # the folder back in place: the error clears at the next scan
        os.unlink(base / "run")
        os.rename(base / "run.orig", base / "run")
        h.session.reconcile()
        assert h.stat()["error"] is None
    finally:
        h.shutdown()


@pytest.mark.parametrize("fmt", ["chi", "nxcansas", "nxcansas-run"])
def test_output_folder_swapped_for_a_link_is_not_written_through(base, outside, data_dir, fmt):
    """Before: the worker wrote base/work/x.chi (x.h5; the run file base/work/run.h5), i.e.
    into the outside folder."""
    h = make_handler(base, QueueOptions(workers=1, output_format=fmt))
    try:
        h.execute("new", *new_request(data_dir))
        assert (base / "work").is_dir()  # made at new for the file list
        os.rename(base / "work", base / "work.orig")
        os.symlink(outside, base / "work")
        img = add_image(base, "x.tif")
        assert h.session.feeder_event(str(img)) is None
        assert wait_for(lambda: h.stat()["images failed"] == 1), h.stat()
        h.session.stop()  # run files are renamed into place at the end
        assert [p.name for p in outside.iterdir()] == ["secret.tif"]
        failures = h.session.queue.history.failures
        assert "outside" in failures[str(img)], failures
    finally:
        h.shutdown()


@pytest.mark.parametrize("fmt", ["chi", "nxcansas", "nxcansas-run"])
def test_confined_server_queue_writes_its_outputs(base, data_dir, fmt):
    """The checks at use do not get in the way of a queue that nobody attacks."""
    from saxsdog.io.nxcansas import read_nxcansas

    h = make_handler(base, QueueOptions(workers=1, output_format=fmt))
    try:
        h.execute("new", *new_request(data_dir))
        for name in ("a.tif", "b.tif"):
            assert h.session.feeder_event(str(add_image(base, name))) is None
        assert wait_for(lambda: h.stat()["images processed"] == 2), h.stat()
        h.session.stop()
        suffix = {"chi": "*.chi", "nxcansas": "*.h5", "nxcansas-run": "run*.h5"}[fmt]
        written = sorted(p.name for p in (base / "work").glob(suffix))
        assert written, list((base / "work").iterdir())
        if fmt == "nxcansas-run":
            assert len(read_nxcansas(base / "work" / "run.h5")) == 2
        rows = (base / "work" / "results" / "filelist.txt").read_text().splitlines()
        assert len(rows) == 3  # header and one row per image
    finally:
        h.shutdown()


def test_premade_filelist_link_is_refused_at_new(base, outside, data_dir):
    """Before: the server opened the link and appended its rows to the outside file."""
    (base / "work" / "results").mkdir(parents=True)
    target = outside / "stolen.txt"
    target.write_text("precious\n")
    os.symlink(target, base / "work" / "results" / "filelist.txt")
    h = make_handler(base)
    try:
        r = h.execute("new", *new_request(data_dir))
        assert r["result"] == "Error", r
        assert "filelist.txt" in r["data"]["Error"] and "symbolic link" in r["data"]["Error"], r
        assert target.read_text() == "precious\n"
        # removing the link is the fix
        os.unlink(base / "work" / "results" / "filelist.txt")
        assert h.execute("new", *new_request(data_dir))["result"] == "new queue"
    finally:
        h.shutdown()


def test_filelist_link_planted_while_the_server_is_down_is_refused_on_resume(base, outside, data_dir):
    h = make_handler(base)
    h.execute("new", *new_request(data_dir))
    h.shutdown()  # the queue is saved; the attacker plants the link before the restart
    fl = base / "work" / "results" / "filelist.txt"
    fl.unlink()
    target = outside / "stolen.txt"
    target.write_text("precious\n")
    os.symlink(target, fl)
    h2 = make_handler(base)
    try:
        assert h2.restore() is False  # the log says why
        assert target.read_text() == "precious\n"
    finally:
        h2.shutdown()


def test_queue_on_the_base_itself_is_refused_with_the_fix(tmp_path, base, data_dir):
    """Before: accepted, and BASEDIR/../work/results was created (then written) outside."""
    h = make_handler(base)
    try:
        for directory in (["."], []):
            r = h.execute("new", *new_request(data_dir, directory))
            assert r["result"] == "Error", r
            msg = r["data"]["Error"]
            assert "base directory itself" in msg and "outside" in msg and "sub-folder" in msg, msg
            assert "-o" in msg
        assert not (tmp_path / "work").exists()
        assert h.session is None
    finally:
        h.shutdown()


@pytest.mark.parametrize("options", [
    lambda base: QueueOptions(workers=1, out_dir=base / "out"),
    lambda base: QueueOptions(workers=1, relpath="work"),
])
def test_queue_on_the_base_itself_with_outputs_inside_is_accepted(base, data_dir, options):
    h = make_handler(base, options(base))
    try:
        r = h.execute("new", *new_request(data_dir, ["."]))
        assert r["result"] == "new queue", r
    finally:
        h.shutdown()


def test_server_output_folder_outside_the_base_is_refused(tmp_path, base, data_dir):
    h = make_handler(base, QueueOptions(workers=1, out_dir=tmp_path / "elsewhere"))
    try:
        r = h.execute("new", *new_request(data_dir))
        assert r["result"] == "Error" and "outside" in r["data"]["Error"], r
        assert not (tmp_path / "elsewhere").exists()
    finally:
        h.shutdown()


def test_state_folder_swapped_for_a_link_is_not_written_through(base, outside, data_dir):
    """BASEDIR/.saxsdog replaced by a link to an outside folder: the saved queue is not written there."""
    h = make_handler(base)
    try:
        h.execute("new", *new_request(data_dir))
        os.rename(base / ".saxsdog", base / ".saxsdog.orig")
        os.symlink(outside, base / ".saxsdog")
        s = h.session
        r = h.execute("close")
        assert r["result"] == "queue closed", r  # the log says the closing was not recorded
        assert not (outside / "queue.json").exists()
        # and a file there of the queue's name is not removed when the closed queue is forgotten
        (outside / "queue.json").write_text(json.dumps({"queue_id": s.queue_id}))
        assert s.wait_closed(60)
        assert (outside / "queue.json").exists()
    finally:
        h.shutdown()


# -- the checks at use, one by one ------------------------------------------------------

def test_worker_checks_the_image_when_it_opens_it(base, outside, data_dir):
    """A file queued while regular, swapped for a link before a worker reads it, is not read."""
    cal = json.loads((data_dir / "cal.json").read_text())
    calibration = Calibration(cal, base_dir=base / "run", attachments={0: (data_dir / "AAA_integ.msk").read_bytes()})
    img = add_image(base, "x.tif")
    img.unlink()
    os.symlink(outside / "secret.tif", img)
    proc = ImageProcessor(calibration, QueueOptions(confine_to=base))
    [result] = proc.process(ImageTask(str(img), str(base / "run")))
    assert result.error and "outside" in result.error and not result.retryable
    assert not (base / "work").exists()
    # the plain saxsdog command has no base: it reads what the user names
    [free] = ImageProcessor(calibration, QueueOptions()).process(ImageTask(str(img), str(base / "run")))
    assert free.error is None


def test_confined_outputs_are_the_same_files(base, data_dir):
    """Confined, .chi files are written relative to their open folder and the per-frame NXcanSAS
    file is built in a private folder first: the results are those of the plain command."""
    import h5py

    from saxsdog.io.nxcansas import read_nxcansas

    cal = json.loads((data_dir / "cal.json").read_text())
    calibration = Calibration(cal, base_dir=base / "run", attachments={0: (data_dir / "AAA_integ.msk").read_bytes()})
    img = add_image(base, "x.tif")
    for fmt in ("chi", "nxcansas"):
        out = {}
        for label, confine in (("free", None), ("confined", base)):
            options = QueueOptions(output_format=fmt, out_dir=base / label, confine_to=confine)
            [r] = ImageProcessor(calibration, options).process(ImageTask(str(img), str(base / "run")))
            assert r.error is None and r.outputs, r
            out[label] = [Path(o) for o in r.outputs]
        for free, confined in zip(out["free"], out["confined"]):
            assert free.name == confined.name
            if fmt == "chi":
                assert free.read_bytes() == confined.read_bytes()
            else:
                a, b = read_nxcansas(free), read_nxcansas(confined)
                assert [e["name"] for e in a] == [e["name"] for e in b]
                assert all((e["I"] == f["I"]).all() for e, f in zip(a, b))
                with h5py.File(confined) as fh:
                    assert fh.attrs["file_name"] == confined.name
        assert not [p for p in (base / "confined").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_write_output_bytes_replaces_a_link_at_its_name(tmp_path):
    base = tmp_path / "b"
    (base / "out").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, base / "out" / "x.chi")
    write_output_bytes(base / "out" / "x.chi", b"curve", base)
    assert victim.read_text() == "precious"
    assert not (base / "out" / "x.chi").is_symlink() and (base / "out" / "x.chi").read_bytes() == b"curve"


def test_write_output_bytes_refuses_a_folder_leading_outside(tmp_path):
    base, elsewhere = tmp_path / "b", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, base / "out")
    with pytest.raises(OutputRefused, match="outside"):
        write_output_bytes(base / "out" / "x.chi", b"curve", base)
    with pytest.raises(OutputRefused, match="outside"):  # not even a folder below it is made
        write_output_bytes(base / "out" / "deeper" / "x.chi", b"curve", base)
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(OutputRefused):
        check_output_folder(tmp_path, base)
    write_output_bytes(base / "out" / "x.chi", b"curve")  # no base: the user's choice
    assert (elsewhere / "x.chi").read_bytes() == b"curve"


def test_claim_temporary_removes_a_link_planted_at_the_temporary_name(tmp_path):
    """Run files are opened by h5py under a predictable temporary name: a link there is removed."""
    from saxsdog.io.atomic import temporary_name
    from saxsdog.pipeline.naming import claim_temporary

    base = tmp_path / "b"
    base.mkdir()
    victim = tmp_path / "victim.h5"
    victim.write_text("precious")
    tmp = temporary_name(base / "run.h5")
    os.symlink(victim, tmp)
    claim_temporary(base / "run.h5", base)
    assert not tmp.is_symlink() and tmp.is_file() and victim.read_text() == "precious"


def test_open_output_refuses_a_link_at_its_name(tmp_path):
    base = tmp_path / "b"
    base.mkdir()
    inner = base / "inner.txt"
    inner.write_text("")
    os.symlink(inner, base / "filelist.txt")  # even a link inside the base is not followed
    with pytest.raises(OutputRefused, match="symbolic link"):
        open_output(base / "filelist.txt", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644, base)
    os.close(open_output(base / "filelist.txt", os.O_RDWR | os.O_APPEND))  # no base: followed


# -- a real server -----------------------------------------------------------------------

@pytest.mark.slow
def test_real_server_refuses_links_planted_after_new(tmp_path, base, outside, data_dir):
    """The whole attack against a running ``saxsdogserver -w`` with a fast rescan."""
    from server_helpers import Server, start_queue, wait_done

    server = Server(tmp_path, base, ["--rescan", "0.3", "-w"]).start()
    try:
        start_queue(server, data_dir)
        os.symlink(outside / "secret.tif", base / "run" / "evil.tif")
        link_images(base / "template.tif", base / "run", 3, prefix="honest")
        wait_done(server, 3, timeout=90)
        with server.client() as c:
            r = c.request("readdir")
            assert r["result"] == "directory refilled queue" and r["data"]["queued"] == 3, r
            time.sleep(1.0)  # two more rescans
            st = c.request("stat")["data"]["stat"]
            assert st["images failed"] == 0, st
            files = c.request("fileslist")["data"]["fileslist"]
            assert not [f for f in files if "evil" in f], files
            # the queue folder swapped for a link to the outside folder
            os.rename(base / "run", base / "run.orig")
            os.symlink(outside, base / "run")
            r = c.request("readdir")
            assert r["result"] == "Error" and "symbolic link" in r["data"]["Error"], r
            assert wait_for(lambda: "symbolic link" in (c.request("stat")["data"]["stat"]["error"] or ""), 10)
        assert outputs_named(base, "evil") == [] and outputs_named(base, "secret") == []
        assert list(outside.parent.glob("*.chi")) == [] and not (tmp_path / "work").exists()
        # a queue on the base itself, over the wire
        with server.client() as c:
            from saxsdog.protocol.client import build_new_request

            arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), ".")
            r = c.request("new", arg, att)
            assert r["result"] == "Error" and "base directory itself" in r["data"]["Error"], r
        assert not (tmp_path / "work").exists()
    finally:
        server.stop()


@pytest.mark.parametrize("block,field", [("Corrections", "DarkFile"), ("Corrections", "FlatFile"),
                                         ("Background", "File")])
def test_dark_flat_and_background_files_outside_the_base_are_refused(base, outside, data_dir, block, field):
    """The version-2 calibration's files are read by the server as the mask is: never outside
    the base directory (absolute or through '..'), refused naming the field."""
    import numpy as np

    np.save(outside / "dark.npy", np.zeros((1043, 981)))
    h = make_handler(base)
    try:
        for name in (str(outside / "dark.npy"), "../../outside/dark.npy"):
            arg, att = new_request(data_dir)
            arg["calibration"].update({"Version": 2, block: {field: name}})
            r = h.execute("new", arg, att)
            assert r["result"] == "Error", r
            assert f"$.{block}.{field}" in r["data"]["Error"] and "outside" in r["data"]["Error"], r
        assert h.session is None
    finally:
        h.shutdown()
