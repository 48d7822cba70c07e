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


@pytest.mark.slow
def test_an_rg_alarm_on_sphere_images_appears_in_stat_history_and_plotdata(tmp_path):
    """End to end where the Guinier fit succeeds: synthetic spheres written as Pilatus TIFFs,
    R = 5 nm (Rg 3.87 nm) then R = 7 nm (Rg 5.42 nm); the alarm is set above Rg 4.5 nm."""
    from datetime import datetime, timedelta

    import numpy as np
    from classifier_helpers import sphere

    from saxsdog import Calibration
    from saxsdog.testing import small_calibration, write_pilatus_tiff

    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    cal = small_calibration(Classifiers=[{"Kind": "Guinier", "Alarm": {"Above": 4.5}}])
    q = Calibration(cal, cache=False).geometry.q()
    rng = np.random.default_rng(0)
    h = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0)
    try:
        r = h.execute("new", {"calibration": cal, "directory": ["run"]}, [])
        assert r["result"] == "new queue", r
        start = datetime(2026, 1, 1, 12)
        for i in range(6):
            p = base / "run" / f"sph_{i:05d}.tif"
            radius = 5.0 if i < 4 else 7.0
            write_pilatus_tiff(p, rng.poisson(2e5 * sphere(q, radius) + 5).astype(np.int32),
                               start + timedelta(seconds=i))
            assert h.session.feeder_event(str(p)) is None
        assert wait_for(lambda: h.stat()["images processed"] == 6)
        st = h.execute("stat")["data"]["stat"]
        assert st["alarms"] == 2 and st["latest alarm"]["alarms"][0].startswith("Guinier.Rg=")
        hist = h.execute("plotdata")["data"]["history"]
        order = sorted(range(6), key=lambda k: hist["time"][k])
        rg = [hist["Guinier.Rg"][k] for k in order]
        assert all(abs(v - 3.87) < 0.3 for v in rg[:4]) and all(abs(v - 5.42) < 0.3 for v in rg[4:])
        assert [bool(hist["alarms"][k]) for k in order] == [False] * 4 + [True] * 2
        assert set(hist["Guinier.status"]) == {"ok"}
        records = h.session.queue.history.snapshot()
        assert sorted(bool(rec["alarms"]) for rec in records) == [False] * 4 + [True] * 2
    finally:
        h.shutdown()
