"""Fixtures of the web leash tests: a base directory, a handler, its app in process, its HTTP service.

``client`` talks to the app in this process (no socket); ``server`` and ``server_factory``
serve it on a loopback port for the tests where the socket matters (WebSocket, browser,
command line, connection limits).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from webleash_helpers import SECRET, InProcessClient, require_web

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
def app_factory(handler):
    """Make apps of the web leash over ``handler`` (options of ``create_app``)."""
    require_web()
    from saxsdog.server.http import create_app

    def make(**options):
        options.setdefault("bind", "127.0.0.1")
        return create_app(handler, SECRET, **options)

    return make


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client_factory(app):
    """Make in-process clients (``app=`` another app, ``address=`` the client address)."""
    made = []

    def make(other_app=None, **options):
        c = InProcessClient(other_app or app, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(client_factory):
    return client_factory()
