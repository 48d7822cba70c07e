"""The command table served by the handler over ZeroMQ: dispatch from the table, the
calibration tools on both transports, slow commands off the answering thread, and hostile
requests (huge integers, huge command names, out of memory)."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import shutil
import threading
import time

import pytest

from saxsdog.errors import SaxsdogError
from saxsdog.pipeline import QueueOptions
from saxsdog.protocol.client import LeashClient, build_new_request
from saxsdog.protocol.commands import COMMANDS as TABLE
from saxsdog.protocol.messages import encode_request, validate_response
from saxsdog.protocol.signing import sign_request
from saxsdog.server import session as session_module
from saxsdog.server.handler import ANSWER_WITHIN, CommandHandler
from saxsdog.server.zmq_service import CommandService

SECRET = secrets.token_hex(32)


@pytest.fixture
def base(tmp_path, data_dir):
    b = tmp_path / "base"
    (b / "run").mkdir(parents=True)
    shutil.copy(data_dir / "buf1_00000.tif", b / "template.tif")
    return b


class Service:
    """A CommandService on a free loopback port, serving in a thread, as saxsdogserver runs it."""

    def __init__(self, handler: CommandHandler):
        self.handler = handler
        self.service = CommandService(handler, SECRET, bind="tcp://127.0.0.1:*")
        self.url = self.service.endpoint
        self.thread = threading.Thread(target=self.service.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
        self.thread.start()

    def client(self, **kw) -> LeashClient:
        return LeashClient(self.url, SECRET, **kw)

    def raw(self, frames: list[bytes]) -> dict:
        import zmq

        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.url)
        try:
            sock.send_multipart(frames)
            assert sock.poll(20_000), "no answer"
            return json.loads(sock.recv_multipart()[0])
        finally:
            sock.close(0)

    def close(self) -> None:
        self.service.stop()
        self.thread.join(5)


@pytest.fixture
def service(base):
    h = CommandHandler(base, QueueOptions(workers=1, keep_curves=True), rescan_interval=0,
                       answer_within=ANSWER_WITHIN)
    s = Service(h)
    yield s
    s.close()
    h.shutdown()


@pytest.fixture
def gate(monkeypatch):
    """Make building a queue's calibration wait until the test opens the gate."""
    opened = threading.Event()
    entered = threading.Event()
    real = session_module.Calibration

    def slow_calibration(*args, **kwargs):
        entered.set()
        assert opened.wait(60), "the test never opened the gate"
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "Calibration", slow_calibration)
    yield entered, opened
    opened.set()


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


# --------------------------------------------------------------------------- the table

def test_every_command_has_its_method_and_every_method_its_command():
    methods = {name[4:] for name in dir(CommandHandler) if name.startswith("cmd_")}
    assert methods == {c.name for c in TABLE}
    for c in TABLE:
        assert c.runs in ("inline", "serial", "parallel"), c
        assert callable(getattr(CommandHandler, c.method))


def test_results_come_from_the_table(base):
    h = CommandHandler(base, rescan_interval=0)
    try:
        by_name = {c.name: c for c in TABLE}
        for name in ("stat", "listdir", "commands", "validate"):
            arg = {"calibration": {}} if name == "validate" else None
            assert h.execute(name, arg)["result"] == by_name[name].result
        assert h.execute("listdir")["result"] == "dircontent"
    finally:
        h.shutdown()


def test_the_commands_command_lists_the_table(service):
    with service.client() as c:
        resp = c.call("commands")
    validate_response(resp)
    listed = {d["name"]: d for d in resp["data"]["commands"]}
    assert list(listed) == [c.name for c in TABLE]
    assert listed["new"]["aliases"] == ["new queue"] and listed["new"]["result"] == "new queue"
    assert listed["new"]["argument"]["required"] == ["calibration", "directory"]
    assert listed["maskpreview"]["usage"] == "CAL.json [MASK] [IMAGE]"


# --------------------------------------------------------------------------- tools over ZeroMQ

@pytest.mark.slow
def test_calibration_tools_over_zeromq(service, data_dir, base):
    cal = json.loads((data_dir / "cal.json").read_text())
    with service.client() as c:
        assert c.call("validate", {"calibration": cal})["data"]["problems"] == []
        bad = dict(cal, Geometry=dict(cal["Geometry"], DedectorDistanceMM=-5))
        problems = c.call("validate", {"calibration": bad})["data"]["problems"]
        assert [p["path"] for p in problems] == ["$.Geometry.DedectorDistanceMM"]
        text = ("INFO: Refined Beam centre =      387.772     808.370 (pixels)\n"
                "INFO: Refined sample to detector distance =     2000.5 mm\n"
                "INFO: Refined wavelength =      1.00000 Angstroms\n")
        converted = c.call("convertfit2d", {"text": text, "template": cal})["data"]["calibration"]
        assert converted["Geometry"]["DedectorDistanceMM"] == pytest.approx(2000.5)
        assert converted["Masks"] == cal["Masks"]
        err = c.request("convertfit2d", {"text": "nothing useful"})
        assert err["result"] == "Error" and err["data"]["Error"]
        mask = (data_dir / "AAA_integ.msk").read_bytes()
        resp = c.call("maskpreview", {"calibration": cal, "image": "template.tif", "filenames": ["AAA_integ.msk"]},
                      [mask])
        png = base64.b64decode(resp["data"]["png"])
        assert resp["result"] == "maskpreview" and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        outside = c.request("maskpreview", {"calibration": cal, "image": "../../etc/passwd"})
        assert outside["result"] == "Error" and "outside" in outside["data"]["Error"]


@pytest.mark.slow
def test_poni_import_over_zeromq(service, data_dir):
    pytest.importorskip("pyFAI")
    from saxsdog.io.poni import calibration_to_poni_text

    cal = json.loads((data_dir / "cal.json").read_text())
    with service.client() as c:
        geo = c.call("convertponi", {"text": calibration_to_poni_text(cal), "template": cal})["data"]["calibration"]
    assert geo["Geometry"]["DedectorDistanceMM"] == pytest.approx(1031.657, rel=1e-6)


def test_commands_without_attachments_refuse_them(service):
    with service.client() as c:
        resp = c.request("stat", {}, [b"junk"])
    assert resp["result"] == "Error" and "'stat' takes no attachments" in resp["data"]["Error"]


# --------------------------------------------------------------------------- slow work off the command thread

@pytest.mark.slow
def test_stat_answers_within_a_second_while_new_builds(service, data_dir, gate):
    """A 'new' whose calibration build blocks: stat keeps answering, the leash gets 'new queue'."""
    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    answers: dict = {}

    def send_new():
        with service.client(timeout=30) as c:
            answers["new"] = c.request("new", arg, att)

    sender = threading.Thread(target=send_new)
    sender.start()
    assert entered.wait(30), "the build never started"
    with service.client(timeout=5) as c:
        for _ in range(3):
            resp, seconds = timed(lambda: c.request("stat"))
            assert resp["result"] == "stat" and seconds < 1.0, seconds
            job = resp["data"]["stat"]["job"]
            assert job["command"] == "new" and job["state"] == "running"
        raw = c.request("new", arg, att, follow_jobs=False)  # queued behind the first one
        assert raw["result"] == "accepted" and raw["data"]["job"]["command"] == "new"
    opened.set()
    sender.join(60)
    assert answers["new"]["result"] == "new queue", answers
    with service.client(timeout=30) as c:
        second = c.request("job", {"id": raw["data"]["job"]["id"]})
        assert second["result"] == "new queue", second
        assert c.request("stat")["data"]["stat"]["job"]["state"] == "done"
    assert service.handler.session is not None


def test_in_process_execute_waits_for_the_answer_by_default(base, data_dir, gate):
    entered, opened = gate
    h = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    try:
        arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
        pending = h.execute("new", arg, att, wait=0.05)
        assert pending["result"] == "accepted"
        stat, seconds = timed(lambda: h.execute("stat"))
        assert stat["result"] == "stat" and seconds < 1.0
        opened.set()
        deadline = time.monotonic() + 60
        answer = pending
        while answer["result"] == "accepted" and time.monotonic() < deadline:
            answer = h.execute("job", {"id": pending["data"]["job"]["id"]})
        assert answer["result"] == "new queue", answer
        assert h.execute("close")["result"] == "queue closed"  # after 'new', on the same worker
        assert h.execute("job", {"id": "ffff"})["data"]["Error"].startswith("no job 'ffff'")
    finally:
        h.shutdown()


def test_a_blocking_merge_does_not_block_stat(service, monkeypatch):
    pytest.importorskip("pandas")
    import saxsdog.merge

    release = threading.Event()
    started = threading.Event()

    def blocking_merge(*args, **kwargs):
        started.set()
        release.wait(60)
        raise SaxsdogError("merge gave up")

    monkeypatch.setattr(saxsdog.merge, "merge", blocking_merge)
    with service.client(timeout=5) as c:
        accepted, seconds = timed(lambda: c.request("mergedata", {"mergeconf": {"LogDataTables": []}},
                                                    follow_jobs=False))
        assert accepted["result"] == "accepted" and seconds < 1.0 + ANSWER_WITHIN
        assert started.wait(10)
        for _ in range(3):
            resp, seconds = timed(lambda: c.request("stat"))
            assert resp["result"] == "stat" and seconds < 1.0
        release.set()
        final = c.request("job", {"id": accepted["data"]["job"]["id"]})
    assert final["result"] == "Error" and "merge gave up" in final["data"]["Error"]


def test_a_slow_readdir_runs_off_the_command_thread(base, data_dir, monkeypatch):
    h = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0, answer_within=0.2)
    try:
        arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
        assert h.execute("new", arg, att, wait=None)["result"] == "new queue"
        release = threading.Event()
        monkeypatch.setattr(h.session, "readdir", lambda: release.wait(60) and 0)
        pending = h.execute("readdir")
        assert pending["result"] == "accepted"
        stat, seconds = timed(lambda: h.execute("stat"))
        assert seconds < 1.0 and stat["data"]["stat"]["job"]["command"] == "readdir"
        release.set()
        done = h.execute("job", {"id": pending["data"]["job"]["id"]})
        assert done["result"] == "directory refilled queue", done
    finally:
        h.shutdown()


def test_out_of_memory_in_new_is_a_clear_error(service, data_dir, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(session_module, "Calibration", no_memory)
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    with service.client(timeout=30) as c:
        resp = c.request("new", arg, att)
        assert resp["result"] == "Error"
        assert "not enough memory for 'new'" in resp["data"]["Error"]
        assert "Geometry.Imagesize" in resp["data"]["Error"]
        assert c.request("stat")["result"] == "stat"  # still serving


# --------------------------------------------------------------------------- hostile requests

def test_a_5000_digit_integer_is_refused_clearly(service, caplog):
    env = sign_request("stat", {}, secret=SECRET)
    frame = encode_request(env)[0][:-1] + b', "x": ' + b"7" * 5000 + b"}"
    with caplog.at_level(logging.DEBUG):
        resp = service.raw([frame])
    assert resp["result"] == "Error"
    assert "integer has more than 4300 digits" in resp["data"]["Error"]
    assert "internal error" not in resp["data"]["Error"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    huge = sign_request("plotdata", {"since": 10 ** 4000}, secret=SECRET)
    resp = service.raw(encode_request(huge))
    assert resp["result"] == "Error" and "$.argument.since: integer too large" in resp["data"]["Error"]
    with service.client() as c:
        assert c.request("stat")["result"] == "stat"


def test_a_500k_character_command_is_not_echoed_or_logged_whole(service, caplog):
    name = "q" * 500_000
    with caplog.at_level(logging.DEBUG):
        resp = service.raw(encode_request(sign_request(name, {}, secret=SECRET)))
    assert resp["result"] == "Error" and "unknown command" in resp["data"]["Error"]
    assert len(json.dumps(resp)) < 2000 and "(500000 characters)" in resp["data"]["Error"]
    assert caplog.records and all(len(r.getMessage()) < 2000 for r in caplog.records)


def test_http_command_has_no_fake_envelope(base):
    """/api/command checks the argument with the table's schema, not a zero-nonce envelope."""
    import inspect

    from saxsdog.server.http import routes

    source = inspect.getsource(routes)
    assert '"0" * 32' not in source and "validate_request" not in source
    assert "handler.execute" in inspect.getsource(routes.command)


@pytest.mark.slow
def test_a_stuck_command_does_not_keep_the_server_from_exiting(tmp_path):
    """A queue-changing command stuck for good (a close waiting on a frozen worker) must not
    hold up the process at exit (the interpreter joins ThreadPoolExecutor threads)."""
    import subprocess
    import sys

    script = (
        "import sys, threading\n"
        "from saxsdog.server.handler import CommandHandler\n"
        "h = CommandHandler(sys.argv[1], rescan_interval=0, answer_within=0.1)\n"
        "h.cmd_close = lambda arg, att: threading.Event().wait()  # never returns\n"
        "print(h.execute('close')['result'], flush=True)\n"
        "h.shutdown(timeout=0.2)\n"
        "print('shut down', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["accepted", "shut", "down"]
