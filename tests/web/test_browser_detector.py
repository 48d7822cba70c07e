"""The Detector tab in a real headless Chromium: the cursor readout against the calibration's q,
the mask editor's shapes through a saved and reloaded FIT2D .msk into the integrated curve, and
calibrating from a calibrant image.

Same browser set-up as test_browser.py (Debian's /usr/bin/chromium driven by Playwright).
"""

# ruff: noqa: F811  (the browser fixtures of test_browser.py are imported, and taken as arguments)
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from saxsdog.testing import wait_for

from test_browser import CHROMIUM, browser, field, log_in, open_page, page, shoot  # noqa: F401  (fixtures)
from webleash_helpers import add_images

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
              pytest.mark.slow]


def load_cal_and_show(page, data_dir, image: str = "template.tif") -> None:
    page.set_input_files("#cal-file", str(data_dir / "cal.json"))
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
    page.click('.tabs button[data-tab="detector"]')
    page.fill("#det-image", image)
    page.click("#det-show")
    page.wait_for_function("() => document.querySelector('#det-msg').textContent.includes('pixels')")
    page.wait_for_function("() => window.saxsdogLeash.detector.view !== null")


def move_to_pixel(page, row: float, col: float) -> None:
    """Put the mouse over continuous image coordinates (row, col) of the Detector tab's canvas."""
    x, y = page.evaluate(f"""() => {{
        const c = document.querySelector('#det-canvas'), r = c.getBoundingClientRect();
        const [x, y] = window.saxsdogLeash.detector.toScreen({row}, {col});
        return [r.left + x * r.width / c.width, r.top + y * r.height / c.height];
    }}""")
    page.mouse.move(x, y)


def polygon_mask(shape, points) -> np.ndarray:
    """Pixel centres inside the polygon by the even-odd rule with half-open edges (as the page)."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols] + 0.5
    inside = np.zeros(shape, bool)
    n = len(points)
    for k in range(n):
        (y0, x0), (y1, x1) = points[k], points[(k + 1) % n]
        spans = ((y0 <= yy) & (yy < y1)) | ((y1 <= yy) & (yy < y0))
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans & (xx < xcross)
    return inside


def rect_mask(shape, r0, c0, r1, c1) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    return (yy >= min(r0, r1)) & (yy <= max(r0, r1)) & (xx >= min(c0, c1)) & (xx <= max(c0, c1))


def test_cursor_readout_matches_the_calibrations_q(page, server, base, data_dir, tmp_path):
    from saxsdog.calibration import Calibration

    log_in(page, server.url)
    load_cal_and_show(page, data_dir)
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Masks"][0]["MaskFile"] = ""
    geo = Calibration(cal, cache=False).geometry
    q = geo.q()
    tth = np.degrees(geo.two_theta())
    try:  # χ as pyFAI gives it for the image as read: the package's azimuth convention
        from saxsdog.io.poni import calibration_to_integrator

        chi = calibration_to_integrator(cal).center_array(geo.shape, unit="chi_deg")
    except ImportError:
        chi = None
    from saxsdog.io.images import read_image

    image = np.asarray(read_image(base / "template.tif").data)
    print(f"Pilatus 1M frame shown {page.evaluate('() => window.saxsdogLeash.detector.loadMs'):.0f} ms after the click")
    for row, col in [(100, 200), (808, 390), (1000, 950)]:
        # zoomed in (8 screen pixels per pixel), so the mouse's whole-pixel position is inside it
        page.evaluate(f"""() => {{ const c = document.querySelector('#det-canvas');
            window.saxsdogLeash.detector.setView({{scale: 8, tx: c.width / 2 - {col + 0.5} * 8,
                                                   ty: c.height / 2 - {row + 0.5} * 8}}); }}""")
        move_to_pixel(page, row + 0.5, col + 0.5)
        page.wait_for_function(f"() => document.querySelector('#det-readout').dataset.row === '{row}' && "
                               f"document.querySelector('#det-readout').dataset.col === '{col}'")
        got = {k: float(page.get_attribute(f"#det-{k}", "data-value")) for k in ("q", "tth", "chi", "value")}
        if chi is not None:
            assert (got["chi"] - chi[row, col] + 180) % 360 - 180 == pytest.approx(0, abs=1e-6), (row, col)
        assert got["q"] == pytest.approx(q[row, col], rel=1e-9), (row, col)
        assert got["tth"] == pytest.approx(tth[row, col], rel=1e-9), (row, col)
        assert got["value"] == image[row, col]
        text = page.text_content("#det-readout")
        assert f"row {row} · column {col}" in text and "nm⁻¹" in text and "χ" in text
        shown_q = page.text_content("#det-q").split()[0]
        assert float(shown_q) == pytest.approx(q[row, col], rel=1e-4)
    # calibrant rings over the image
    page.wait_for_function("() => document.querySelector('#calibrant').options.length > 5")
    page.select_option("#calibrant", "AgBh")
    page.check("#det-rings")
    page.wait_for_function("() => window.saxsdogLeash.detector.rings && window.saxsdogLeash.detector.rings.calibrant === 'AgBh'")
    # the wheel zooms about the cursor: the image point under it stays
    page.click("#det-fitview")
    box = page.locator("#det-canvas").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 250)
    under = "() => window.saxsdogLeash.detector.hover"
    before = page.evaluate(under)
    scale = page.evaluate("() => window.saxsdogLeash.detector.view.scale")
    page.mouse.wheel(0, -100)
    page.wait_for_function(f"() => window.saxsdogLeash.detector.view.scale > {scale * 1.2}")
    page.mouse.move(box["x"] + 300, box["y"] + 251)
    page.mouse.move(box["x"] + 300, box["y"] + 250)
    assert page.evaluate(under) == pytest.approx(before, abs=1e-6)
    shoot(page, tmp_path, "leash-detector.png")
    assert not page.problems, page.problems


def test_mask_drawn_saved_as_msk_reloaded_and_integrated(browser, server, handler, base, data_dir, tmp_path):
    from saxsdog.calibration import Calibration
    from saxsdog.io.images import read_image
    from saxsdog.io.masks import read_mask

    context, page = open_page(browser, accept_downloads=True)
    try:
        log_in(page, server.url)
        load_cal_and_show(page, data_dir)
        box = page.locator("#det-canvas").bounding_box()
        # a rectangle
        page.check('input[name="mask-tool"][value="rect"]')
        page.mouse.move(box["x"] + 120.3, box["y"] + 90.7)
        page.mouse.down()
        page.mouse.move(box["x"] + 260.2, box["y"] + 200.4, steps=5)
        page.mouse.up()
        page.wait_for_function("() => document.querySelector('#mask-msg').textContent.startsWith('Rectangle')")
        # a polygon: four corners, closed by a double-click on the last
        page.check('input[name="mask-tool"][value="polygon"]')
        corners = [(400.4, 300.2), (560.6, 330.9), (520.1, 480.3), (430.7, 420.5)]
        for x, y in corners[:-1]:
            page.mouse.click(box["x"] + x, box["y"] + y)
        page.mouse.dblclick(box["x"] + corners[-1][0], box["y"] + corners[-1][1])
        page.wait_for_function("() => document.querySelector('#mask-msg').textContent.startsWith('Polygon of 4')")
        page.click("#mask-dummies")
        page.wait_for_function("() => document.querySelector('#mask-msg').textContent.includes('dummy pixels')")
        ops = page.evaluate("() => window.saxsdogLeash.detector.model.operations")
        assert [o["kind"] for o in ops] == ["rect", "polygon", "dummies"]
        image = np.asarray(read_image(base / "template.tif").data)
        rect, poly = ops[0], ops[1]
        expected = (rect_mask(image.shape, rect["r0"], rect["c0"], rect["r1"], rect["c1"])
                    | polygon_mask(image.shape, poly["points"]) | (image < 0))
        assert rect["pixels"] > 1000 and poly["pixels"] > 1000

        # save as FIT2D .msk
        page.fill("#mask-name", "drawn")
        page.select_option("#mask-format", "msk")
        with page.expect_download() as info:
            page.click("#mask-save")
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert saved.name == "drawn.msk"
        assert np.array_equal(~read_mask(saved, image.shape), expected)  # the file holds what was drawn

        # clear, reload the file, and send it with the calibration
        page.click("#mask-clear")
        page.wait_for_function("() => document.querySelector('#mask-count').textContent.startsWith('0 of')")
        page.set_input_files("#mask-file", str(saved))
        page.wait_for_function("() => document.querySelector('#mask-msg').textContent.startsWith('Loaded drawn.msk')")
        assert page.text_content("#mask-count").startswith(f"{int(expected.sum())} of")
        page.select_option("#mask-target", "0")
        page.click("#mask-use")
        page.wait_for_function("() => document.querySelector('#mask-msg').textContent.includes('sent with the calibration')")
        page.click('.tabs button[data-tab="calibration"]')
        assert page.input_value(field("$.Masks[0].MaskFile")) == "drawn.npy"
        page.fill("#directory", "run")
        page.click("#start-queue")
        page.wait_for_function("() => document.querySelector('#start-msg').textContent.includes('Queue started')")
        assert wait_for(lambda: handler.session is not None, 30)
        (p,) = add_images(base, 1)
        handler.session.feeder_event(str(p))
        assert wait_for(lambda: handler.session.queue.history.latest_curves is not None, 60)
        got = handler.session.queue.history.latest_curves.curves[0]["array"]

        # the same mask built in NumPy, integrated with saxsdog
        cal = json.loads((data_dir / "cal.json").read_text())
        npy = tmp_path / "numpy_mask.npy"
        np.save(npy, expected.astype(np.uint8))
        cal["Masks"][0]["MaskFile"] = str(npy)
        curve = Calibration(cal, cache=False).curves(image)[0]
        assert np.allclose(np.asarray(got[0], float), curve.x, rtol=1e-12)
        want = np.where(np.isfinite(curve.intensity), curve.intensity, np.nan)
        assert np.allclose(np.asarray(got[1], float), want, rtol=1e-9, equal_nan=True)
        # and differs from the curve without the drawn shapes
        cal["Masks"][0]["MaskFile"] = str(data_dir / "AAA_integ.msk")
        other = Calibration(cal, cache=False).curves(image)[0]
        assert not np.allclose(np.asarray(got[1], float), other.intensity, rtol=1e-6, equal_nan=True)
        shoot(page, tmp_path, "leash-mask-editor.png")
        assert not page.problems, page.problems
    finally:
        context.close()


def test_mask_editor_undo_invert_threshold(page, server, data_dir):
    log_in(page, server.url)
    load_cal_and_show(page, data_dir)
    count = lambda: int(page.text_content("#mask-count").split()[0])  # noqa: E731
    page.fill("#mask-above", "100")
    page.click("#mask-threshold")
    page.wait_for_function("() => document.querySelector('#mask-msg').textContent.startsWith('Threshold')")
    above = count()
    assert above > 0
    page.click("#mask-invert")
    page.wait_for_function("() => document.querySelector('#mask-msg').textContent === 'Inverted.'")
    assert count() == 1043 * 981 - above
    page.click("#mask-undo")
    page.wait_for_function("() => document.querySelector('#mask-msg').textContent === 'Undone.'")
    assert count() == above
    page.click("#mask-redo")
    page.wait_for_function("() => document.querySelector('#mask-msg').textContent === 'Redone.'")
    assert count() == 1043 * 981 - above
    page.check('input[name="mask-tool"][value="circle"]')
    page.select_option("#mask-mode", "unmask")
    box = page.locator("#det-canvas").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 340, box["y"] + 300, steps=4)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#mask-msg').textContent.startsWith('Circle')")
    assert count() < 1043 * 981 - above
    assert not page.problems, page.problems


def test_calibrate_from_the_image_shown_and_accept(page, server, base, data_dir, tmp_path):
    pytest.importorskip("pyFAI")
    shutil.copy(data_dir / "agbeh2_1M.tif", base / "agbeh.tif")
    log_in(page, server.url)
    load_cal_and_show(page, data_dir, "agbeh.tif")
    page.wait_for_function("() => document.querySelector('#calibrant').options.length > 5")
    page.select_option("#calibrant", "AgBh")
    page.uncheck("#calib-use-mask")
    t0 = time.monotonic()
    page.click("#calib-run")
    page.wait_for_function("() => document.querySelector('#calib-msg').textContent.includes('rings fitted')", timeout=120_000)
    print(f"calibrated in the page in {time.monotonic() - t0:.2f} s (fit "
          f"{page.evaluate('() => window.saxsdogLeash.detector.fit.elapsed_s'):.2f} s)")
    rows = page.locator("#calib-rings tr").count() - 1
    assert rows >= 5
    assert "RMS" in page.text_content("#calib-geometry")
    shoot(page, tmp_path, "leash-calibrate.png")
    fitted = page.evaluate("() => window.saxsdogLeash.detector.fit.geometry")
    page.click("#calib-accept")
    page.wait_for_function("() => document.querySelector('#calib-msg').textContent.includes('Accepted')")
    page.click('.tabs button[data-tab="calibration"]')
    assert float(page.input_value(field("$.Geometry.DedectorDistanceMM"))) == pytest.approx(fitted["DetectorDistanceMM"])
    assert 800 < fitted["DetectorDistanceMM"] < 860
    assert page.input_value(field("$.Masks[0].MaskFile")) == "AAA_integ.msk"  # the rest is kept
    page.wait_for_function("() => document.querySelector('#cal-summary').textContent.includes('valid')")
    assert not page.problems, page.problems


def test_the_view_follows_the_queue(page, server, handler, base, data_dir):
    from webleash_helpers import calibration_request

    arg, att = calibration_request(data_dir)
    assert handler.execute("new", arg, att)["result"] == "new queue"
    (p,) = add_images(base, 1)
    handler.session.feeder_event(str(p))
    assert wait_for(lambda: handler.session.queue.history.latest is not None, 60)
    log_in(page, server.url)
    page.wait_for_function("() => document.querySelector('#queue-state').textContent.startsWith('queue')")
    page.click('.tabs button[data-tab="detector"]')  # a running queue: its latest frame at once
    page.wait_for_function("() => document.querySelector('#det-msg').textContent.startsWith('run/img_00000.tif')")
    page.check("#det-follow")
    (p,) = add_images(base, 1, start=1)
    handler.session.feeder_event(str(p))
    page.wait_for_function("() => document.querySelector('#det-msg').textContent.startsWith('run/img_00001.tif')",
                           timeout=60_000)
    assert not page.problems, page.problems


def test_detector_tab_usable_at_900_px(browser, server, data_dir, tmp_path):
    from test_browser import LAYOUT_PROBLEMS_JS

    context = browser.new_context(viewport={"width": 900, "height": 800})
    try:
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
        log_in(page, server.url)
        load_cal_and_show(page, data_dir)
        assert page.evaluate(LAYOUT_PROBLEMS_JS) == []
        overlap = page.evaluate("""() => {
            const [a, b] = [...document.querySelector('#tab-detector .detcols').children].map(e => e.getBoundingClientRect());
            return a.right > b.left + 1 && a.bottom > b.top + 1 && b.bottom > a.top + 1; }""")
        assert not overlap
        shoot(page, tmp_path, "leash-900-detector.png")
        assert not page.problems, page.problems
    finally:
        context.close()


def test_calibrate_an_uploaded_image_and_discard(page, server, data_dir):
    pytest.importorskip("pyFAI")
    log_in(page, server.url)
    page.set_input_files("#cal-file", str(data_dir / "cal.json"))
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
    page.click('.tabs button[data-tab="detector"]')
    page.wait_for_function("() => document.querySelector('#calibrant').options.length > 5")
    page.select_option("#calibrant", "AgBh")
    page.set_input_files("#calib-upload", str(data_dir / "agbeh2_1M.tif"))  # no frame shown: the upload is used
    page.click("#calib-run")
    page.wait_for_function("() => document.querySelector('#calib-msg').textContent.includes('rings fitted')", timeout=120_000)
    page.click("#calib-discard")
    page.wait_for_function("() => document.querySelector('#calib-msg').textContent === 'Fit discarded.'")
    assert page.is_disabled("#calib-accept")
    page.click('.tabs button[data-tab="calibration"]')
    assert page.input_value(field("$.Geometry.DedectorDistanceMM")) == "1031.657"  # the form is unchanged
    assert not page.problems, page.problems
