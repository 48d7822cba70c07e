"""The web leash shows a cake map of the latest frame as a small image (headless Chromium)."""

from __future__ import annotations

import json

import pytest

from saxsdog.testing import wait_for

from test_browser import CHROMIUM, browser, log_in, page, shoot  # noqa: F401  (fixtures)
from webleash_helpers import add_images

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")


@pytest.mark.slow
def test_plots_tab_shows_the_cake_as_an_image(page, server, handler, base, data_dir, tmp_path):  # noqa: F811
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Masks"] = [{"MaskFile": "", "Oversampling": 1, "PixelPerRadialElement": 2},
                    {"MaskFile": "", "Oversampling": 1, "Name": "map",
                     "Cake": {"RadialBins": 300, "AzimuthBins": 72}}]
    path = tmp_path / "cake.json"
    path.write_text(json.dumps(cal))
    log_in(page, server.url)
    page.set_input_files("#cal-file", str(path))
    page.wait_for_function("() => document.querySelector('#cal-form').textContent.includes('Cake')")
    page.fill("#directory", "run")
    page.click("#start-queue")
    page.wait_for_function("() => document.querySelector('#start-msg').textContent.includes('Queue started')")
    assert wait_for(lambda: handler.session is not None, 30)
    for p in add_images(base, 2):
        handler.session.feeder_event(str(p))
    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_function("() => document.querySelector('#plot-file').textContent.startsWith('run/img_')",
                           timeout=60_000)
    page.wait_for_selector("#plot-cakes .cake .heatmaplayer", state="attached", timeout=30_000)
    title = page.text_content("#plot-cakes .cake .gtitle")
    assert "72 × 300 (map)" in title
    box = page.query_selector("#plot-cakes .cake").bounding_box()
    assert box is not None and box["height"] <= 300  # small, below the curve
    shoot(page, tmp_path, "cake.png")
    assert not page.problems, page.problems
