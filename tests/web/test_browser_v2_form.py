"""A version-2 calibration through the page's Calibration form (headless Chromium): every block
(Corrections, Normalization with header fields, Background) arrives at the server as in the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_browser import browser, field, log_in, page, shoot  # noqa: F401  (fixtures)

from saxsdog.testing import wait_for


@pytest.mark.slow
def test_a_version_2_calibration_file_round_trips_through_the_form(page, server, handler, base, data_dir,  # noqa: F811
                                                                  tmp_path):
    np.save(base / "run" / "dark.npy", np.full((1043, 981), 0.25))
    cal = json.loads((data_dir / "cal.json").read_text())
    cal.update({"Version": 2,
                "Corrections": {"SolidAngle": True, "DarkFile": "dark.npy", "MaskNegative": True, "DummyValue": 77,
                                "ErrorModel": "azimuthal", "SigmaClip": {"Sigma": 3.5, "Cycles": 2}},
                "Normalization": {"ExposureTime": "header", "Monitor": {"Header": "Flux"}, "Transmission": 0.42,
                                  "ThicknessMM": 1.5, "AbsoluteScale": 2.5e-4},
                "Background": {"File": "../template.tif", "Scale": 0.9, "Transmission": 0.8, "Monitor": 2.0}})
    path = tmp_path / "cal_v2.json"
    path.write_text(json.dumps(cal))
    log_in(page, server.url)
    page.set_input_files("#cal-file", str(path))
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
    page.set_input_files("#mask-file-0", str(data_dir / "AAA_integ.msk"))
    page.wait_for_function("() => document.querySelector('#mask-name-0').textContent.includes('AAA_integ.msk')")
    page.fill("#directory", "run")
    shoot(page, tmp_path, "v2-form.png")
    page.click("#start-queue")
    page.wait_for_function("() => { const t = document.querySelector('#start-msg').textContent;"
                           " return t.includes('Queue started') || t.toLowerCase().includes('error')"
                           " || t.toLowerCase().includes('invalid'); }")
    msg = page.text_content("#start-msg")
    assert "Queue started" in msg, msg
    assert wait_for(lambda: handler.session is not None, 30)
    got = handler.session.calibration_raw
    for block in ("Corrections", "Normalization", "Background"):
        assert {k: v for k, v in got[block].items() if k in cal[block]} == cal[block], (block, got[block])
    assert not page.problems, page.problems
