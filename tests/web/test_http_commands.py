"""Every command of the table over the web leash's /api/command, like over ZeroMQ: the
calibration tools, the command list for the page, slow commands, hostile requests."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time

import pytest

from webleash_helpers import calibration_request, command, login

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")


def test_the_page_gets_the_command_table(client):
    from saxsdog.protocol.commands import COMMANDS

    login(client)
    listed = command(client, "commands")["data"]["commands"]
    assert [c["name"] for c in listed] == [c.name for c in COMMANDS]
    assert next(c for c in listed if c["name"] == "listdir")["result"] == "dircontent"


@pytest.mark.slow
def test_calibration_tools_as_commands(client, data_dir):
    login(client)
    cal = json.loads((data_dir / "cal.json").read_text())
    assert command(client, "validate", {"calibration": cal}) == {"result": "validate", "data": {"problems": []}}
    text = "INFO: Refined sample to detector distance =     2000.5 mm\n"
    got = command(client, "convertfit2d", {"text": text, "template": cal})
    assert got["result"] == "calibration"
    assert got["data"]["calibration"]["Geometry"]["DedectorDistanceMM"] == pytest.approx(2000.5)
    mask = (data_dir / "AAA_integ.msk").read_bytes()
    png = command(client, "maskpreview", {"calibration": cal, "filenames": ["AAA_integ.msk"]}, [mask])
    assert base64.b64decode(png["data"]["png"])[:4] == b"\x89PNG"
    bad = command(client, "maskpreview", {"calibration": cal, "index": "first"})
    assert bad["result"] == "Error" and "$.argument.index" in bad["data"]["Error"]


def test_stat_answers_while_new_builds_over_http(client, handler, data_dir, monkeypatch):
    from saxsdog.server import session as session_module

    opened, entered = threading.Event(), threading.Event()
    real = session_module.Calibration

    def slow(*args, **kwargs):
        entered.set()
        opened.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "Calibration", slow)
    login(client)
    arg, att = calibration_request(data_dir)
    answer = {}

    def send_new():  # the in-process client serves requests of several threads at once
        answer["new"] = command(client, "new", arg, att)

    sender = threading.Thread(target=send_new)
    sender.start()
    try:
        assert entered.wait(30)
        t0 = time.monotonic()
        assert command(client, "stat")["data"]["stat"]["job"]["state"] == "running"
        assert time.monotonic() - t0 < 1.0
    finally:
        opened.set()
        sender.join(60)
    assert answer["new"]["result"] == "new queue"  # the web leash waits for the answer


def test_hostile_commands_over_http(client, caplog):
    login(client)
    with caplog.at_level(logging.DEBUG):
        resp = command(client, "z" * 500_000)
        assert resp["result"] == "Error" and "(500000 characters)" in resp["data"]["Error"]
        assert len(json.dumps(resp)) < 2000
        resp = command(client, "plotdata", {"since": 10 ** 4000})
        assert resp["result"] == "Error" and "integer too large" in resp["data"]["Error"]
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info]
