"""The survey's report.html rendered in a real browser: headless Chromium (Debian's chromium and chromium-driver,
which `make test` installs where it can) driven by Selenium. No console errors, every figure loaded, the sections
there; a screenshot of the page is saved under the survey's outputs/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SECTIONS = ["Heatmaps", "Published findings, checked on this run", "Trained model, per method",
            "Sanity checks: similarity to the trained model's heatmaps", "Sanity checks for metrics (Tomsett et al.)",
            "Models"]
FIGURES = ["heatmaps_trained", "aopc_curves", "roar_kar", "roar_fills", "input_invariance", "cascading_grid",
           "cascading_randomization", "cem", "maximize", "explainvis", "words", "spray", "tcav",
           "metrics_vs_truth"]  # in page order


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("no headless browser: `make test` installs Debian's chromium and chromium-driver when it runs "
                    "as root with apt-get; elsewhere install them (or set PATH) to run the report's browser test")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency: make install")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    yield drv
    drv.quit()


def render(drv, page: Path) -> dict:
    """Open ``page`` and read what the test asserts: console errors, images (alt, natural width), section titles."""
    drv.get(page.as_uri())
    return {"errors": [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"],
            "images": drv.execute_script(
                "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth])"),
            "sections": drv.execute_script(
                "return Array.from(document.querySelectorAll('section > h2')).map(h => h.textContent)")}


def test_the_checks_see_a_broken_page(browser, tmp_path):
    """The same checks fail on a page with a missing image and a script error (so they can fail)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><section><h2>A</h2><img alt="gone" src="missing.png"></section>'
                    "<script>undefinedFunction()</script></body></html>")
    seen = render(browser, page)
    assert ["gone", 0] in seen["images"]
    assert any("undefinedFunction" in e for e in seen["errors"])
    assert seen["sections"] == ["A"]


def test_report_html_in_headless_chromium(browser, tiny_survey):
    page = tiny_survey.root / "report.html"
    assert page.is_file(), "the survey flow wrote no report.html"
    seen = render(browser, page)
    assert seen["errors"] == []
    assert [alt for alt, _ in seen["images"]] == FIGURES
    assert all(width > 0 for _, width in seen["images"]), seen["images"]
    assert seen["sections"][:len(SECTIONS) - 1] == SECTIONS[:-1] and seen["sections"][-1] == "Models"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(int(height), 16000))
    shot = tiny_survey.root / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
