"""The ``leash`` command (remote and local-server mode) and saxsdogserver's web leash."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from webleash_helpers import SECRET, require_web

from saxsdog.cli import leash_web

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/#code=([A-Za-z0-9_-]+)")


def write_network(path, secret: str = SECRET, server: str = "tcp://127.0.0.1:7777"):
    from saxsdog.protocol.netconf import make_entry, write_network as write

    write([make_entry(server=server, feeder="tcp://127.0.0.1:5555", name="test", secret=secret)], path)
    return path


class Lines:
    """Read a child's stdout lines in a thread, with timeouts."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        with stream:  # closed at the end of output (the child has exited)
            for line in stream:
                self.q.put(line)

    def wait_for(self, pattern: re.Pattern | str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {self.seen!r}")


def spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, env=env)


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise



def test_remote_mode_prints_a_single_use_link(server, tmp_path, capsys):
    import httpx

    net = write_network(tmp_path / "network.json")
    assert leash_web.main(["--network", str(net), "--http-port", str(server.port), "--no-browser"]) == 0
    m = URL_RE.search(capsys.readouterr().out)
    assert m and m.group(1) == server.url
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/api/login", json={"code": m.group(2)}).status_code == 200
        assert c.post("/api/command", json={"command": "stat"}).json()["result"] == "stat"
        assert c.post("/api/login", json={"code": m.group(2)}).status_code == 401
    assert leash_web.main(["--network", str(net), "--url", server.url + "/", "--no-browser"]) == 0
    out = capsys.readouterr().out
    assert URL_RE.search(out) and SECRET not in out


def test_remote_mode_errors(server, tmp_path, capsys):
    wrong = write_network(tmp_path / "wrong.json", secret="another-secret-of-enough-length-Zq8V1xYw3Kp0Lm7Rt2Hs")
    assert leash_web.main(["--network", str(wrong), "--url", server.url, "--no-browser"]) == 1
    err = capsys.readouterr().err
    assert "launch refused" in err and "another-secret" not in err
    assert leash_web.main(["--network", str(tmp_path / "missing.json"), "--no-browser"]) == 2
    assert "saxsnetconf" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    net = write_network(tmp_path / "network.json")
    assert leash_web.main(["--network", str(net), "--http-port", str(port), "--no-browser", "--timeout", "3"]) == 1
    assert "cannot get a launch code" in capsys.readouterr().err


@pytest.mark.slow
def test_local_mode_serves_a_private_server(base, tmp_path):
    require_web()
    import httpx

    proc = spawn(["-m", "saxsdog.cli.leash_web", "--local", str(base), "--port", "0", "--no-browser", "-t", "1"])
    try:
        lines = Lines(proc)
        m = lines.wait_for(URL_RE)
        url, code = m.group(1), m.group(2)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/api/login", json={"code": code}).status_code == 200
            listing = c.post("/api/command", json={"command": "listdir", "argument": {}}).json()
            assert listing["result"] == "dircontent" and "run" in str(listing["data"])
            assert c.post("/api/login", json={"code": code}).status_code == 401
    finally:
        rc = stop(proc)
    assert rc == 0
    lines.wait_for("leash: stopped", 10)


def test_local_mode_needs_a_directory(tmp_path, capsys):
    require_web()
    assert leash_web.main(["--local", str(tmp_path / "nope"), "--no-browser"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_saxsdogserver_serves_the_web_leash(base, tmp_path, capsys):
    require_web()
    pytest.importorskip("zmq")
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        zport = s.getsockname()[1]
    net = write_network(tmp_path / "network.json", server=f"tcp://127.0.0.1:{zport}")
    proc = spawn(["-m", "saxsdog.cli.server", str(base), "--network", str(net), "--no-feeder", "--rescan", "0",
                  "-t", "1", "--http-port", "0", "--allow-host", "alias.example"])
    try:
        lines = Lines(proc)
        url = lines.wait_for(r"web leash (http://127\.0\.0\.1:\d+)").group(1)
        assert leash_web.main(["--network", str(net), "--url", url, "--no-browser"]) == 0
        code = URL_RE.search(capsys.readouterr().out).group(2)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/api/login", json={"code": code}).status_code == 200
            assert c.post("/api/command", json={"command": "stat"}).json()["result"] == "stat"
            # DNS-rebinding protection: only this server's names (and --allow-host ones) are served
            assert c.get("/api/session", headers={"Host": "alias.example:7780"}).status_code == 200
            assert c.get("/api/session", headers={"Host": "localhost"}).status_code == 200
            refused = c.get("/api/session", headers={"Host": "rebound.attacker.example"})
            assert refused.status_code == 400 and "unknown host name" in refused.json()["data"]["Error"]
    finally:
        rc = stop(proc, signal.SIGTERM)
    assert rc == 0


def test_remote_mode_needs_nothing_of_the_server():
    """The client side (leash's remote mode) imports the protocol only, not the server package."""
    code = ("import sys, hmac, hashlib\n"
            "from saxsdog.cli import leash_web\n"
            "leash_web.build_parser()\n"
            "from saxsdog.protocol.signing import compute_mac\n"
            "assert compute_mac('k' * 40, 'n0nce') == hmac.new(b'k' * 40, b'n0nce', hashlib.sha256).hexdigest()\n"
            "bad = sorted(m for m in sys.modules if m.startswith('saxsdog.server'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
