"""saxsfeeder finds its port where the server does: the network file."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
import zmq

from saxsdog.cli.feeder import _bind_address, build_parser
from saxsdog.protocol.netconf import make_entry, write_network
from saxsdog.testing import free_port


def _network_file(tmp_path, feeder: str):
    path = tmp_path / "net.json"
    write_network([make_entry(server=f"tcp://localhost:{free_port()}", feeder=feeder, name="beamline")], path)
    return path


def test_the_default_network_file_gives_the_port(tmp_path):
    """No --network: the feeder still publishes where the server (reading the same file) listens."""
    port = free_port()
    net = _network_file(tmp_path, f"tcp://localhost:{port}")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        env = dict(os.environ, SAXSDOG_NETWORK=str(net))
        r = subprocess.run([sys.executable, "-m", "saxsdog.cli.feeder", "--announce", "/d/x.tif",
                            "--wait-subscriber", "20", "-q"], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert f"publishing on tcp://127.0.0.1:{port} (the Feeder URL tcp://localhost:{port} of server 0 " \
               f"'beamline' of {net})" in r.stderr
        assert sub.poll(10_000, zmq.POLLIN), "the announcement was lost"
        assert json.loads(sub.recv()) == {"command": "new file", "argument": "/d/x.tif"}
    finally:
        sub.close()
        ctx.term()


def _address(argv, parser=None):
    parser = parser or build_parser()
    return _bind_address(parser.parse_args(argv + ["--announce", "x"]), parser)


def test_without_a_network_file_the_default_port_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SAXSDOG_NETWORK", str(tmp_path / "absent"))
    address, source = _address([])
    assert address == "tcp://127.0.0.1:5555"
    assert source == f"the default port: there is no network file {tmp_path / 'absent'}"
    assert _address(["-p", "6000"]) == ("tcp://127.0.0.1:6000", "--port")


def test_network_file_problems_and_remote_hosts(tmp_path, monkeypatch, capsys):
    net = _network_file(tmp_path, "tcp://detector-pc:5601")
    monkeypatch.setenv("SAXSDOG_NETWORK", str(net))
    address, source = _address([])
    assert address == "tcp://127.0.0.1:5601" and "add --public" in source
    assert _address(["--public"])[0] == "tcp://*:5601"
    with pytest.raises(SystemExit):
        _address(["-N", "3"])
    assert "there is no server number 3" in capsys.readouterr().err
    os.chmod(net, 0o644)  # the server refuses a readable secret; so does the feeder
    with pytest.raises(SystemExit):
        _address([])
    assert "chmod 600" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _address(["--network", str(tmp_path / "missing")])
    assert "no network file at" in capsys.readouterr().err


def test_help_has_examples():
    text = build_parser().format_help()
    assert "Examples:" in text and "network file" in text
    assert isinstance(build_parser().parse_args(["--announce", "a"]), argparse.Namespace)
