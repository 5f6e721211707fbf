"""A real headless Chromium (Debian's chromium and chromium-driver) driven by Selenium against
the running system. Where chromium is not installed the browser tests skip and say why;
with CONSOLE_BROWSER_REQUIRED=1 (as .ci/run sets after installing it) they fail instead."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LAPTOP = (1280, 900)
PHONE = (375, 812)


def _missing() -> str | None:
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if absent:
        return (f"chromium is not installed ({', '.join(absent)} missing): "
                "apt-get install chromium chromium-driver (.ci/run does)")
    return None


@pytest.fixture
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CONSOLE_BROWSER_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--disable-extensions", "--no-first-run",
                     f"--window-size={LAPTOP[0]},{LAPTOP[1]}", "--lang=en-GB"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser):
    """`screenshot(name)`: the whole page at laptop and at phone width, saved under
    tests/artifacts/ (git-ignored) for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(name: str) -> list[Path]:
        saved = []
        for width, height in (LAPTOP, PHONE):
            browser.set_window_size(width, height)
            full = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(width, max(height, min(int(full) + 140, 6000)))
            target = ARTIFACTS / f"{name}-{width}.png"
            browser.save_screenshot(str(target))
            saved.append(target)
            if os.environ.get("CONSOLE_SCREENSHOT_PARTS") == "1":  # screen-sized, to read
                browser.set_window_size(width, height)
                for part, top in enumerate(range(0, int(full), height - 100)):
                    browser.execute_script("window.scrollTo(0, arguments[0])", top)
                    browser.save_screenshot(str(ARTIFACTS / f"{name}-{width}-part{part}.png"))
                browser.execute_script("window.scrollTo(0, 0)")
        browser.set_window_size(*LAPTOP)
        return saved

    return take
