"""Corrections on the page (headless Chromium): the Plots and History tabs show the corrected and
background-subtracted curves, the dummy-pixel count and sigma clipping's rejected count per frame."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_browser import browser, log_in, page, shoot  # noqa: F401  (fixtures)
from webleash_helpers import add_images, calibration_request

from saxsdog.testing import wait_for


@pytest.mark.slow
def test_plots_and_history_show_the_counts_and_the_subtracted_curve(page, server, handler, base, data_dir,  # noqa: F811
                                                                    tmp_path):
    arg, att = calibration_request(data_dir)
    calibration = arg["calibration"]
    calibration["Masks"][0]["MaskFile"] = ""  # no mask: the Pilatus gaps are dummy pixels
    calibration.update({"Version": 2,
                        "Corrections": {"SolidAngle": True, "SigmaClip": {"Sigma": 4, "Cycles": 2}},
                        "Normalization": {"ExposureTime": "header"},
                        "Background": {"File": "../template.tif", "Scale": 0.5}})
    log_in(page, server.url)
    assert handler.execute("new", arg, [b""])["result"] == "new queue"
    for p in add_images(base, 3):
        handler.session.feeder_event(str(p))
    assert wait_for(lambda: handler.stat()["images processed"] == 3, 120)
    assert handler.stat()["images failed"] == 0

    # -- Plots: the curve and its dashed subtracted twin, both counts -----------------------
    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_function("() => document.querySelector('#plot-file').textContent.startsWith('run/img_')")
    page.wait_for_function("() => { const d = document.querySelector('#plot-main').data;"
                           " return d && d.some(t => t.line && t.line.dash === 'dash'); }")
    line = page.text_content("#plot-time")
    assert "73,671 dummy pixel(s) excluded" in line, line
    assert re.search(r"[\d,]+ pixel\(s\) rejected by sigma clipping", line), line
    header = page.text_content("#plot-params tr:first-child")
    assert "dummy pixels" in header and "rejected pixels" in header, header
    assert page.text_content("#plot-params tr:nth-child(2) td:nth-child(6)") == "73,671"  # in full, not 73670
    names = page.evaluate("() => document.querySelector('#plot-main').data.filter(t => t.name && !t.fill)"
                          ".map(t => t.name)")
    assert "Radial 0" in names and "Radial 0 − background" in names, names
    assert "counts/pixel/s" in page.evaluate("() => document.querySelector('#plot-main').layout.yaxis.title.text")
    shoot(page, tmp_path, "reduction-plots.png")

    # -- History: both counts per frame, the subtracted curve's parameters dashed ------------
    page.click('.tabs button[data-tab="history"]')
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('3 image')")
    count = page.text_content("#hist-count")
    assert "73,671 dummy pixel(s) per frame" in count and "rejected by sigma clipping per frame" in count, count
    page.wait_for_function("() => { const d = document.getElementById('hist-rejected');"
                           " return d && d.data && d.data[0].y.length === 3; }")
    rejected = page.evaluate("() => document.getElementById('hist-rejected').data[0].y")
    history = handler.execute("plotdata")["data"]["history"]
    assert rejected == history["rejected_pixels"]
    assert page.evaluate("() => document.getElementById('hist-dummies').data[0].y") == [73671] * 3
    i0 = page.evaluate("() => document.getElementById('hist-i0').data.map(t => [t.name, t.y, t.line.dash || ''])")
    assert [t[0] for t in i0] == ["curve", "− background"] and i0[1][2] == "dash", i0
    np.testing.assert_allclose(i0[1][1], 0.5 * np.asarray(i0[0][1]), rtol=1e-6)  # the background is the image
    # the counts are not offered as classifier values
    assert page.locator("#hist-classifier option").count() == 0
    shoot(page, tmp_path, "reduction-history.png")
    assert not page.problems, page.problems
