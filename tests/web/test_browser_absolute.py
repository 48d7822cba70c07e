"""The Calibration tab's Absolute scale panel in headless Chromium: a water curve on the
server gives the factor, which goes into the form's Normalization.AbsoluteScale."""

from __future__ import annotations

import numpy as np
import pytest
from test_browser import CHROMIUM, browser, field, log_in, open_page, shoot  # noqa: F401  (browser: a fixture)

from saxsdog.io.chi import write_chi

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]


def test_absolute_panel_sets_the_scale(browser, server, base, data_dir, tmp_path):  # noqa: F811
    q = np.linspace(0.1, 2.0, 100)
    write_chi(base / "run" / "water.chi", [q, np.full(q.size, 4.0), np.full(q.size, 0.04)])
    context, page = open_page(browser)
    try:
        log_in(page, server.url)
        page.set_input_files("#cal-file", str(data_dir / "cal.json"))
        page.fill("#abs-curve", "run/nothere.chi")
        page.click("#abs-compute")
        page.wait_for_function("() => document.querySelector('#abs-msg').textContent.includes('no such file')")
        assert page.is_disabled("#abs-apply")
        page.fill("#abs-curve", "run/water.chi")
        page.fill("#abs-qmin", "0.2")
        page.fill("#abs-qmax", "1.5")
        page.click("#abs-compute")
        page.wait_for_function("() => document.querySelector('#abs-report').textContent.includes('factor: 0.00408')")
        page.click("#abs-apply")
        page.wait_for_function("() => document.querySelector('#cal-msg').textContent.includes('AbsoluteScale set')")
        scale = page.evaluate("() => window.saxsdogLeash.S.cal.Normalization.AbsoluteScale")
        assert scale == 0.00408  # 0.01632 / 4, to 6 digits
        assert page.input_value(field("$.Normalization.AbsoluteScale")) == "0.00408"
        page.select_option("#abs-standard", "reference")
        assert page.is_hidden("#abs-water-fields") and page.is_visible("#abs-reference-fields")
        assert page.problems == []
        page.locator("#abs-report").scroll_into_view_if_needed()
        shoot(page, tmp_path, "absolute-panel.png")
    finally:
        context.close()
