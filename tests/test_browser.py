"""report.html, leaderboard.html and dlrun-compare's page in a headless Chromium, from disk.

What a person does with them: the pages load without a console error, every picture
shows, a click on a column header sorts the table (a second click reverses it), every
link leads to a file that is there, the learning curves and the scatter respond, and
on a phone-sized screen the page does not scroll sideways (wide tables scroll inside
their own box). ``make test-browser`` installs Chromium and chromedriver from Debian's
packages and Selenium from PyPI, then runs these (``pytest -m browser``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.browser

IRIS = ["model=mlp", "data=iris", "trainer.epochs=3", "trainer.progress=none"]


def _find(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="make test-browser installs it")
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium/chromedriver: make test-browser installs them (apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_path)  # no driver download
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-job sweep, a 2-fold k-fold run and dlrun-compare's page of the sweep's jobs."""
    root = tmp_path_factory.mktemp("pages")
    sweep, kfold = root / "sweep", root / "kfold"
    done = run_cli("-m", *IRIS, "optimizer.lr=0.1,0.003", "eval.plots=true",
                   f"hydra.sweep.dir={sweep}", cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_cli(*IRIS, "eval.protocol=kfold", "eval.folds=2", "eval.plots=true",
                   f"hydra.run.dir={kfold}", cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    compare = [sys.executable, "-m", "dlrun.compare", str(sweep), "html=compare.html"]
    done = subprocess.run(compare, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return {
        "compare": root / "compare.html",
        "report": sweep / "0_mlp_iris" / "report.html",
        "leaderboard": sweep / "leaderboard.html",
        "kfold": kfold / "report.html",
        "fold": kfold / "fold_1" / "report.html",
    }


def open_page(driver, path: Path) -> list[dict]:
    """Load ``path``; return the console messages it produced."""
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


def column(driver, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))"
        ".map(r => r.cells[arguments[1]].textContent.trim())",
        table_id,
        index,
    )


def as_number(text: str) -> float:
    return float("inf") if text in ("", "n/a") else float(text)


@pytest.mark.parametrize("page", ["report", "leaderboard", "kfold", "fold", "compare"])
def test_page_loads_without_console_errors_and_every_image_shows(browser, pages, page) -> None:
    messages = open_page(browser, pages[page])
    assert [m for m in messages if m["level"] in ("SEVERE", "WARNING")] == []
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
    )
    for complete, width, alt in images:
        assert complete and width > 0, alt
    if page in ("report", "fold"):
        assert len(images) >= 4  # confusion matrix, ROC, PR, learning curves
    assert browser.title


def test_a_click_on_a_header_sorts_the_table_and_a_second_reverses_it(browser, pages) -> None:
    open_page(browser, pages["report"])
    header = browser.find_element("css selector", "#per-class thead th:nth-child(5) button")
    assert header.text.startswith("f1")
    header.click()
    ascending = [as_number(v) for v in column(browser, "per-class", 4)]
    assert ascending == sorted(ascending)
    header.click()
    descending = [as_number(v) for v in column(browser, "per-class", 4) if v != "n/a"]
    assert descending == sorted(descending, reverse=True)
    assert browser.find_element("css selector", "#per-class thead th:nth-child(5)")\
        .get_attribute("aria-sort") == "descending"  # fmt: skip
    by_name = browser.find_element("css selector", "#per-class thead th:nth-child(1) button")
    by_name.click()
    names = column(browser, "per-class", 0)
    assert names == sorted(names)


def test_leaderboard_sorts_by_a_metric_and_links_to_every_report(browser, pages) -> None:
    open_page(browser, pages["leaderboard"])
    headers = browser.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard thead th'))"
        ".map(h => h.textContent.trim())"
    )
    lr = next(i for i, h in enumerate(headers) if h.startswith("optimizer.lr"))
    browser.find_elements("css selector", "#leaderboard thead th button")[lr].click()
    assert [float(v) for v in column(browser, "leaderboard", lr)] == [0.003, 0.1]
    reports = browser.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard a')).map(a => a.href)"
    )
    assert sorted(Path(unquote(urlparse(u).path)).parent.name for u in reports) == [
        "0_mlp_iris", "1_mlp_iris"]  # fmt: skip


@pytest.mark.parametrize("page", ["report", "leaderboard", "kfold", "compare"])
def test_every_link_resolves(browser, pages, page) -> None:
    open_page(browser, pages[page])
    hrefs = browser.execute_script(
        "return Array.from(document.querySelectorAll('a'))"
        ".map(a => new URL(a.getAttribute('href'), document.baseURI).href)"
    )
    for href in hrefs:
        url = urlparse(href)
        assert url.scheme == "file", href  # nothing on the network
        target = Path(unquote(url.path))
        assert target.is_file(), href
        messages = open_page(browser, target)
        assert not [m for m in messages if m["level"] == "SEVERE"], href
        open_page(browser, pages[page])
    if page in ("leaderboard", "kfold", "compare"):
        assert len(hrefs) >= 2
    if page == "compare":  # a reader stays in the browser: each run links its report.html
        assert sorted(Path(unquote(urlparse(h).path)).relative_to(pages[page].parent).as_posix()
                      for h in hrefs) == ["sweep/0_mlp_iris/report.html",
                                          "sweep/1_mlp_iris/report.html"]  # fmt: skip


def test_learning_curves_switch_quantity_and_read_out_an_epoch(browser, pages) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, pages["report"])
    buttons = browser.find_elements("css selector", "figure.curves .controls button")
    assert [b.text for b in buttons] == ["loss", "accuracy", "lr"]
    monitor = json.loads((pages["report"].parent / "metrics.json").read_text())["train"]
    pressed = [b.text for b in buttons if b.get_attribute("aria-pressed") == "true"]
    assert pressed == [monitor["monitor"].removeprefix("val_")]  # the monitored one first
    buttons[2].click()
    buttons[0].click()
    keys = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.curves polyline'))"
        ".map(p => p.dataset.key + ':' + p.getAttribute('points').split(' ').length)"
    )
    assert keys == ["loss:3", "val_loss:3"]
    svg = browser.find_element("css selector", "figure.curves svg")
    ActionChains(browser).move_to_element(svg).perform()
    readout = browser.find_element("css selector", "figure.curves .readout").text
    assert readout.startswith("epoch ") and "val_loss" in readout


def test_scatter_draws_every_job_and_links_it(browser, pages) -> None:
    open_page(browser, pages["leaderboard"])
    points = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.scatter circle'))"
        ".map(c => [c.dataset.job, c.parentNode.getAttribute('href')])"
    )
    assert sorted(points) == [["0_mlp_iris", "0_mlp_iris/report.html"],
                              ["1_mlp_iris", "1_mlp_iris/report.html"]]  # fmt: skip
    root = pages["leaderboard"].parent
    assert all((root / href).is_file() for _, href in points)


@pytest.mark.parametrize("page", ["report", "leaderboard", "compare"])
def test_a_phone_sized_screen_does_not_scroll_sideways(browser, pages, page) -> None:
    browser.set_window_size(390, 844)
    try:
        open_page(browser, pages[page])
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert widths[0] <= widths[1], widths
        font = browser.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 14
    finally:
        browser.set_window_size(1200, 900)
