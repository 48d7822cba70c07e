"""A server's memory does not grow with the images it processed: its history is bounded
(every record stays in the ledger, which plots and file lists read)."""

from __future__ import annotations

import pytest

from saxsdog.pipeline import QueueOptions
from saxsdog.server import session
from saxsdog.server.handler import CommandHandler
from saxsdog.testing import wait_for

from server_helpers import add_images, new_request


@pytest.mark.slow
def test_the_server_keeps_only_the_latest_records_in_memory(base, data_dir, monkeypatch):
    monkeypatch.setattr(session, "HISTORY_RECORDS", 4)
    h = CommandHandler(base, QueueOptions(workers=2), rescan_interval=0)
    try:
        arg, att = new_request(data_dir)
        assert h.execute("new", arg, att)["result"] == "new queue"
        images = add_images(base, 10)
        for p in images:
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 10)
        records = h.session.queue.history.snapshot()
        assert len(records) == 4  # the latest only (the old code kept up to a million)
        assert h.stat()["pics"] == 10
        # the ledger still answers for every image
        assert len(h.execute("plotdata")["data"]["history"]["I0"]) == 10
        assert len(h.execute("fileslist")["data"]["fileslist"]) == 10
    finally:
        h.shutdown()
