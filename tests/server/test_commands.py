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


class Service:
    """A CommandService on a free loopback port, serving in a thread, as saxsdogserver runs it."""

    def __init__(self, handler: CommandHandler, **options):
        self.handler = handler
        self.service = CommandService(handler, SECRET, bind="tcp://127.0.0.1:*", **options)
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

class PlainReq:
    """A bare ZeroMQ REQ socket, as the original leash or any client following the original
    manual's protocol uses: one signed JSON request, then one answer."""

    def __init__(self, url: str):
        import zmq

        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)

    def send(self, command: str, argument=None, attachments=()) -> None:
        env = sign_request(command, argument, secret=SECRET, attachments=list(attachments))
        self.sock.send_multipart([json.dumps(env).encode("utf-8"), *attachments])

    def answer(self, timeout: float = 60.0) -> dict | None:
        """The answer, or ``None`` if none came within ``timeout`` seconds."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return json.loads(self.sock.recv_multipart()[0])

    def close(self) -> None:
        self.sock.close(0)


def stat_is_fast(service: Service, command: str) -> None:
    """Three stats from another client, each answered within a second, show ``command`` running."""
    with service.client(timeout=5) as c:
        for _ in range(3):
            resp, seconds = timed(lambda: c.request("stat"))
            assert resp["result"] == "stat" and seconds < 1.0, seconds
            job = resp["data"]["stat"]["job"]
            assert job["command"] == command and job["state"] == "running", job


@pytest.mark.slow
def test_stat_answers_within_a_second_while_new_builds(service, data_dir, gate):
    """A 'new' whose calibration build blocks: stat keeps answering, every client gets 'new queue'."""
    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    answers: dict = {}

    def send_new():
        with service.client(timeout=30) as c:
            answers["new"] = c.request("new", arg, att)

    sender = threading.Thread(target=send_new)
    sender.start()
    assert entered.wait(30), "the build never started"
    stat_is_fast(service, "new")
    second = PlainReq(service.url)  # queued behind the first one, on the same worker
    try:
        second.send("new", arg, att)
        assert second.answer(timeout=0.5) is None  # no "accepted": it waits for its own answer
        stat_is_fast(service, "new")
        opened.set()
        sender.join(60)
        assert answers["new"]["result"] == "new queue", answers
        assert (second.answer() or {}).get("result") == "new queue"
    finally:
        second.close()
    with service.client(timeout=30) as c:
        assert c.request("stat")["data"]["stat"]["job"]["state"] == "done"
    assert service.handler.session is not None and service.service.pending_replies == 0


@pytest.mark.slow
def test_a_plain_req_client_gets_new_queue_while_a_slow_build_runs(service, data_dir, gate):
    """The original leash's protocol: 'new' answers "new queue" however long the build takes
    (never "accepted"), and another client's stat is answered within a second meanwhile."""
    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    plain = PlainReq(service.url)
    try:
        plain.send("new", arg, att)
        assert entered.wait(30), "the build never started"
        assert plain.answer(timeout=1.5) is None  # longer than any "answer within" bound
        stat_is_fast(service, "new")
        assert service.service.pending_replies == 1
        opened.set()
        resp = plain.answer()
        assert resp is not None and resp["result"] == "new queue", resp
        validate_response(resp)
        assert resp["data"]["directory"] == ["run"]
        # the job command, too, answers with the command's own answer
        job_id = service.handler.stat()["job"]["id"]
        plain.send("job", {"id": job_id})
        assert (plain.answer() or {}).get("result") == "new queue"
    finally:
        plain.close()


@pytest.mark.slow
def test_a_plain_req_client_gets_queue_closed_after_a_burst(service, data_dir, base, monkeypatch):
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    plain = PlainReq(service.url)
    try:
        plain.send("new", arg, att)
        assert (plain.answer() or {}).get("result") == "new queue"
        for i in range(6):  # a burst of images
            shutil.copy(base / "template.tif", base / "run" / f"burst_{i:05d}.tif")
        session = service.handler.session
        real_close, release, closing = session.close, threading.Event(), threading.Event()

        def slow_close():
            closing.set()
            assert release.wait(60)
            real_close()

        monkeypatch.setattr(session, "close", slow_close)
        plain.send("close")
        assert closing.wait(30)
        assert plain.answer(timeout=0.5) is None
        stat_is_fast(service, "close")
        release.set()
        resp = plain.answer()
        assert resp is not None and resp["result"] == "queue closed", resp
        assert "queue length" in resp["data"]["stat"]
    finally:
        plain.close()


def test_a_client_that_leaves_while_its_command_runs_breaks_nothing(service, data_dir, gate, caplog):
    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    leaving = PlainReq(service.url)
    leaving.send("new", arg, att)
    assert entered.wait(30), "the build never started"
    deadline = time.monotonic() + 10
    while service.service.pending_replies != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.service.pending_replies == 1
    leaving.close()  # gone before its answer
    deadline = time.monotonic() + 10
    while service.service.pending_replies and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.service.pending_replies == 0
    with caplog.at_level(logging.INFO):
        opened.set()
        with service.client(timeout=30) as c:  # the build finishes; its answer goes nowhere
            assert c.request("new", arg, att)["result"] == "new queue"
            assert c.request("stat")["data"]["stat"]["job"]["state"] == "done"
            assert c.request("close")["result"] == "queue closed"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert service.service._budget.used == 0


@pytest.mark.slow
def test_a_dealer_gets_its_answers_in_order_behind_a_running_command(service, data_dir, gate):
    """A DEALER peer may send again before its answer: the requests behind a running command
    wait their turn (stat from the same connection does not overtake 'new')."""
    import zmq

    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(service.url)
    try:
        for command, argument, attachments in (("new", arg, att), ("stat", None, []), ("get", None, [])):
            env = sign_request(command, argument, secret=SECRET, attachments=attachments)
            dealer.send_multipart([b"", json.dumps(env).encode("utf-8"), *attachments])
        assert entered.wait(30)
        assert not dealer.poll(500)  # stat waits behind 'new' on this connection
        stat_is_fast(service, "new")  # ... but not on another one
        opened.set()
        results = []
        for _ in range(3):
            assert dealer.poll(60_000)
            delimiter, body = dealer.recv_multipart()
            results.append(json.loads(body)["result"])
        assert results == ["new queue", "stat", "cal"]  # "cal": the answer to get
        assert service.service._budget.used == 0
    finally:
        dealer.close(0)


def test_a_dealer_cannot_pile_up_requests_behind_a_running_command(service, data_dir, gate):
    import zmq

    from saxsdog.server.zmq_service import MAX_BACKLOG

    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(service.url)
    try:
        env = sign_request("new", arg, secret=SECRET, attachments=att)
        dealer.send_multipart([b"", json.dumps(env).encode("utf-8"), *att])
        assert entered.wait(30)
        for _ in range(MAX_BACKLOG + 1):
            dealer.send_multipart([b"", json.dumps(sign_request("stat", None, secret=SECRET)).encode()])
        assert dealer.poll(10_000), "the request over the backlog limit was not refused at once"
        refused = json.loads(dealer.recv_multipart()[1])
        assert refused["result"] == "Error" and "requests already wait for 'new'" in refused["data"]["Error"]
        opened.set()
        results = []
        for _ in range(MAX_BACKLOG + 1):
            assert dealer.poll(60_000)
            results.append(json.loads(dealer.recv_multipart()[1])["result"])
        assert results == ["new queue"] + ["stat"] * MAX_BACKLOG
    finally:
        dealer.close(0)


@pytest.mark.slow
def test_a_command_running_longer_than_the_reply_bound_gets_an_error(base, data_dir, gate):
    entered, opened = gate
    h = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    service = Service(h, reply_within=1.0)
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    plain = PlainReq(service.url)
    try:
        plain.send("new", arg, att)
        resp = plain.answer(timeout=30)
        assert resp is not None and resp["result"] == "Error", resp
        assert "'new' is still running after 1 s" in resp["data"]["Error"]
        opened.set()
        with service.client(timeout=30) as c:  # the late answer does not end up on the next request
            plain.send("stat")
            assert (plain.answer() or {}).get("result") == "stat"
            assert c.request("close")["result"] == "queue closed"
    finally:
        plain.close()
        service.close()
        h.shutdown()


def test_stop_answers_pending_replies(base, data_dir, gate):
    """A service stopped while a command runs answers its client (never leaves it hanging)."""
    entered, opened = gate
    h = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    service = Service(h, shutdown_grace=0.2)
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")
    plain = PlainReq(service.url)
    try:
        plain.send("new", arg, att)
        assert entered.wait(30)
        service.close()
        assert not service.thread.is_alive()
        resp = plain.answer(timeout=10)
        assert resp is not None and resp["result"] == "Error", resp
        assert "shutting down while 'new' runs" in resp["data"]["Error"]
    finally:
        plain.close()
        opened.set()
        h.shutdown()


@pytest.mark.slow
def test_the_leash_client_waits_for_a_slow_command_as_long_as_the_server_answers_stat(service, data_dir, gate):
    """A build longer than the client's timeout: the answer is still "new queue" (the client
    checks with stat on a second connection that the server is alive)."""
    entered, opened = gate
    arg, att = build_new_request(str(data_dir / "cal.json"), str(data_dir / "AAA_integ.msk"), "run")

    def open_late():  # the build takes 1.5 s: longer than the client's timeout
        entered.wait(30)
        time.sleep(1.5)
        opened.set()

    threading.Thread(target=open_late, daemon=True).start()
    with service.client(timeout=0.4) as c:
        resp, seconds = timed(lambda: c.request("new", arg, att))
    assert resp["result"] == "new queue" and seconds > 1.5, (resp, seconds)


@pytest.mark.slow
def test_the_leash_client_notices_a_server_that_never_answers_a_slow_command():
    import zmq

    mute = zmq.Context.instance().socket(zmq.ROUTER)  # takes requests, answers none
    mute.setsockopt(zmq.LINGER, 0)
    port = mute.bind_to_random_port("tcp://127.0.0.1")
    try:
        with LeashClient(f"tcp://127.0.0.1:{port}", SECRET, timeout=0.3, command_timeout=600) as c:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match="no answer from the saxsdog server"):
                c.request("new", {"calibration": {}, "directory": ["."]})
            assert time.monotonic() - t0 < 5
    finally:
        mute.close(0)


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
    plain = PlainReq(service.url)
    try:
        plain.send("mergedata", {"mergeconf": {"LogDataTables": []}})
        assert started.wait(10)
        stat_is_fast(service, "mergedata")
        release.set()
        final = plain.answer()
    finally:
        plain.close()
    assert final is not None and final["result"] == "Error" and "merge gave up" in final["data"]["Error"]


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
