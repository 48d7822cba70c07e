"""Feeder PUB/SUB, the simulator, and the leash client against in-test servers (127.0.0.1 only)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import zmq

from saxsdog.feeder import Feeder, announce_file, close_feeders, list_images, simulate
from saxsdog.protocol.client import (LeashClient, ServerError, build_new_request,
                                     directory_components, raise_for_error)
from saxsdog.protocol.messages import (ProtocolError, decode_request, encode_response, error_response,
                                       ok_response, validate_request)
from saxsdog.protocol.signing import AuthError, ReplayCache, verify_request
from saxsdog.testing import free_port

SECRET = "feeder-client-test-secret-0123456789-abcdefghijkl"
RECV_MS = 10_000  # generous bound for every receive; tests normally take milliseconds


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _subscriber(ctx, endpoint):
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def _recv_json(sub):
    assert sub.poll(RECV_MS, zmq.POLLIN), "no message arrived"
    frames = sub.recv_multipart()
    assert len(frames) == 1
    return json.loads(frames[0].decode("utf-8"))


# --------------------------------------------------------------------------- feeder

def test_announcements_reach_a_subscriber(ctx):
    with Feeder("tcp://127.0.0.1:*", context=ctx) as feeder:
        assert feeder.endpoint.startswith("tcp://127.0.0.1:")
        sub = _subscriber(ctx, feeder.endpoint)
        assert feeder.wait_for_subscriber(RECV_MS / 1000)
        paths = ["/data/run/img_00001.tif", "/data/run/img_00002.tif", "/data/ü/ä.cbf"]
        for p in paths:
            sent = feeder.announce(p)
            assert json.loads(sent) == {"command": "new file", "argument": p}
        got = [_recv_json(sub) for _ in paths]
        assert got == [{"command": "new file", "argument": p} for p in paths]
        assert feeder.announced == 3
        sub.close()


def test_feeder_binds_loopback_by_default():
    from saxsdog.feeder import DEFAULT_FEEDER_BIND, bind_url

    assert DEFAULT_FEEDER_BIND == "tcp://127.0.0.1:5555"
    assert bind_url(6000) == "tcp://127.0.0.1:6000"
    assert bind_url(6000, public=True) == "tcp://*:6000"


def test_feeder_bind_failure_is_clear(ctx):
    with Feeder("tcp://127.0.0.1:*", context=ctx) as first:
        with pytest.raises(OSError, match="cannot bind " + first.endpoint):
            Feeder(first.endpoint, context=ctx)


def test_announce_file_for_transfer_scripts(ctx):
    sub = _subscriber(ctx, "inproc://saxsdog-announce-test")  # connect-before-bind is fine in-process
    try:
        announce_file("/beamline/a.tif", url="inproc://saxsdog-announce-test", context=ctx, wait=10)
        announce_file("/beamline/b.tif", url="inproc://saxsdog-announce-test", context=ctx)
        assert [_recv_json(sub)["argument"] for _ in range(2)] == ["/beamline/a.tif", "/beamline/b.tif"]
    finally:
        close_feeders()
        sub.close()


def _image_dir(tmp_path: Path, n: int = 5) -> Path:
    src = tmp_path / "images"
    (src / "sub").mkdir(parents=True)
    for i in range(n):
        folder = src if i < n - 1 else src / "sub"
        (folder / f"img_{i:05d}.tif").write_bytes(bytes([i]) * 64)
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden.tif").write_bytes(b"x")
    return src


def test_simulator_replays_a_directory_at_a_rate(ctx, tmp_path):
    src = _image_dir(tmp_path)
    images = list_images(src)
    assert [p.name for p in images] == [f"img_{i:05d}.tif" for i in range(5)]
    with Feeder("tcp://127.0.0.1:*", context=ctx) as feeder:
        sub = _subscriber(ctx, feeder.endpoint)
        assert feeder.wait_for_subscriber(RECV_MS / 1000)
        shown = []
        n = simulate(src, feeder, rate=200.0, on_announce=shown.append)
        assert n == 5
        got = [_recv_json(sub)["argument"] for _ in range(n)]
        assert got == shown == [str(p.resolve()) for p in images]
        sub.close()


def test_simulator_copies_atomically_and_announces_the_copies(ctx, tmp_path):
    src = _image_dir(tmp_path, 3)
    dest = tmp_path / "detector"
    with Feeder("tcp://127.0.0.1:*", context=ctx) as feeder:
        sub = _subscriber(ctx, feeder.endpoint)
        assert feeder.wait_for_subscriber(RECV_MS / 1000)
        n = simulate(src, feeder, rate=0, copy_to=dest)
        got = [Path(_recv_json(sub)["argument"]) for _ in range(n)]
        sub.close()
    assert n == 3
    for p in got:
        assert p.is_relative_to(dest.resolve()) and p.is_file()
        assert p.read_bytes() == (src / p.relative_to(dest.resolve())).read_bytes()
    assert not [p for p in dest.rglob("*") if p.name.endswith(".part")]


def test_simulator_loops_until_count_and_can_be_relative(ctx, tmp_path):
    src = _image_dir(tmp_path, 2)
    with Feeder("tcp://127.0.0.1:*", context=ctx) as feeder:
        shown = []
        n = simulate(src, feeder, rate=0, loop=True, count=5, relative_to=tmp_path,
                     on_announce=shown.append)
    assert n == 5
    assert shown == ["images/img_00000.tif", "images/sub/img_00001.tif"] * 2 + ["images/img_00000.tif"]


def test_simulator_stops_on_event(ctx, tmp_path):
    src = _image_dir(tmp_path, 2)
    stop = threading.Event()
    with Feeder("tcp://127.0.0.1:*", context=ctx) as feeder:
        n = simulate(src, feeder, rate=0, loop=True, stop=stop,
                     on_announce=lambda p: stop.set() if feeder.announced >= 7 else None)
    assert n == 7


def test_simulator_needs_images(ctx, tmp_path):
    with Feeder("tcp://127.0.0.1:*", context=ctx) as feeder:
        with pytest.raises(FileNotFoundError, match="no image files"):
            simulate(tmp_path, feeder)
        with pytest.raises(FileNotFoundError, match="not a directory"):
            simulate(tmp_path / "missing", feeder)


def test_feeder_command_line_announces(ctx, tmp_path, capsys):
    from saxsdog.cli.feeder import main

    sub = _subscriber(zmq.Context.instance(), "inproc://saxsfeeder-cli-test")
    try:
        code = main(["--bind", "inproc://saxsfeeder-cli-test", "--announce", "/d/a.tif", "/d/b.tif",
                     "--wait-subscriber", "10"], context=zmq.Context.instance())
        assert code == 0
        assert [_recv_json(sub)["argument"] for _ in range(2)] == ["/d/a.tif", "/d/b.tif"]
        out = capsys.readouterr()
        assert out.out.split() == ["/d/a.tif", "/d/b.tif"]
        assert "2 file(s) announced" in out.err
    finally:
        sub.close()


def test_a_feeder_process_that_exits_at_once_still_delivers(ctx):
    """saxsfeeder --announce binds, waits for the subscriber, sends and exits: nothing is lost."""
    import subprocess
    import sys

    port = free_port()
    sub = _subscriber(ctx, f"tcp://127.0.0.1:{port}")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "saxsdog.cli.feeder", "--bind", f"tcp://127.0.0.1:{port}",
             "--announce", "/d/x.tif", "/d/y.tif", "--wait-subscriber", "20", "-q"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "no subscriber" not in proc.stderr
        assert [_recv_json(sub)["argument"] for _ in range(2)] == ["/d/x.tif", "/d/y.tif"]
    finally:
        sub.close()


def test_feeder_command_line_usage_errors(capsys):
    from saxsdog.cli.feeder import main

    with pytest.raises(SystemExit) as info:
        main(["--announce", "x", "--loop"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# --------------------------------------------------------------------------- leash client

class StubServer:
    """A ROUTER standing in for saxsdogserver: verifies requests and echoes them back."""

    def __init__(self, ctx, secret=SECRET, ignore_first=0):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.url = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.secret = secret
        self.ignore = ignore_first
        self.replay = ReplayCache()
        self.stop = threading.Event()
        self.seen: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _answer(self, frames):
        try:
            env, attachments = decode_request(frames)
            validate_request(env)
            verify_request(env, self.secret, attachments, self.replay)
        except (ProtocolError, AuthError) as exc:
            return error_response(str(exc))
        self.seen.append(env)
        return ok_response("echo", {"command": env["command"], "argument": env.get("argument"),
                                    "sizes": [len(a) for a in attachments],
                                    "first": attachments[0].decode("latin-1") if attachments else None})

    def _run(self):
        while not self.stop.is_set():
            if not self.sock.poll(50, zmq.POLLIN):
                continue
            ident, empty, *frames = self.sock.recv_multipart()
            if self.ignore > 0:
                self.ignore -= 1
                continue
            self.sock.send_multipart([ident, empty] + encode_response(self._answer(frames)))

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close(linger=0)


@pytest.fixture
def server(ctx):
    s = StubServer(ctx)
    yield s
    s.close()


def test_client_round_trip_with_attachment(ctx, server):
    mask = bytes(range(256)) * 10
    with LeashClient(server.url, SECRET, timeout=10, context=ctx) as client:
        resp = client.request("new", {"calibration": {"Title": "t"}, "directory": ["data"],
                                      "filenames": ["m.msk"]}, [mask])
        assert resp["result"] == "echo"
        assert resp["data"]["command"] == "new"
        assert resp["data"]["sizes"] == [len(mask)]
        assert resp["data"]["first"] == mask.decode("latin-1")
        assert client.call("stat")["data"]["command"] == "stat"
    assert len(server.seen) == 2


def test_client_with_wrong_secret_gets_an_error(ctx, server):
    with LeashClient(server.url, "not-the-right-secret-at-all", timeout=10, context=ctx) as client:
        resp = client.request("stat")
        assert resp["result"] == "Error" and "wrong signature" in resp["data"]["Error"]
        with pytest.raises(ServerError, match="wrong signature"):
            raise_for_error(resp)
    assert server.seen == []


def test_client_times_out_when_nobody_answers(ctx):
    url = f"tcp://127.0.0.1:{free_port()}"
    client = LeashClient(url, SECRET, timeout=0.2, context=ctx)
    with pytest.raises(TimeoutError, match=f"no answer from the saxsdog server at {url} within 0.2 s"):
        client.request("stat")
    with pytest.raises(TimeoutError):  # the socket was recreated: a second request is possible
        client.request("stat")
    client.close()


def test_client_recovers_after_a_lost_answer(ctx):
    stub = StubServer(ctx, ignore_first=1)
    try:
        with LeashClient(stub.url, SECRET, timeout=0.3, context=ctx) as client:
            with pytest.raises(TimeoutError):
                client.request("stat")
            assert client.request("stat", {})["result"] == "echo"  # lazy pirate: fresh socket
    finally:
        stub.close()


def test_client_rejects_invalid_responses(ctx):
    rep = ctx.socket(zmq.REP)
    rep.bind("tcp://127.0.0.1:*")
    url = rep.getsockopt(zmq.LAST_ENDPOINT).decode()

    def answer():
        if rep.poll(RECV_MS, zmq.POLLIN):
            rep.recv_multipart()
            rep.send(b'{"result": "stat", "data": {"stat": {"queue length": "many"}}}')

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    with LeashClient(url, SECRET, timeout=10, context=ctx) as client:
        with pytest.raises(ProtocolError, match=r"invalid response at \$\.data\.stat"):
            client.request("stat")
    t.join(timeout=10)
    rep.close(linger=0)


def test_client_never_shows_the_secret(ctx):
    client = LeashClient("tcp://127.0.0.1:1", SECRET, timeout=0.1, context=ctx)
    assert SECRET not in repr(client) and SECRET not in str(client)
    with pytest.raises(TimeoutError) as info:
        client.request("stat")
    assert SECRET not in str(info.value)
    client.close()
    with pytest.raises(ValueError, match="empty"):
        LeashClient("tcp://127.0.0.1:1", "")
    with pytest.raises(ValueError, match="not a ZeroMQ URL"):
        LeashClient("localhost:7777", SECRET)


def test_directory_components():
    assert directory_components("data/run42/") == ["data", "run42"]
    assert directory_components(".") == ["."]
    assert directory_components("") == ["."]
    assert directory_components("./a//b") == ["a", "b"]
    for bad in ("/abs/path", "../up", "a/../../b"):
        with pytest.raises(ValueError, match="relative to the server's base directory|'\\.\\.'"):
            directory_components(bad)


def test_build_new_request_attaches_masks(tmp_path):
    (tmp_path / "second.msk").write_bytes(b"second")
    (tmp_path / "given.tif").write_bytes(b"given")
    cal = {"Masks": [{"MaskFile": "orig.msk"}, {"MaskFile": "second.msk"}, {"MaskFile": ""}]}
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    argument, frames = build_new_request(str(tmp_path / "cal.json"), str(tmp_path / "given.tif"),
                                         "data/run1", validate=False)
    assert argument == {"calibration": cal, "directory": ["data", "run1"],
                        "filenames": ["given.tif", "second.msk", ""]}
    assert frames == [b"given", b"second", b""]
    with pytest.raises(FileNotFoundError, match="mask file .*missing.msk does not exist"):
        build_new_request(str(tmp_path / "cal.json"), str(tmp_path / "missing.msk"), ".",
                          validate=False)
