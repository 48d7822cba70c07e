"""Classifier values and alarms through the server's handler: stat, plotdata."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from saxsdog.pipeline import QueueOptions
from saxsdog.server.handler import CommandHandler
from saxsdog.testing import wait_for


@pytest.mark.slow
def test_an_alarm_appears_in_stat_and_plotdata(tmp_path, data_dir):
    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Classifiers"] = [{"Kind": "Guinier", "Alarm": {"Above": 50.0}},
                          {"Kind": "Porod", "QRange": [2.0, 4.0], "Alarm": {"Below": 0.0}},
                          {"Kind": "CorMap", "Reference": "previous"}]
    h = CommandHandler(base, QueueOptions(workers=2), rescan_interval=0)
    try:
        r = h.execute("new", {"calibration": cal, "directory": ["run"]}, [(data_dir / "AAA_integ.msk").read_bytes()])
        assert r["result"] == "new queue", r
        for i in range(4):
            p = base / "run" / f"img_{i:05d}.tif"
            shutil.copy(data_dir / "buf1_00000.tif", p)
            os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 4)
        st = h.execute("stat")["data"]["stat"]
        assert st["alarms"] == 4 and "Porod.exponent" in st["latest alarm"]["alarms"][0]
        hist = h.execute("plotdata")["data"]["history"]
        assert all(a.startswith("Porod.exponent=") for a in hist["alarms"])
        assert hist["Guinier.Rg"] == [None] * 4 and set(hist["Guinier.status"]) == {"failed: no Guinier region"}
        assert [s for s in hist["CorMap.similar"] if s is not None] == [True] * 3  # identical frames
        assert len(hist["I0"]) == 4 and all(i0 > 0 for i0 in hist["I0"])
    finally:
        h.shutdown()
