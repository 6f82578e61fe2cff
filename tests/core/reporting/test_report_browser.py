"""The HTML report in a real browser: headless Chromium (Debian's chromium + chromium-driver) through Selenium.

Skips, with the reason, where either is missing (`.ci/run` installs them when it can). The screenshot is
written to $MMFAIR_SCREENSHOT (default: the test's tmp folder) for a person to look at.
"""

import os
import shutil
from pathlib import Path

import pytest

from mmfair.core import pipeline
from mmfair.core.config import ReportConfig
from mmfair.core.reporting.html import SECTIONS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    if not (CHROMIUM and DRIVER):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,3000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_report_renders_in_chromium(results_ws, browser, tmp_path):
    _, path, _ = pipeline.report(ReportConfig(format="html", figures=False), results_ws)
    browser.get(Path(path).resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    # every resource the page asked for (there should be none beyond the page itself) loaded
    failed = browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.responseStatus >= 400 || "
        "(e.transferSize === 0 && e.decodedBodySize === 0 && !e.name.startsWith('data:'))).map(e => e.name)")
    assert failed == []
    headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    assert headings == list(SECTIONS.values())
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure')).map(f => { const r = f.querySelector('svg')"
        ".getBoundingClientRect(); return [f.dataset.figure, r.width, r.height]; })")
    assert len(sizes) == 11  # with the reliability diagram of the fixture's mortality runs
    assert all(w > 50 and h > 50 for _, w, h in sizes), sizes
    shot = Path(os.environ.get("MMFAIR_SCREENSHOT", tmp_path / "report.png"))
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1100, min(int(height) + 100, 16000))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
