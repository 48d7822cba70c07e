"""A reconciliation scan under way when the queue stops ends quietly.

Before, the server's shutdown closed the ledger while the scan thread was still asking it,
and the log showed "reconciliation scan failed ... Cannot operate on a closed database".
"""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest

from saxsdog.server.session import QueueSession


def _session_with(reconcile) -> QueueSession:
    s = QueueSession.__new__(QueueSession)
    s._rescan_stop = threading.Event()
    s.reconcile = reconcile  # type: ignore[method-assign]
    return s


def test_a_scan_failing_because_the_queue_stopped_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    def reconcile() -> int:
        s._rescan_stop.set()  # the server stops while the scan runs ...
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")  # ... and closes the ledger

    s = _session_with(reconcile)
    with caplog.at_level(logging.DEBUG, logger="saxsdog.server.session"):
        s._rescan_loop(0.001)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_scan_failing_while_the_queue_runs_is_still_an_error(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def reconcile() -> int:
        calls.append(1)
        if len(calls) == 2:
            s._rescan_stop.set()
            return 0
        raise OSError("the folder went away")

    s = _session_with(reconcile)
    with caplog.at_level(logging.ERROR, logger="saxsdog.server.session"):
        s._rescan_loop(0.001)
    assert [r.getMessage() for r in caplog.records] == ["reconciliation scan failed"]
    assert len(calls) == 2, "the loop goes on after a failure while the queue runs"
