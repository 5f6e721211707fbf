"""The accessibility check itself, on a page made to break it: axe-core is there, and a
missing label, grey-on-white text and a block too wide for a phone fail `assert_accessible`
by name (so a clean console page means something). The console's own pages are checked
where the other browser tests open them."""
from __future__ import annotations

import pytest

from tests.browser.accessibility import assert_accessible, axe_missing

BROKEN = ("data:text/html,<!doctype html><html lang=en><title>broken</title><main><h1>Broken</h1>"
          "<input id=nameless><p style='color:%23bbb;background:%23fff'>faint text</p>"
          "<div id=wide style='width:600px'>too wide for a phone</div></main></html>")


def test_axe_core_finds_a_missing_label_and_poor_contrast(browser):
    reason = axe_missing()
    if reason:
        pytest.fail(reason)
    browser.get(BROKEN)
    with pytest.raises(AssertionError) as failed:
        assert_accessible(browser, "broken page")
    report = str(failed.value)
    assert "label (critical)" in report and "#nameless" in report
    assert "color-contrast (serious)" in report
    assert "at 1280 px" in report and "at 375 px" in report
    reflow = report.split("reflow:")
    assert len(reflow) == 2 and "div#wide" in reflow[1]  # at the phone width only


def test_a_page_is_never_passed_unchecked_when_axe_core_is_missing(monkeypatch, tmp_path):
    """Without axe-core the check fails, wherever it runs: a warning let every console page
    pass unchecked on a machine that had a browser but not the engine. No browser is needed to
    show it: the check refuses before it touches the page."""
    from tests.browser import accessibility

    monkeypatch.setattr(accessibility, "AXE_JS", tmp_path / "axe.min.js")
    monkeypatch.delenv("CONSOLE_BROWSER_REQUIRED", raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_accessible(object(), "the customers page")
    assert "axe-core is not installed" in str(failed.value)
    assert "the customers page" in str(failed.value)
