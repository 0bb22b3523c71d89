"""The live patching panel in a real browser: a JupyterLab server on localhost, headless Chromium
(driven by Selenium) opens ``notebooks/05_interactive.ipynb``, runs it, clicks a component of
the map, and the readout changes. Screenshots before and after the click are written next to
the test's files (and into ``$P0_PANEL_SCREENSHOTS`` when set).

Locally a missing Chromium skips this test; in CI (``CI=true``) it fails it, as the report
tests do.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
DRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "chromium / chromedriver not installed (apt-get install chromium chromium-driver)"
            )
        pytest.skip(
            "chromium / chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    shutil.copy(ROOT / "notebooks" / "05_interactive.ipynb", tmp_path / "05_interactive.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "P0_NOTEBOOK_SMALL": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.allow_root=True",
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "lab.log", "w"),
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}/lab/tree/05_interactive.ipynb?token={token}", tmp_path
    finally:
        server.terminate()
        server.wait(30)


def _readout(driver) -> str:
    found = driver.find_elements("css selector", ".p0-readout-values")
    return found[0].text if found else ""


def _show_panel(driver) -> None:
    """Scroll the panel (the first cell's output) to the top of the window for a screenshot."""
    driver.execute_script("document.querySelector('.p0-panel').scrollIntoView({block: 'start'})")
    time.sleep(0.5)


def _text(driver, css: str) -> str:
    found = driver.find_elements("css selector", css)
    return found[0].text if found else ""


def _says_what_it_shows(driver, readout: str, *, per_layer: bool) -> None:
    """The map's legend names the quantity its colours show and its colour scale has numbers;
    the chart has a value axis naming the readout with ticks, and a legend."""
    legend = _text(driver, ".p0-map-legend")
    assert readout in legend and "blue: the patch lowers it" in legend, legend
    scale = [t.text for t in driver.find_elements("css selector", ".p0-scale text")]
    assert len(scale) == 3 and scale[0].startswith("−") and scale[2].endswith("%"), scale
    ylabel = _text(driver, ".p0-curve .p0-ylabel")
    assert readout.split()[0] in ylabel, ylabel
    assert len(driver.find_elements("css selector", ".p0-curve .p0-ytick")) >= 3
    names = [t.text for t in driver.find_elements("css selector", ".p0-curve .p0-legend")]
    assert names == ["clean", "patched"], names
    if per_layer:
        assert driver.find_elements("css selector", ".p0-curve .p0-xtick")
    else:
        assert driver.find_elements("css selector", ".p0-curve .p0-bar-clean")


def _wait(driver, condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return
        except Exception:  # the page is still building
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_panel_runs_in_jupyterlab_and_a_click_changes_the_readout(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    url, folder = lab
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    shots = [folder]
    if os.environ.get("P0_PANEL_SCREENSHOTS"):
        shots.append(Path(os.environ["P0_PANEL_SCREENSHOTS"]))
    try:
        driver.get(url)
        _wait(
            driver, lambda: driver.execute_script("return !!window.jupyterapp"), 120, "JupyterLab"
        )
        _wait(
            driver,
            lambda: driver.execute_script(
                "return window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'"
            ),
            120,
            "the kernel",
        )
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # the notebook ends with the circuit selected at the shift counterfactual, all exact
        _wait(
            driver,
            lambda: driver.find_elements("css selector", "rect[data-name='mlp11@p0']"),
            300,
            "the map",
        )
        _wait(
            driver,
            lambda: (
                "kept" in _readout(driver)
                and driver.find_element("css selector", ".p0-status").text.startswith("exact")
                and driver.execute_script(
                    "return window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
                )
            ),
            600,
            "the notebook's last experiment",
        )
        before = _readout(driver)
        assert "mlp11@p0" in before
        for d in shots:
            d.mkdir(parents=True, exist_ok=True)
            _show_panel(driver)
            driver.save_screenshot(str(d / "panel_before_click.png"))
        cell = driver.find_element("css selector", "rect[data-name='mlp11@p0']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        driver.execute_script(
            "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", cell
        )
        _wait(
            driver,
            lambda: (
                _readout(driver) != before
                and "mlp11@p0" not in _readout(driver).splitlines()[0]
                and "kept" in _readout(driver)
            ),
            300,
            "the readout after the click",
        )
        after = _readout(driver)
        for d in shots:
            _show_panel(driver)
            driver.save_screenshot(str(d / "panel_after_click.png"))
        assert "patched (exact)" in after and after != before
        # the receiver head before / after, drawn by circuitsvis' own element (offline bundle)
        _wait(
            driver,
            lambda: driver.execute_script(
                "const b = document.querySelector('.p0-cv'); return !!b && b.childElementCount > 0"
            ),
            60,
            "the circuitsvis head patterns",
        )
        assert "unpkg.com" not in driver.page_source  # nothing from a CDN
        _says_what_it_shows(driver, "sink score", per_layer=True)
        # another readout: the legend, the value axis and the chart follow the question
        driver.execute_script(
            "const s = document.querySelector('.p0-readout-select');"
            "s.value = 'next-token loss'; s.dispatchEvent(new Event('change', {bubbles: true}));"
        )
        _wait(
            driver,
            lambda: (
                "next-token loss" in _text(driver, ".p0-map-legend")
                and driver.find_elements("css selector", ".p0-bar-patched")
                and driver.find_element("css selector", ".p0-status").text.startswith("exact")
            ),
            600,
            "the loss readout",
        )
        for d in shots:
            _show_panel(driver)
            driver.save_screenshot(str(d / "panel_loss_readout.png"))
        _says_what_it_shows(driver, "next-token loss", per_layer=False)
    finally:
        driver.quit()
