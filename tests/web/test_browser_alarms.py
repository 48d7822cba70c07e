"""Classifier alarms on the page (headless Chromium): the banner and the History tab's classifier plot."""

from __future__ import annotations

import pytest
from test_browser import browser, log_in, page, shoot  # noqa: F401  (fixtures)
from webleash_helpers import add_images, calibration_request

from saxsdog.testing import wait_for


@pytest.mark.slow
def test_an_alarm_shows_as_a_banner_and_highlighted_points(page, server, handler, base, data_dir, tmp_path):  # noqa: F811
    arg, att = calibration_request(data_dir)
    arg["calibration"]["Classifiers"] = [{"Kind": "Guinier", "Alarm": {"Above": 50.0}},
                                         {"Kind": "Porod", "QRange": [2.0, 4.0], "Alarm": {"Below": 0.0}}]
    log_in(page, server.url)
    assert page.is_hidden("#alarm-banner")  # no queue, no alarm
    assert handler.execute("new", arg, att)["result"] == "new queue"
    for p in add_images(base, 5):
        handler.session.feeder_event(str(p))
    assert wait_for(lambda: handler.stat()["images processed"] == 5, 60)
    page.wait_for_selector("#alarm-banner", state="visible")
    page.wait_for_function("() => document.querySelector('#alarm-banner').textContent.includes('5 frames in alarm')")
    assert "Porod.exponent=" in page.text_content("#alarm-banner")
    page.click('.tabs button[data-tab="history"]')
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('5 image')")
    page.select_option("#hist-classifier", "Porod.exponent")
    page.wait_for_function("() => { const d = document.querySelector('#hist-classifier-plot').data;"
                           " return d && d[0].y.length === 5 && d[0].marker.color.every(c => c === '#c62828'); }")
    shoot(page, tmp_path, "alarm-banner.png")
    assert not page.problems, page.problems


@pytest.mark.slow
def test_a_classifier_as_a_scan_map_the_averages_and_the_plots_table(page, server, handler, base, data_dir, tmp_path):  # noqa: F811
    arg, att = calibration_request(data_dir)
    arg["calibration"]["Classifiers"] = [{"Kind": "ROI", "Rectangle": [0, 99, 0, 99]}]
    arg["calibration"]["Scan"] = {"Shape": [2, 3], "Keys": ["ROI.sum"]}
    arg["calibration"]["Average"] = {"Every": 3}
    log_in(page, server.url)
    assert handler.execute("new", arg, att)["result"] == "new queue"
    for p in add_images(base, 6):
        handler.session.feeder_event(str(p))
    assert wait_for(lambda: handler.stat()["images processed"] == 6, 60)
    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_selector("#plot-classifiers", state="visible")
    assert "ROI.sum" in page.text_content("#plot-classifiers")
    page.click('.tabs button[data-tab="history"]')
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('6 image')")
    page.wait_for_function("() => document.querySelector('#hist-averages').textContent.includes('3 kept, 0 rejected')")
    page.select_option("#hist-classifier", "ROI.sum")
    page.wait_for_selector("#hist-scan-map", state="visible")
    page.wait_for_function("() => { const d = document.querySelector('#hist-scan-map').data;"
                           " return d && d[0].type === 'heatmap' && d[0].z.length === 2 && d[0].z[0].length === 3"
                           " && d[0].z.flat().every(v => v > 0); }")
    shoot(page, tmp_path, "scan-map.png")
    assert not page.problems, page.problems
