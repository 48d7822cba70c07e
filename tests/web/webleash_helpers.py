"""Helpers of the web leash tests (imported by the test modules and conftest)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

from saxsdog.protocol.signing import compute_mac

#: The shared secret of these tests (checked never to leak into responses or logs).
SECRET = "web-leash-test-secret-" + "k7Qx9ZpL2mVw4TnR8sYb"


def require_web() -> None:
    """Skip unless the web leash's packages (and httpx for the tests) are installed."""
    for name in ("starlette", "uvicorn", "httpx"):
        pytest.importorskip(name, reason=f"the web leash tests need {name} (pip install -e '.[test]')")


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


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def login(client, secret: str = SECRET) -> str:
    """Log ``client`` in through challenge + HMAC; returns the token (the cookie is set too)."""
    nonce = client.get("/api/challenge").json()["nonce"]
    r = client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(secret, nonce)})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def calibration_request(data_dir: Path) -> tuple[dict, list[bytes]]:
    cal = json.loads((data_dir / "cal.json").read_text())
    return {"calibration": cal, "directory": ["run"]}, [(data_dir / "AAA_integ.msk").read_bytes()]
