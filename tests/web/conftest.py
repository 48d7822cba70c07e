"""Fixtures of the web leash tests: a base directory, a handler and its HTTP service on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from webleash_helpers import SECRET, require_web

from saxsdog.pipeline import QueueOptions
from saxsdog.server.handler import CommandHandler


@pytest.fixture
def base(tmp_path, data_dir) -> Path:
    """A base directory with an empty ``run/`` folder and an image outside it."""
    b = tmp_path / "base"
    (b / "run").mkdir(parents=True)
    shutil.copy(data_dir / "buf1_00000.tif", b / "template.tif")
    return b


@pytest.fixture
def handler(base):
    h = CommandHandler(base, QueueOptions(workers=2, keep_curves=True, curve_interval=0.0), rescan_interval=0)
    yield h
    h.shutdown()


@pytest.fixture
def server_factory(handler):
    """Start HTTP services for ``handler`` on 127.0.0.1 (ephemeral ports); all stopped afterwards."""
    require_web()
    from saxsdog.server.http import start_http_server

    started = []

    def make(**options):
        srv = start_http_server(handler, SECRET, "127.0.0.1", 0, **options)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c
