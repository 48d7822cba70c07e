"""``saxsleash`` in-process against a stub saxsdog server on 127.0.0.1."""

from __future__ import annotations

import json
import threading

import pytest
import zmq

from saxsdog.cli.leash import extract_curve, format_response, main
from saxsdog.protocol.messages import (ProtocolError, canonical_command, decode_request,
                                       encode_response, error_response, ok_response,
                                       validate_request)
from saxsdog.protocol.netconf import make_entry, write_network
from saxsdog.protocol.signing import AuthError, ReplayCache, verify_request

STAT = {"time interval": 0.8776, "queue length": 0, "frames per sec": 10.255,
        "images processed": 235, "pics": 9, "images failed": 1}
CURVE = [[0.1 * i for i in range(1, 51)], [1000.0 / i for i in range(1, 51)],
         [3.0 + 0.01 * i for i in range(1, 51)]]
CAL = {"Title": "test", "Wavelength": 1.54, "Masks": [{"MaskFile": "m.msk"}],
       "Geometry": {"BeamCenter": [10.0, 12.0], "PixelSizeMicroM": [172.0],
                    "DedectorDistanceMM": 1000.0, "Imagesize": [40, 50]}}


class StubServer:
    """Answers like saxsdogserver would, after verifying each request."""

    def __init__(self, secret, plot_empty=False):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.url = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.secret = secret
        self.plot_empty = plot_empty
        self.replay = ReplayCache()
        self.requests: list[tuple[dict, list[bytes]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def handle(self, env, attachments):
        command = canonical_command(env["command"])
        if command == "stat":
            return ok_response("stat", {"stat": STAT})
        if command == "plot":
            if self.plot_empty == "Empty":  # the original's answer before the first image
                return ok_response("Empty", {"stat": STAT})
            if self.plot_empty:  # or a "plot data" answer without points
                return ok_response("plot data", {"filename": "", "stat": STAT, "array": [[], [], []]})
            return ok_response("plot data", {"filename": "/data/run42/img_00042.tif", "stat": STAT,
                                             "array": CURVE})
        if command == "listdir":
            return ok_response("dircontent", {"directory": env["argument"]["directory"],
                                              "dircontent": [{"isdir": False, "path": "b.tif"},
                                                             {"isdir": True, "path": "run1"}]})
        if command == "new":
            return ok_response("new queue", {"cal": env["argument"]["calibration"]})
        return error_response(f"no queue is running ({command} ignored)")

    def _run(self):
        while not self.stop.is_set():
            if not self.sock.poll(50, zmq.POLLIN):
                continue
            frames = self.sock.recv_multipart()
            try:
                env, attachments = decode_request(frames)
                validate_request(env)
                verify_request(env, self.secret, attachments, self.replay)
                self.requests.append((env, attachments))
                resp = self.handle(env, attachments)
            except (ProtocolError, AuthError) as exc:
                resp = error_response(str(exc))
            self.sock.send_multipart(encode_response(resp))

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def network(tmp_path):
    entry = make_entry(name="stub")
    return entry, tmp_path / "network"


@pytest.fixture
def server(network):
    entry, path = network
    stub = StubServer(entry["Secret"])
    write_network([dict(entry, Server=stub.url)], path)
    yield stub, path
    stub.close()


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stat_is_readable(server, capsys):
    stub, net = server
    code, out, err = run(capsys, "stat", "--network", net)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "stat"
    stat_lines = [l for l in lines if " : " in l]
    assert len(stat_lines) == len(STAT)
    assert len({l.index(" : ") for l in stat_lines}) == 1  # aligned
    assert "  images processed : 235" in out
    assert "frames per sec   : 10.255" in out
    assert "time interval    : 0.878 s" in out
    # the original's five fields first, in the original's order, then the added ones
    assert [l.split(" : ")[0].strip() for l in stat_lines] == [
        "time interval", "queue length", "frames per sec", "images processed", "pics", "images failed"]
    assert stub.requests[0][0]["command"] == "stat"


def test_stat_json(server, capsys):
    _, net = server
    code, out, _ = run(capsys, "--json", "stat", "--network", net)
    assert code == 0
    assert json.loads(out) == {"result": "stat", "data": {"stat": STAT}}


@pytest.mark.slow
def test_plot_writes_a_png(server, capsys, tmp_path):
    stub, net = server
    png = tmp_path / "latest.png"
    code, out, err = run(capsys, "plot", "-o", png, "--network", net, "-s", "2", "-k", "3",
                         "-x", "log", "-y", "log")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in out and "img_00042.tif" in out
    assert stub.requests[-1][0]["command"] == "plot"
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("empty", ["Empty", "no points"])
def test_plot_without_a_curve_yet(network, capsys, tmp_path, empty):
    entry, path = network
    stub = StubServer(entry["Secret"], plot_empty=empty)
    try:
        write_network([dict(entry, Server=stub.url)], path)
        code, _, err = run(capsys, "plot", "-o", tmp_path / "x.png", "--network", path)
    finally:
        stub.close()
    assert code == 1
    assert "no curve yet" in err and ("'Empty'" if empty == "Empty" else "'plot data'") in err
    assert not (tmp_path / "x.png").exists()


def test_server_error_exits_1(server, capsys):
    _, net = server
    code, out, err = run(capsys, "abort", "--network", net)
    assert code == 1
    assert err.strip() == "saxsleash: server error: no queue is running (abort ignored)"
    assert out == ""


def test_wrong_secret_is_a_server_error(server, capsys, tmp_path):
    stub, _ = server
    other = tmp_path / "other"
    write_network([make_entry(server=stub.url)], other)
    code, _, err = run(capsys, "stat", "--network", other)
    assert code == 1 and "wrong signature" in err


def test_no_server_exits_3(capsys, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    net = tmp_path / "net"
    write_network([make_entry(server=f"tcp://127.0.0.1:{port}")], net)
    code, out, err = run(capsys, "stat", "--network", net, "--timeout", "0.2")
    assert code == 3
    assert f"no answer from the saxsdog server at tcp://127.0.0.1:{port} within 0.2 s" in err
    assert out == ""


def test_server_option_and_serverno(server, capsys, tmp_path):
    stub, net = server
    entry = json.loads(net.read_text())[0]
    two = tmp_path / "two"
    write_network([dict(entry, Server="tcp://127.0.0.1:1", Name="dead"), entry], two)
    assert run(capsys, "stat", "--network", two, "-N", "1")[0] == 0
    assert run(capsys, "stat", "--network", two, "-S", stub.url)[0] == 0
    code, _, err = run(capsys, "stat", "--network", two, "-N", "5")
    assert code == 2 and "no server number 5" in err


def test_listdir_sends_components_and_lists(server, capsys):
    stub, net = server
    code, out, _ = run(capsys, "listdir", "data/run42", "--network", net)
    assert code == 0
    assert stub.requests[-1][0]["argument"] == {"directory": ["data", "run42"]}
    assert out.splitlines()[-2:] == ["  run1/", "  b.tif"]
    run(capsys, "listdir", "--network", net)
    assert stub.requests[-1][0]["argument"] == {"directory": ["."]}


def test_new_sends_calibration_and_mask(server, capsys, tmp_path):
    stub, net = server
    (tmp_path / "cal.json").write_text(json.dumps(CAL))
    (tmp_path / "my.msk").write_bytes(b"\x00mask\xff")
    code, out, err = run(capsys, "new", tmp_path / "cal.json", tmp_path / "my.msk", "data/run42",
                         "--network", net)
    assert code == 0, err
    env, attachments = stub.requests[-1]
    assert env["command"] == "new"
    assert env["argument"]["directory"] == ["data", "run42"]
    assert env["argument"]["filenames"] == ["my.msk"]
    assert attachments == [b"\x00mask\xff"]
    assert "calibration: test, 1 mask(s)" in out


@pytest.mark.parametrize("argv,match", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["new", "cal.json"], "new takes 3 argument"),
    (["stat", "extra"], "stat takes 0 argument"),
    (["listdir", "a", "b"], "listdir takes 0 to 1 argument"),
    (["stat", "--timeout", "0"], "--timeout must be positive"),
])
def test_usage_errors_exit_2(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_local_input_errors_exit_2(server, capsys, tmp_path):
    _, net = server
    code, _, err = run(capsys, "new", tmp_path / "missing.json", tmp_path / "m.msk", "d", "--network", net)
    assert code == 2 and "missing.json does not exist" in err
    (tmp_path / "bad.json").write_text(json.dumps({"Masks": []}))
    code, _, err = run(capsys, "new", tmp_path / "bad.json", tmp_path / "m.msk", "d", "--network", net)
    assert code == 2 and "invalid calibration" in err
    code, _, err = run(capsys, "listdir", "/etc", "--network", net)
    assert code == 2 and "relative to the server's base directory" in err
    code, _, err = run(capsys, "stat", "--network", tmp_path / "nope")
    assert code == 2 and "no network file" in err


def test_extract_curve_accepts_the_original_shapes():
    cols = {"data": {"array": [[1, 2, 3], [4, 5, 6], [0.1, 0.2, 0.3]]}}
    assert extract_curve(cols) == ([1, 2, 3], [4, 5, 6], [0.1, 0.2, 0.3])
    nested = {"data": {"array": [[[1, 2], [4, None], [0.1, 0.2]]]}}
    x, y, e = extract_curve(nested)
    assert x == [1, 2] and y[0] == 4 and y[1] != y[1] and e == [0.1, 0.2]
    rows = {"data": {"array": [[1, 4], [2, 5], [3, 6], [4, 7], [5, 8]]}}
    assert extract_curve(rows)[:2] == ([1, 2, 3, 4, 5], [4, 5, 6, 7, 8])
    graphs = {"data": {"graphs": [{"kind": "Radial", "array": [[1.0], [2.0]]}]}}
    assert extract_curve(graphs) == ([1.0], [2.0], None)
    with pytest.raises(ValueError, match="no curve"):
        extract_curve({"data": {}})


def test_format_response_shows_errors_and_files():
    text = format_response({"result": "fileslist", "data": {"fileslist": {"chi": ["a.chi", "b.chi"]}}})
    assert text.splitlines() == ["fileslist", "files:", "  chi: 2 file(s)", "    a.chi", "    b.chi"]


def test_format_response_per_image_files_and_history():
    text = format_response({"result": "fileslist", "data": {"fileslist": {
        "run/a.tif": {"outputs": ["work/a.chi"], "state": "done", "error": None}}}})
    assert text.splitlines() == ["fileslist", "files:", "  run/a.tif  [done]", "    work/a.chi"]
    text = format_response({"result": "plotdata", "data": {"history": {"path": ["a", "b"], "I0": [1, 2]}}})
    assert "history: 2 record(s) (path, I0)" in text


# --------------------------------------------------------------------------- against the real handler

@pytest.fixture
def real_server(tmp_path, data_dir):
    """A CommandHandler served over ZeroMQ in this process, and a network file naming it."""
    import shutil

    from saxsdog.pipeline import QueueOptions
    from saxsdog.server.handler import ANSWER_WITHIN, CommandHandler
    from saxsdog.server.zmq_service import CommandService

    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    shutil.copy(data_dir / "buf1_00000.tif", base / "template.tif")
    entry = make_entry(name="real")
    handler = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0, answer_within=ANSWER_WITHIN)
    service = CommandService(handler, entry["Secret"], bind="tcp://127.0.0.1:*")
    thread = threading.Thread(target=service.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
    thread.start()
    net = tmp_path / "network"
    write_network([dict(entry, Server=service.endpoint)], net)
    yield handler, net
    service.stop()
    thread.join(5)
    handler.shutdown()


def test_subcommands_come_from_the_command_table(capsys):
    from saxsdog.cli.leash import build_parser, cli_commands
    from saxsdog.protocol.commands import COMMANDS

    assert list(cli_commands()) == [c.name for c in COMMANDS if c.cli is not None]
    epilog = build_parser().epilog
    for c in COMMANDS:
        assert (c.name in epilog) == (c.cli is not None), c.name


def test_validate_convert_and_commands_against_the_server(real_server, capsys, tmp_path, data_dir):
    _, net = real_server
    code, out, err = run(capsys, "validate", data_dir / "cal.json", "--network", net)
    assert code == 0, err
    assert "the calibration is valid" in out
    bad = json.loads((data_dir / "cal.json").read_text())
    bad["Geometry"]["DedectorDistanceMM"] = -5
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, out, _ = run(capsys, "validate", tmp_path / "bad.json", "--network", net)
    assert code == 1 and "$.Geometry.DedectorDistanceMM" in out
    (tmp_path / "fit2d.txt").write_text("INFO: Refined Beam centre =      387.772     808.370 (pixels)\n"
                                        "INFO: Refined sample to detector distance =     2000.5 mm\n"
                                        "INFO: Refined wavelength =      1.00000 Angstroms\n")
    code, out, err = run(capsys, "convertfit2d", tmp_path / "fit2d.txt", data_dir / "cal.json", "--network", net)
    assert code == 0, err
    cal = json.loads(out)  # the calibration itself, ready for "> cal.json"
    assert cal["Geometry"]["DedectorDistanceMM"] == pytest.approx(2000.5)
    code, out, err = run(capsys, "commands", "--network", net)
    assert code == 0 and "maskpreview" in out and "convertponi" in out


@pytest.mark.slow
def test_maskpreview_writes_the_png(real_server, capsys, tmp_path, data_dir):
    _, net = real_server
    png = tmp_path / "preview.png"
    code, out, err = run(capsys, "maskpreview", data_dir / "cal.json", data_dir / "AAA_integ.msk", "template.tif",
                         "-o", png, "--network", net)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in out
    with pytest.raises(SystemExit) as info:
        main(["maskpreview", str(data_dir / "cal.json"), "--network", str(net)])
    assert info.value.code == 2 and "-o FILE.png" in capsys.readouterr().err


@pytest.mark.slow
def test_new_against_a_slow_server_prints_the_final_answer(real_server, capsys, data_dir, monkeypatch):
    """The server answers 'accepted' while it builds; saxsleash waits for 'new queue'."""
    import time as _time

    from saxsdog.server import session as session_module

    real = session_module.Calibration

    def slow(*args, **kwargs):
        _time.sleep(1.5)  # longer than the server's answer bound
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "Calibration", slow)
    handler, net = real_server
    code, out, err = run(capsys, "new", data_dir / "cal.json", data_dir / "AAA_integ.msk", "run",
                         "--network", net, "--timeout", "5")
    assert code == 0, err
    assert out.splitlines()[0] == "new queue" and handler.session is not None


def test_plot_labels_the_x_axis_with_the_curves_unit():
    """saxsleash plot labels x with the latest curve's column label (2θ, r, χ ...), not always q."""
    pytest.importorskip("matplotlib")
    from saxsdog.cli.leash import curve_figure, x_axis_label

    graph = {"kind": "Radial", "columnLabels": ["Scattering Angle  2$\\theta$ [deg]", "Intensity (Count/Pixel)"],
             "array": [[0.1, 0.2, 0.3], [3.0, 2.0, 1.0], [0.1, 0.1, 0.1]]}
    resp = {"data": {"graphs": [graph], "array": graph["array"], "filename": "img.tif"}}
    assert x_axis_label(resp) == "Scattering Angle  2$\\theta$ [deg]"
    fig = curve_figure(resp)
    assert fig.axes[0].get_xlabel() == "Scattering Angle  2$\\theta$ [deg]"
    assert x_axis_label({"data": {"array": [[1.0], [2.0]]}}) == "q [nm$^{-1}$]"  # the original's responses
