"""axe-core (Deque's accessibility engine, from the npm registry, pinned in the Makefile) run in
the real headless Chromium on a console page at laptop and at phone width: any WCAG 2.0/2.1
A or AA violation of impact serious or critical fails the test, named by rule, impact, the
elements' selectors and axe's help text, and so does a page that scrolls sideways. `make test`
installs axe-core into .venv/axe; where it is missing every check fails, saying so (a page is
never passed unchecked). Without a browser the browser tests skip before they get here."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.browser.conftest import LAPTOP, PHONE

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = Path(os.environ.get("AXE_CORE_JS",
                             ROOT / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js"))
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}

# Only the console's own markup is judged: the template editor's preview is a sandboxed
# iframe without scripts (axe cannot run inside it) showing the store's own email as its
# author wrote it. The frame element itself (its title) is still checked in the page.
RUN_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "iframes": False,
               "resultTypes": ["violations"]}

_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, arguments[0]).then(
  r => done(JSON.stringify({version: axe.version, violations: r.violations})),
  e => done(JSON.stringify({error: String(e)})));
"""


def axe_missing() -> str | None:
    """Why axe-core cannot be used here, or None."""
    if AXE_JS.is_file():
        return None
    return (f"axe-core is not installed ({AXE_JS} missing): `make axe` installs it with npm "
            "(make test and .ci/run do)")


def _source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


def violations(driver) -> tuple[str, list[dict]]:
    """axe's serious and critical violations on the page as it is now (axe's version too)."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(_source())
    driver.set_script_timeout(60)
    answer = json.loads(driver.execute_async_script(_RUN, RUN_OPTIONS))
    if "error" in answer:
        raise AssertionError(f"axe.run failed: {answer['error']}")
    return answer["version"], [v for v in answer["violations"] if v["impact"] in BLOCKING]


# WCAG 1.4.10 (reflow), which axe does not judge: at phone width the page itself must not
# scroll sideways; a wide data table scrolls inside its own .table-wrap, which is allowed.
_OVERFLOW = """
const width = document.documentElement.clientWidth, wide = [];
for (const el of document.querySelectorAll('body *')) {
  const box = el.getBoundingClientRect();
  if (box.width && box.right > width + 1 && !el.closest('.table-wrap')) {
    wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ' + Math.round(box.right));
  }
}
return {width: width, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 8)};
"""


def overflow(driver) -> str | None:
    """What sticks out sideways beyond the viewport, if anything (for the reflow check)."""
    found = driver.execute_script(_OVERFLOW)
    if found["scroll"] <= found["width"] and not found["wide"]:
        return None
    return (f"  reflow: the page is {found['scroll']} px wide in a {found['width']} px "
            f"viewport; beyond it: {', '.join(found['wide']) or '(nothing named)'}")


def describe(found: list[dict]) -> str:
    lines = []
    for v in found:
        lines.append(f"  {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        for node in v["nodes"][:8]:
            summary = " ".join(node.get("failureSummary", "").split())[:300]
            lines.append(f"    at {' '.join(map(str, node['target']))}: {summary}")
        if len(v["nodes"]) > 8:
            lines.append(f"    ... and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


def assert_accessible(driver, page_name: str) -> None:
    """The open page has no serious or critical WCAG A/AA violation at 1280 and at 375 px, and
    does not scroll sideways at either."""
    reason = axe_missing()
    if reason:
        pytest.fail(f"{page_name}: accessibility cannot be checked: {reason}")
    problems = []
    try:
        for width, height in (LAPTOP, PHONE):
            driver.set_window_size(width, height)
            version, found = violations(driver)
            if found:
                problems.append(f"at {width} px (axe-core {version}):\n{describe(found)}")
            wide = overflow(driver)
            if wide:
                problems.append(f"at {width} px:\n{wide}")
    finally:
        driver.set_window_size(*LAPTOP)
    assert not problems, f"{page_name}: accessibility violations\n" + "\n".join(problems)
