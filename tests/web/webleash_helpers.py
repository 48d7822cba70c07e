"""Helpers of the web leash tests (imported by the test modules and conftest)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from saxsdog.protocol.signing import compute_mac

#: The shared secret of these tests (checked never to leak into responses or logs).
SECRET = "web-leash-test-secret-" + "k7Qx9ZpL2mVw4TnR8sYb"


def require_web() -> None:
    """Skip unless the web leash's packages (and httpx for the tests) are installed."""
    for name in ("starlette", "uvicorn", "httpx"):
        pytest.importorskip(name, reason=f"the web leash tests need {name} (pip install -e '.[test]')")


class InProcessClient:
    """A synchronous client of an ASGI app in this process: no socket, no server thread.

    ``httpx.AsyncClient`` over ``httpx.ASGITransport``, driven by an event loop of its own in
    a background thread, so tests read like the ``httpx.Client`` ones.

    Parameters
    ----------
    app
        The ASGI app (e.g. from :func:`saxsdog.server.http.create_app`).
    base_url
        Its scheme and host (the ``Host`` header the app sees).
    address
        The client address the app sees (``request.client.host``).
    """

    def __init__(self, app, base_url: str = "http://127.0.0.1", address: str = "127.0.0.1", timeout: float = 30.0):
        import httpx

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asgi-client", daemon=True)
        self._thread.start()
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        self._client = httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout)
        self.base_url = self._client.base_url
        self.app = app

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def request(self, method: str, url: str, **kwargs):
        return self._run(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs):
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._client.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> "InProcessClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_images(base: Path, n: int, start: int = 0, sub: str = "run") -> list[Path]:
    """Hard-link ``template.tif`` into ``sub`` under new names (copy where links fail)."""
    out = []
    for i in range(start, start + n):
        p = base / sub / f"img_{i:05d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(base / "template.tif", p)
        except OSError:
            shutil.copy(base / "template.tif", p)
        out.append(p)
    return out


def login(client, secret: str = SECRET) -> str:
    """Log ``client`` in through challenge + HMAC; returns the token (the cookie is set too)."""
    nonce = client.get("/api/challenge").json()["nonce"]
    r = client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(secret, nonce)})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def calibration_request(data_dir: Path) -> tuple[dict, list[bytes]]:
    cal = json.loads((data_dir / "cal.json").read_text())
    return {"calibration": cal, "directory": ["run"]}, [(data_dir / "AAA_integ.msk").read_bytes()]


def command(client, name, argument=None, attachments=()):
    """POST a command with its argument and attachments; the JSON answer (status 200 asserted)."""
    import base64

    body = {"command": name, "attachments": [base64.b64encode(a).decode() for a in attachments]}
    if argument is not None:
        body["argument"] = argument
    r = client.post("/api/command", json=body)
    assert r.status_code == 200, r.text
    return r.json()
