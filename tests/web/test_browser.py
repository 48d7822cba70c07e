"""The web leash in a real headless Chromium (Debian's), driven by Playwright.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` Python
package; Playwright's own browser download is never used.  Screenshots go to the test's
``tmp_path`` and, when ``SAXSDOG_ARTIFACTS`` is set, into that folder too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from saxsdog.testing import wait_for

from webleash_helpers import SECRET, add_images

CHROMIUM = Path(os.environ.get("SAXSDOG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    profile = tempfile.mkdtemp(prefix="saxsdog-chromium-")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=CHROMIUM_ARGS + [f"--disk-cache-dir={profile}/cache"])
        yield b
        b.close()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(browser, accept_downloads: bool = False):
    """A new browser context and its page; ``page.problems`` collects JavaScript exceptions
    and console errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=accept_downloads)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.problems = []
    pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: msg.type == "error" and pg.problems.append(f"console: {msg.text}"))
    return context, pg


@pytest.fixture
def page(browser):
    context, pg = open_page(browser)
    yield pg
    context.close()


def shoot(page, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    artifacts = os.environ.get("SAXSDOG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(artifacts) / name)
    return out


def log_in(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#secret", SECRET)
    page.click("#login-button")
    page.wait_for_selector("#app", state="visible")
    page.wait_for_selector('#cal-form fieldset[data-path="$"]')  # the form generated from the schema
    assert page.input_value("#secret") == ""  # the form forgets the secret


def field(path: str) -> str:
    return f'#cal-form [data-path-input="{path}"]'


def err(path: str) -> str:
    return f'#cal-form [data-err-path="{path}"]'


@pytest.mark.slow
def test_calibrate_start_and_watch(page, server, handler, base, data_dir, tmp_path):
    log_in(page, server.url)
    assert page.is_visible("#conn") and page.wait_for_function(
        "() => document.querySelector('#conn').textContent === 'live'")

    # -- the calibration form comes from the JSON Schema -------------------------------
    distance = field("$.Geometry.DedectorDistanceMM")
    page.wait_for_selector(distance)
    assert page.get_attribute(distance, "title")  # the schema's description as tooltip
    assert page.locator(field('$.Slices')).count() == 0 and page.locator('[data-add="$.Slices"]').count() == 1
    page.fill(distance, "-5")
    page.wait_for_function(f"() => document.querySelector('{err('$.Geometry.DedectorDistanceMM')}').textContent.includes('> 0')")
    assert "invalid" in page.get_attribute(distance, "class")
    page.fill(distance, "abc")
    page.wait_for_function(f"() => document.querySelector('{err('$.Geometry.DedectorDistanceMM')}').textContent.includes('not a number')")
    # the other spelling of a present field is not offered (it would make the file invalid) ...
    assert page.locator('[data-add="$.Geometry.DetectorDistanceMM"]').count() == 0
    assert page.locator('[data-add="$.Geometry.ImageSize"]').count() == 0
    # ... but a problem only the server finds (both spellings in a loaded file) shows at its object
    both = json.loads((data_dir / "cal.json").read_text())
    both["Geometry"]["DetectorDistanceMM"] = both["Geometry"]["DedectorDistanceMM"]
    (tmp_path / "both.json").write_text(json.dumps(both))
    page.set_input_files("#cal-file", str(tmp_path / "both.json"))
    page.wait_for_function(f"() => document.querySelector('{err('$.Geometry')}').textContent.includes('exactly one of')")
    assert "$.Geometry" in page.text_content("#cal-summary")
    page.click('#cal-form [data-path="$.Geometry.DetectorDistanceMM"] button.remove')
    page.wait_for_function(f"() => document.querySelector('{err('$.Geometry')}').textContent === ''")
    # arrays: add and remove items
    page.click('[data-add="$.Masks"]')
    page.wait_for_selector(field("$.Masks[1].MaskFile"))
    page.click('#cal-form [data-path="$.Masks[1]"] > legend button.remove')
    page.wait_for_selector(field("$.Masks[1].MaskFile"), state="detached")
    shoot(page, tmp_path, "leash-calibration-errors.png")

    # -- load cal.json and the mask, preview, directory, start ----------------------------
    page.set_input_files("#cal-file", str(data_dir / "cal.json"))
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
    page.wait_for_function("() => document.querySelector('#cal-summary').textContent.includes('valid')")
    assert page.text_content(err("$.Geometry.DedectorDistanceMM")) == ""
    assert page.is_checked(field("$.Live-Filelisting"))
    assert page.locator(f"select{field('$.Masks[0].Phi-mode')}").count() == 0  # booleans are checkboxes
    page.set_input_files("#mask-file-0", str(data_dir / "AAA_integ.msk"))
    page.wait_for_function("() => document.querySelector('#mask-name-0').textContent.includes('AAA_integ.msk')")

    page.fill("#preview-image", "template.tif")
    page.click("#preview-button")
    page.wait_for_function("() => (() => { const i = document.querySelector('#preview-img');"
                           " return !i.hidden && i.complete && i.naturalWidth > 300; })()")

    page.click("#browse-dir")
    page.click("#browser li.dir:text-is('run')")
    page.wait_for_function("() => document.querySelector('#browser .path').textContent === '/run'")
    page.click("#browser button:text('Use this directory')")
    assert page.input_value("#directory") == "run"
    shoot(page, tmp_path, "leash-calibration.png")

    page.click("#start-queue")
    page.wait_for_function("() => document.querySelector('#start-msg').textContent.includes('Queue started')")
    assert wait_for(lambda: handler.session is not None, 30)
    assert handler.session.calibration_raw["Geometry"]["DedectorDistanceMM"] == 1031.657

    # -- images arrive: the Plots tab shows the latest curve ---------------------------
    for p in add_images(base, 5):
        assert handler.session.feeder_event(str(p)) is None
    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_function("() => document.querySelector('#plot-file').textContent.startsWith('run/img_')")
    page.wait_for_selector("#plot-main .scatterlayer .trace")
    assert page.locator("#plot-main .scatterlayer .trace").count() >= 2  # the curve and its error band
    assert re.match(r"^\d", page.text_content("#plot-params tr:nth-child(2) td:nth-child(2)"))
    page.check("#band-std")
    page.check("#logx")
    page.wait_for_selector("#plot-main .xaxislayer-above .xtick")
    assert page.locator("#plot-main .scatterlayer .trace").count() >= 3
    shoot(page, tmp_path, "leash-plots.png")

    # -- the History tab follows the queue ----------------------------------------------
    assert wait_for(lambda: handler.stat()["images processed"] == 5, 60)
    page.click('.tabs button[data-tab="history"]')
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('5 image')")
    for p in add_images(base, 4, start=5):
        handler.session.feeder_event(str(p))
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('9 image')", timeout=60_000)
    assert page.locator("#hist-i0 .scatterlayer .point").count() == 9
    assert page.locator("#hist-corr .scatterlayer .point").count() == 9
    assert page.locator("#hist-dir option[value='run']").count() == 1
    page.select_option("#hist-dir", "run")
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.includes('in run')")
    shoot(page, tmp_path, "leash-history.png")

    # -- the Server tab shows the statistics ---------------------------------------------
    page.click('.tabs button[data-tab="server"]')
    page.wait_for_function("() => document.querySelector('#stat-table').textContent.includes('images processed9')")
    page.wait_for_function("() => document.querySelector('#state-table').textContent.includes('done9')")
    assert "integrate" in page.text_content("#stage-table")
    shoot(page, tmp_path, "leash-server.png")
    page.click('.tabs button[data-tab="consolidate"]')
    page.click("#merge-get")
    page.wait_for_function("() => document.querySelector('#merge-msg').textContent.length > 0")
    assert "error" in page.get_attribute("#merge-msg", "class")  # nothing merged yet: the server says why

    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_selector("#plot-main .scatterlayer .trace")
    shoot(page, tmp_path, "leash.png")
    assert not page.problems, page.problems


@pytest.mark.slow
def test_launch_link_logs_in_once(browser, server, tmp_path):
    code = server.app.state.auth.new_launch_code()
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(f"{server.url}/#code={code}")
        pg.wait_for_selector("#app", state="visible")
        assert "#code" not in pg.url  # the fragment is dropped from the address bar
        pg.reload()  # the HttpOnly cookie keeps the session
        pg.wait_for_selector("#app", state="visible")
    finally:
        context.close()
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(f"{server.url}/#code={code}")  # used already
        pg.wait_for_selector("#login", state="visible")
        assert "already used or has expired" in pg.text_content("#login-error")
        pg.fill("#secret", "not the secret")
        pg.click("#login-button")
        pg.wait_for_function("() => document.querySelector('#login-error').textContent.includes('Wrong secret')")
        assert pg.is_hidden("#app")
        shoot(pg, tmp_path, "leash-login.png")
    finally:
        context.close()


@pytest.mark.slow
def test_fit2d_and_poni_imports(page, server, data_dir, tmp_path):
    log_in(page, server.url)
    page.set_input_files("#cal-file", str(data_dir / "cal.json"))
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
    page.click("#fit2d-paste summary")
    page.fill("#fit2d-text", "INFO: Refined sample to detector distance =     2000.5 mm\n"
                             "INFO: Refined wavelength =      1.00000 Angstroms\n")
    page.click("#fit2d-convert")
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '2000.5'")
    assert page.input_value(field("$.Wavelength")) == "1"
    assert page.input_value(field("$.Masks[0].MaskFile")) == "AAA_integ.msk"  # the rest is kept
    page.fill("#fit2d-text", "no numbers here")
    page.click("#fit2d-convert")
    page.wait_for_function("() => document.querySelector('#cal-msg').textContent.includes('FIT2D import failed')")

    pytest.importorskip("pyFAI")
    import json

    from saxsdog.io.poni import calibration_to_poni_text

    poni = tmp_path / "geometry.poni"
    poni.write_text(calibration_to_poni_text(json.loads((data_dir / "cal.json").read_text())))
    page.set_input_files("#poni-file", str(poni))
    page.wait_for_function("() => document.querySelector('#cal-msg').textContent.includes('PONI')")
    value = float(page.input_value(field("$.Geometry.DedectorDistanceMM")))
    assert value == pytest.approx(1031.657, rel=1e-6)
    page.wait_for_function("() => document.querySelector('#cal-summary').textContent.includes('valid')")


@pytest.mark.slow
def test_save_json_merge_and_abort(browser, server, handler, base, data_dir, tmp_path):
    """The actions not covered above: the calibration downloads as JSON; a merge with a
    server-side and a browser-sent log table shows its rows; Abort asks first."""
    import json

    import numpy as np

    from saxsdog.merge import unix_to_mac
    from saxsdog.testing import write_pilatus_tiff

    context, page = open_page(browser, accept_downloads=True)
    try:
        log_in(page, server.url)
        # -- Save JSON: the calibration in the form, as a file ---------------------------------
        page.set_input_files("#cal-file", str(data_dir / "cal.json"))
        page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
        page.fill(field("$.Geometry.DedectorDistanceMM"), "1500.25")
        page.wait_for_function("() => document.querySelector('#cal-summary').textContent.includes('valid')")
        with page.expect_download() as info:
            page.click("#cal-save")
        download = info.value
        saved = json.loads(Path(download.path()).read_text())
        original = json.loads((data_dir / "cal.json").read_text())
        assert download.suggested_filename.endswith(".json")
        assert saved["Geometry"]["DedectorDistanceMM"] == 1500.25  # the edit is in the file
        original["Geometry"]["DedectorDistanceMM"] = 1500.25
        assert saved == original  # and nothing else changed

        # -- Consolidate: merge 6 images' header times with two log tables ----------------------
        start = 1391171212.0  # image k at start + 10 k + 0.3 (header times are local time)
        from datetime import datetime

        for k in range(6):
            write_pilatus_tiff(base / "merge" / f"m_{k:05d}.tif", np.zeros((6, 5), np.int32),
                               datetime.fromtimestamp(start + 10 * k + 0.3))
        (base / "logs").mkdir()
        (base / "logs" / "datalogger.log").write_text(
            "Time\tIoni\n" + "".join(f"{unix_to_mac(start - 5 + i):.3f}\t{1000 + i}\n" for i in range(80)))
        shutter = tmp_path / "peakinteg.log"  # on "this computer"
        shutter.write_text("Time\tDiode\n" + "".join(f"{start + 10 * k + 0.25:.3f}\t{5 + k}\n" for k in range(6)))
        conf = {"LogDataTables": [
                    {"Name": "Dlog", "TimeEpoch": "Mac", "Files": [{"RemotePath": ["logs", "datalogger.log"]}]},
                    {"Name": "Peak", "TimeEpoch": "Unix", "Files": [{"LocalPath": "C:\\logs\\peakinteg.log"}]}],
                "Images": {"Directory": "merge"},
                "OutputFormats": {"csv": True, "json": False, "hdf": False, "exel": False},
                "OutputFileName": "results/merged"}
        page.click('.tabs button[data-tab="consolidate"]')
        assert json.loads(page.input_value("#merge-conf"))["LogDataTables"]  # the example is there
        page.fill("#merge-conf", json.dumps(conf))
        page.click("#merge-run")  # the LocalPath file has not been chosen yet
        page.wait_for_function("() => document.querySelector('#merge-msg').textContent.includes('choose this file')")
        assert "error" in page.get_attribute("#merge-msg", "class")
        page.set_input_files("#merge-logs", str(shutter))
        assert "peakinteg.log" in page.text_content("#merge-logs-names")
        page.click("#merge-run")
        page.wait_for_function("() => document.querySelector('#merge-msg').textContent.startsWith('Merged 6 row(s)')")
        assert "results/merged.csv" in page.text_content("#merge-msg")
        assert (base / "results" / "merged.csv").is_file()
        page.click("#merge-get")
        page.wait_for_function("() => document.querySelector('#merge-msg').textContent === '6 row(s)'")
        headers = page.locator("#merge-table th").all_text_contents()
        rows = [page.locator(f"#merge-table tr:nth-child({k + 2}) td").all_text_contents() for k in range(6)]
        ioni, diode = headers.index("Ioni (Dlog)"), headers.index("Diode (Peak)")
        assert [r[ioni] for r in rows] == [str(1000 + 10 * k + 5) for k in range(6)]
        assert [r[diode] for r in rows] == [str(5 + k) for k in range(6)]
        path, image_time = headers.index("path"), headers.index("image_time")
        assert [r[path] for r in rows] == [f"merge/m_{k:05d}.tif" for k in range(6)]  # relative to the base
        assert [float(r[image_time]) for r in rows] == pytest.approx([start + 10 * k + 0.3 for k in range(6)],
                                                                     abs=1e-3)
        shoot(page, tmp_path, "leash-consolidate.png")

        # -- Abort asks first; dismissing keeps the queue --------------------------------------
        from webleash_helpers import calibration_request

        arg, att = calibration_request(data_dir)
        assert handler.execute("new", arg, att)["result"] == "new queue"
        paths = add_images(base, 1500)
        for p in paths:
            handler.session.feeder_event(str(p))
        page.click('.tabs button[data-tab="server"]')
        asked = []
        page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        page.click("#srv-abort")
        assert wait_for(lambda: asked, 10) and "Abort the queue" in asked[0]
        page.wait_for_timeout(300)
        assert handler.session is not None  # nothing was sent
        page.once("dialog", lambda d: d.accept())
        page.click("#srv-abort")
        page.wait_for_function("() => document.querySelector('#srv-msg').textContent.includes('stopped emptied and closed')")
        assert handler.session is None
        time.sleep(1.0)  # nothing more may appear after the abort
        done = len(list((base / "work").glob("img_*.chi")))
        print(f"{done} of {len(paths)} images processed before the abort")
        assert done < len(paths)  # the waiting images were dropped, not processed
        assert not page.problems, page.problems
    finally:
        context.close()


def start_queue_in_page(page, data_dir) -> None:
    page.set_input_files("#cal-file", str(data_dir / "cal.json"))
    page.wait_for_function(f"() => document.querySelector('{field('$.Geometry.DedectorDistanceMM')}').value === '1031.657'")
    page.set_input_files("#mask-file-0", str(data_dir / "AAA_integ.msk"))
    page.wait_for_function("() => document.querySelector('#mask-name-0').textContent.includes('AAA_integ.msk')")
    page.fill("#directory", "run")
    page.click("#start-queue")
    page.wait_for_function("() => document.querySelector('#start-msg').textContent.includes('Queue started')")


@pytest.mark.slow
def test_start_readdir_plots_history_while_images_arrive(page, server, handler, base, data_dir, tmp_path):
    """The sequence that froze the page (Start queue, Read directory, Plots, History while
    images arrive): History reaches every image and later commands are answered."""
    import threading

    add_images(base, 20)  # already there when the queue starts: Read directory queues them
    log_in(page, server.url)
    start_queue_in_page(page, data_dir)
    assert wait_for(lambda: handler.session is not None, 30)

    def arrive():
        for p in add_images(base, 40, start=20):
            handler.session.feeder_event(str(p))
            time.sleep(0.05)

    feeder = threading.Thread(target=arrive, daemon=True)
    feeder.start()
    page.click('.tabs button[data-tab="server"]')
    page.click("#srv-readdir")
    page.wait_for_function("() => document.querySelector('#srv-msg').textContent.includes('image(s) queued')")
    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_function("() => document.querySelector('#plot-file').textContent.startsWith('run/img_')")
    page.click('.tabs button[data-tab="history"]')
    feeder.join(30)
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('60 image')",
                           timeout=120_000)
    assert page.text_content("#conn") == "live"
    # later commands from the same page are answered
    t0 = time.monotonic()
    page.click('.tabs button[data-tab="server"]')
    page.wait_for_function("() => document.querySelector('#state-table').textContent.includes('done60')",
                           timeout=60_000)
    assert page.text_content("#output-folder") == "work"  # the queue's output folder, relative to the base
    page.click("#srv-close")
    page.wait_for_function("() => document.querySelector('#srv-msg').textContent.includes('queue closed')")
    print(f"file list and close answered in {time.monotonic() - t0:.2f} s")
    assert page.text_content("#conn") == "live"
    assert not page.problems, page.problems


@pytest.mark.slow
def test_commands_after_the_page_idled_past_the_keep_alive_are_answered(page, server, handler, base, data_dir):
    """The cause of the freeze: the page idles after Start queue longer than the server keeps an
    idle connection (5 s), then Read directory, Plots and History while images arrive.

    On e665fb8 the workers forked by 'new' held copies of the page's open connections, so the
    ones the server closed stayed open for the browser, which sent the next commands into them:
    Read directory and plotdata never got an answer.  Here every command is answered, none runs
    into the page's deadline, and History reaches every image."""
    import threading

    add_images(base, 20)
    log_in(page, server.url)
    start_queue_in_page(page, data_dir)  # forks the workers while the page's connections are open
    assert wait_for(lambda: handler.session is not None, 30)
    # A fixed wait on purpose: the page must sit idle past the server's keep-alive timeout (5 s),
    # so that the connections it opened before the fork are closed by the server.
    time.sleep(6.5)

    def arrive():
        for p in add_images(base, 40, start=20):
            handler.session.feeder_event(str(p))
            time.sleep(0.05)

    feeder = threading.Thread(target=arrive, daemon=True)
    page.click('.tabs button[data-tab="server"]')
    t0 = time.monotonic()
    page.click("#srv-readdir")
    feeder.start()
    page.wait_for_function("() => document.querySelector('#srv-msg').textContent.includes('image(s) queued')",
                           timeout=15_000)
    readdir_s = time.monotonic() - t0
    page.click('.tabs button[data-tab="plots"]')
    page.wait_for_function("() => document.querySelector('#plot-file').textContent.startsWith('run/img_')")
    page.click('.tabs button[data-tab="history"]')
    feeder.join(30)
    page.wait_for_function("() => document.querySelector('#hist-count').textContent.startsWith('60 image')",
                           timeout=60_000)
    print(f"Read directory answered {readdir_s:.2f} s after the click, 6.5 s after Start queue")
    assert readdir_s < 10, readdir_s
    assert page.evaluate("() => window.saxsdogLeash.health.timeouts") == 0  # no request ran into its deadline
    assert page.text_content("#conn") == "live"
    assert not page.problems, page.problems


@pytest.mark.slow
def test_a_hung_server_shows_as_not_answering(page, server, handler, base, data_dir):
    """Commands and statistics that get no answer (the server's command side hangs while its
    connections stay open) show "not answering" instead of "live", fail with a message after
    their deadline, and the page recovers by itself once the server answers again."""
    import threading

    log_in(page, server.url)
    page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
    page.evaluate("() => { window.saxsdogLeash.settings.timeoutMs = 3000; }")
    release = threading.Event()
    execute, stat = handler.execute, handler.stat
    handler.execute = lambda *a, **k: (release.wait(60), execute(*a, **k))[1]
    handler.stat = lambda: (release.wait(60), stat())[1]
    try:
        page.click('.tabs button[data-tab="server"]')
        page.click("#srv-files")
        page.wait_for_function("() => document.querySelector('#conn').textContent === 'not answering'",
                               timeout=15_000)
        assert "warn" in page.get_attribute("#conn", "class")
        page.wait_for_function("() => document.querySelector('#srv-msg').textContent.includes('did not answer')",
                               timeout=15_000)
        assert "error" in page.get_attribute("#srv-msg", "class")
    finally:
        release.set()
        handler.execute, handler.stat = execute, stat
    page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'", timeout=20_000)
    page.click("#srv-files")
    page.wait_for_function("() => document.querySelector('#state-table').textContent.includes('no queue')")
    assert not page.problems, page.problems


LAYOUT_PROBLEMS_JS = """() => {
  const out = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width + 1) out.push(`page ${document.documentElement.scrollWidth} px wide`);
  const visible = e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden';
  for (const grid of document.querySelectorAll('.tab.active .cols, .tab.active .cols3, .tab.active .grid2')) {
    const kids = [...grid.children].filter(visible).map(k => k.getBoundingClientRect());
    for (let i = 0; i < kids.length; i++) for (let j = i + 1; j < kids.length; j++) {
      const a = kids[i], b = kids[j];
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
        out.push(`${grid.className} columns ${i} and ${j} overlap`);
    }
    for (const col of [...grid.children].filter(visible)) {
      const c = col.getBoundingClientRect();
      for (const e of col.querySelectorAll('fieldset, input, button, select, .unit'))
        if (visible(e) && e.getBoundingClientRect().right > c.right + 1)
          out.push(`${e.id || e.getAttribute('data-path-input') || e.tagName} sticks out of its column`);
    }
  }
  for (const e of document.querySelectorAll('.tab.active input, .tab.active button, .tab.active select, .tab.active .unit')) {
    if (!visible(e)) continue;
    const r = e.getBoundingClientRect();
    const box = e.closest('fieldset, .plot, table, .toolbar') || document.body;
    const b = box.getBoundingClientRect();
    if (r.right > width + 1 || r.right > b.right + 1) out.push(`${e.id || e.getAttribute('data-path-input') || e.textContent} sticks out`);
  }
  return out;
}"""


@pytest.mark.slow
def test_usable_at_900_px_with_units_and_named_beam_centre(browser, server, handler, base, data_dir, tmp_path):
    """At 900 × 800 nothing overlaps or sticks out; every number of the calibration shows its
    unit, the beam centre names its axes, and the Server tab's file list follows the queue
    and names the output folder."""
    context = browser.new_context(viewport={"width": 900, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.problems = []
        page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
        log_in(page, server.url)
        start_queue_in_page(page, data_dir)
        assert page.evaluate(LAYOUT_PROBLEMS_JS) == []
        shoot(page, tmp_path, "leash-900-calibration.png")
        units = {p: page.text_content(f'#cal-form [data-unit-for="{p}"]') for p in (
            "$.Geometry.DedectorDistanceMM", "$.Geometry.BeamCenter", "$.Geometry.PixelSizeMicroM",
            "$.Geometry.Imagesize", "$.Geometry.Tilt.TiltRotDeg", "$.Geometry.Tilt.TiltAngleDeg", "$.Wavelength",
            "$.Masks[0].qStart", "$.Masks[0].qStop", "$.Masks[0].PixelPerRadialElement")}
        assert units == {"$.Geometry.DedectorDistanceMM": "mm", "$.Geometry.BeamCenter": "pixels",
                         "$.Geometry.PixelSizeMicroM": "µm", "$.Geometry.Imagesize": "pixels",
                         "$.Geometry.Tilt.TiltRotDeg": "°", "$.Geometry.Tilt.TiltAngleDeg": "°",
                         "$.Wavelength": "Å", "$.Masks[0].qStart": "nm⁻¹", "$.Masks[0].qStop": "nm⁻¹",
                         "$.Masks[0].PixelPerRadialElement": "pixels"}
        # every number field has a unit beside it
        numbers = page.evaluate("""() => [...document.querySelectorAll('#cal-form .field')]
            .filter(f => f.querySelector('input[inputmode=decimal]'))
            .filter(f => !f.querySelector(':scope > .control > .unit, :scope > .control .unit'))
            .map(f => f.getAttribute('data-path'))""")
        assert numbers == []
        beam = page.locator('#cal-form [data-path="$.Geometry.BeamCenter"] .item-label').all_text_contents()
        assert beam == ["vertical", "horizontal"]
        assert page.get_attribute(field("$.Geometry.BeamCenter[0]"), "aria-label") == "BeamCenter vertical"

        page.click('.tabs button[data-tab="server"]')
        page.wait_for_function("() => document.querySelector('#state-table').textContent.length > 0")
        for p in add_images(base, 3):
            handler.session.feeder_event(str(p))
        # no click: the list follows the queue while the tab shows
        page.wait_for_function("() => document.querySelector('#state-table').textContent.includes('done3')",
                               timeout=60_000)
        assert page.text_content("#output-folder") == "work"
        for p in add_images(base, 2, start=3):
            handler.session.feeder_event(str(p))
        page.wait_for_function("() => document.querySelector('#state-table').textContent.includes('done5')",
                               timeout=60_000)
        assert page.evaluate(LAYOUT_PROBLEMS_JS) == []
        shoot(page, tmp_path, "leash-900-server.png")
        for tab in ("plots", "history", "consolidate"):
            page.click(f'.tabs button[data-tab="{tab}"]')
            page.wait_for_timeout(200)
            assert page.evaluate(LAYOUT_PROBLEMS_JS) == [], tab
        assert not page.problems, page.problems
    finally:
        context.close()


@pytest.mark.slow
def test_a_stopped_server_process_shows_as_not_answering(page, base, tmp_path):
    """SIGSTOP of the real saxsdogserver process: its sockets stay open (the kernel still
    accepts connections), so only deadlines can tell.  The header says "not answering", a
    command fails with a message, and after SIGCONT the page is live again by itself."""
    import signal
    import subprocess
    import sys

    pytest.importorskip("zmq")
    from saxsdog.protocol.netconf import make_entry, write_network
    from saxsdog.testing import free_port

    net = tmp_path / "network.json"
    write_network([make_entry(server=f"tcp://127.0.0.1:{free_port()}", feeder="tcp://127.0.0.1:5555",
                              name="test", secret=SECRET)], net)
    proc = subprocess.Popen([sys.executable, "-m", "saxsdog.cli.server", str(base), "--network", str(net),
                             "--no-feeder", "--rescan", "0", "-t", "1", "--http-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the server ended before serving"
            m = re.search(r"web leash (http://127\.0\.0\.1:\d+)", line)
            url = m and m.group(1)
        assert url, "the server did not report its web leash"
        log_in(page, url)
        page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
        page.evaluate("() => { window.saxsdogLeash.settings.timeoutMs = 3000; }")
        page.click('.tabs button[data-tab="server"]')
        os.kill(proc.pid, signal.SIGSTOP)  # the server process only, not its group
        t0 = time.monotonic()
        page.wait_for_function("() => document.querySelector('#conn').textContent === 'not answering'",
                               timeout=15_000)
        print(f"'not answering' {time.monotonic() - t0:.1f} s after SIGSTOP")
        page.click("#srv-files")
        page.wait_for_function("() => document.querySelector('#srv-msg').textContent.includes('did not answer')",
                               timeout=15_000)
        os.kill(proc.pid, signal.SIGCONT)
        page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'", timeout=30_000)
        page.click("#srv-files")
        page.wait_for_function("() => document.querySelector('#state-table').textContent.includes('no queue')")
        assert not page.problems, page.problems
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
