"""No-login attacks on a real ``saxsdogserver`` (subprocess) and what they cost it.

Used by ``test_http_limits.py``; run as a script for the figures of a report::

    PYTHONPATH=src python tests/web/http_attacks.py [--nofile 256]

The script only needs the ``saxsdogserver`` on ``PYTHONPATH`` (any version), so the same
figures can be taken before and after a change.
"""

from __future__ import annotations

import argparse
import warnings
import hashlib
import hmac
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

SECRET = "http-attack-test-secret-" + "Qm7Zt2Lx9PbV4sNk8RwY"
MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mac(nonce: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()


class ServerProcess:
    """A ``saxsdogserver`` with its web leash on loopback, its stderr in ``log``.

    Parameters
    ----------
    tmp
        Folder for the network file and the log.
    base
        The base directory served.
    nofile
        File descriptor limit of the server (``RLIMIT_NOFILE``), e.g. 256.
    """

    def __init__(self, tmp: Path, base: Path, nofile: int | None = None, extra: tuple[str, ...] = ()):
        self.zport, self.http_port = _free_port(), _free_port()
        self.zmq_url = f"tcp://127.0.0.1:{self.zport}"
        self.network = tmp / "network.json"
        self.network.write_text(json.dumps([{"Name": "attack", "Server": self.zmq_url,
                                             "Feeder": f"tcp://127.0.0.1:{_free_port()}", "Secret": SECRET}]))
        os.chmod(self.network, 0o600)
        self.log = tmp / "server.log"
        self.args = [sys.executable, "-m", "saxsdog.cli.server", str(base), "--network", str(self.network),
                     "--no-feeder", "--rescan", "0", "-t", "1", "--http-port", str(self.http_port), *extra]
        self.nofile = nofile
        self.proc: subprocess.Popen | None = None

    def _limits(self) -> None:  # in the child, before exec
        if self.nofile:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    def start(self) -> "ServerProcess":
        self._logfile = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._logfile, text=True,
                                     preexec_fn=self._limits)
        line = self.proc.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"server did not start: {line!r}\n{self.log.read_text(errors='replace')}")
        return self

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_bytes(self) -> int:
        return self.log.stat().st_size

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._logfile.close()


def stat_seconds(server: ServerProcess, timeout: float = 5.0) -> float:
    """Seconds a ZeroMQ ``stat`` takes (``inf``: no answer within ``timeout``)."""
    from saxsdog.protocol.client import LeashClient

    t0 = time.monotonic()
    try:
        with LeashClient(server.zmq_url, SECRET, timeout=timeout) as c:
            if c.request("stat")["result"] != "stat":
                return float("inf")
    except Exception:
        return float("inf")
    return time.monotonic() - t0


def http_seconds(server: ServerProcess, timeout: float = 5.0) -> float:
    """Seconds a fresh connection's ``GET /api/session`` takes (``inf``: no answer)."""
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout)
        conn.request("GET", "/api/session")
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        return float("inf")
    return time.monotonic() - t0 if ok else float("inf")


def open_idle(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that never send anything."""
    out = []
    for _ in range(n):
        try:
            out.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    return out


def big_body(port: int, size: int = 63 * MiB, path: str = "/api/login", chunked: bool = False,
             timeout: float = 60.0) -> int:
    """POST a JSON body of ``size`` bytes as fast as the server takes it; the response status (0: none).

    The body is ``{"nonce": "aaa..."}``: valid JSON, so a server that reads it whole also parses it.
    """
    block = b"a" * MiB
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
            s.sendall(head.encode())
            sent = 0
            try:
                while sent < size:
                    piece = block[:min(MiB, size - sent)]
                    if sent == 0:
                        piece = b'{"nonce":"' + piece[10:]
                    if sent + len(piece) >= size:
                        piece = piece[:-2] + b'"}'

                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    sent += len(piece)
                if chunked:
                    s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server closed the connection: read its answer
            reply = s.recv(4096).decode("latin-1")
    except OSError:
        return 0
    try:
        return int(reply.split(" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def parallel_big_bodies(port: int, n: int = 3, **options) -> list[int]:
    results: list[int] = [0] * n

    def one(i: int) -> None:
        results[i] = big_body(port, **options)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def websocket_flood(port: int, n: int = 40, size: int = 15 * MiB) -> tuple[int, list]:
    """``n`` WebSockets that each send one ``size``-byte message without logging in.

    Returns how many were still open after sending (the server keeps their messages).
    """
    from websockets.sync.client import connect

    block = "a" * size
    warnings.filterwarnings("ignore", "connect\\(\\) must be used as a context manager", DeprecationWarning)
    sockets, still_open = [], 0
    for _ in range(n):
        try:
            ws = connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, max_size=None, close_timeout=1)
            sockets.append(ws)
            ws.send(block)
            still_open += 1
        except Exception:
            pass
    time.sleep(1.0)
    return still_open, sockets


def wrong_logins(port: int, n: int = 400) -> Counter:
    """``n`` login attempts with a wrong secret on one keep-alive connection; status counts."""
    import httpx

    codes: Counter = Counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for _ in range(n):
            r = c.get("/api/challenge")
            if r.status_code != 200:
                codes[f"challenge {r.status_code}"] += 1
                continue
            nonce = r.json()["nonce"]
            codes[c.post("/api/login", json={"nonce": nonce, "mac": _mac(nonce, "wrong")}).status_code] += 1
    return codes


def challenge_flood(port: int, n: int = 2000) -> Counter:
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        return Counter(c.get("/api/challenge").status_code for _ in range(n))


def real_login(port: int) -> int:
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.get("/api/challenge")
        if r.status_code != 200:
            return r.status_code
        nonce = r.json()["nonce"]
        return c.post("/api/login", json={"nonce": nonce, "mac": _mac(nonce)}).status_code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nofile", type=int, default=1024, help="the server's file descriptor limit (default 1024)")
    p.add_argument("--idle", type=int, default=1020, help="idle connections to open (default 1020)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="saxsdog-attack-"))
    base = tmp / "base"
    (base / "run").mkdir(parents=True)
    shutil.copy(Path(args.data) / "buf1_00000.tif", base / "template.tif")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle + 256)), hard))
    server = ServerProcess(tmp, base, nofile=args.nofile).start()
    try:
        time.sleep(1.0)
        rss0 = server.rss_mb()
        print(f"baseline: RSS {rss0:.0f} MiB, stat {stat_seconds(server):.3f} s, HTTP {http_seconds(server):.3f} s")
        t0 = time.monotonic()
        codes = parallel_big_bodies(server.http_port, 3)
        print(f"3 parallel 63 MiB /api/login bodies: statuses {codes} in {time.monotonic() - t0:.1f} s; "
              f"RSS {server.rss_mb():.0f} MiB (+{server.rss_mb() - rss0:.0f}), stat {stat_seconds(server):.3f} s")
        codes = parallel_big_bodies(server.http_port, 3, chunked=True)
        print(f"3 parallel 63 MiB chunked /api/login bodies: statuses {codes}; RSS {server.rss_mb():.0f} MiB "
              f"(+{server.rss_mb() - rss0:.0f})")
        log0 = server.log_bytes()
        idle = open_idle(server.http_port, args.idle)
        t0 = time.monotonic()
        time.sleep(2.0)
        st, ht = stat_seconds(server), http_seconds(server)
        time.sleep(max(0.0, 10.0 - (time.monotonic() - t0)))
        print(f"{len(idle)} idle connections: stat {st:.3f} s, new HTTP request {ht:.3f} s, "
              f"log +{server.log_bytes() - log0} bytes in 10 s, RSS {server.rss_mb():.0f} MiB "
              f"(+{server.rss_mb() - rss0:.0f})")
        for s in idle:
            s.close()
        time.sleep(0.5)
        opened, sockets = websocket_flood(server.http_port)
        print(f"40 unauthenticated WebSockets sending 15 MiB each: RSS {server.rss_mb():.0f} MiB "
              f"(+{server.rss_mb() - rss0:.0f}), stat {stat_seconds(server):.3f} s")
        for ws in sockets:
            try:
                ws.close()
            except Exception:
                pass
        log0 = server.log_bytes()
        print(f"400 wrong logins: {dict(wrong_logins(server.http_port))}; a real login then: "
              f"{real_login(server.http_port)}; log +{server.log_bytes() - log0} bytes")
        print(f"challenge flood of 2000: {dict(challenge_flood(server.http_port))}; stat {stat_seconds(server):.3f} s")
        print(f"after all: RSS {server.rss_mb():.0f} MiB (+{server.rss_mb() - rss0:.0f}), "
              f"stat {stat_seconds(server):.3f} s, HTTP {http_seconds(server):.3f} s")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
