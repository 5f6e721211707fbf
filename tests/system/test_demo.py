"""`python -m demo` as a newcomer runs it (`make demo`), headless and small: it prints where the
console and the API are and a ready admin key; through that API the backfilled store has
segments and points, the live orders sent a tag-triggered email to the mail catcher and a
first-order SMS to the SMS stand-in (both also on the demo's mailbox page); and SIGINT stops
it, every child process included, within 10 seconds.

Every wait polls a condition with a generous deadline; the demo's data is seeded."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 150.0  # a busy machine: the services alone may take a minute to be ready
LIVE_SECONDS = 90.0
STOP_SECONDS = 10.0


def wait_for(condition: Callable[[], object], what: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (from /proc), however deep."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class DemoProcess:
    """The demo with its output collected line by line (read on a thread: never blocks it)."""

    def __init__(self, *argv: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo", *argv], cwd=ROOT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def printed(self, label: str) -> str | None:
        """The value of the first `<label>: <value>` line, None until there is one."""
        for line in list(self.lines):
            if line.startswith(label + ": "):
                return line[len(label) + 2:].split()[0]
        assert self.proc.poll() is None, f"the demo exited early:\n{self.output()}"
        return None


def test_demo_shows_the_whole_system_and_stops_cleanly():
    demo = DemoProcess("--customers", "30", "--orders", "200", "--pause", "1", "--seed", "11")
    try:
        console = wait_for(lambda: demo.printed("Console"), "the Console: line", START_SECONDS)
        key = wait_for(lambda: demo.printed("API key"), "the API key: line", 5)
        api_base = wait_for(lambda: demo.printed("API"), "the API: line", 5)
        mailbox = wait_for(lambda: demo.printed("Mailbox"), "the Mailbox: line", 5)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/console/", console), console
        assert requests.get(console, timeout=10, allow_redirects=False).status_code in (200, 303)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {key}"

        def get(path: str, **params) -> dict:
            response = api.get(api_base + path, params=params, timeout=30)
            assert response.status_code == 200, (path, response.status_code, response.text)
            return response.json()

        # Segments computed for the backfilled store (its events may still be on their way):
        # every one of the 30 registered customers, and the guests, in a segment.
        def segmented() -> dict | None:
            report = get("/reports")
            sizes = report["segment_sizes"]
            return sizes if report["customers"] > 30 and len(sizes) >= 2 \
                and sum(sizes.values()) == report["customers"] else None
        wait_for(segmented, "every customer in a segment", LIVE_SECONDS)

        # Points earned: the backfilled orders of registered customers earned under the
        # programme the demo set up over the API.
        assert get("/loyalty/programme")["coupon_prefix"] == "demo"

        def someone_with_points() -> bool:
            buyers = get("/customers", orders_min=2, limit=20)["items"]
            return any(get(f"/customers/{c['customer_id']}/loyalty")["balance"] > 0
                       for c in buyers if c["registered"])
        wait_for(someone_with_points, "a registered buyer with points", LIVE_SECONDS)

        # The live orders: a tag-triggered email and a first-order SMS, sent by the companion
        # (its send log) and received by the stand-ins (the demo's mailbox page).
        def sent(workflow_id: str) -> list[dict]:
            return [s for s in get("/notifications/sends", workflow_id=workflow_id)["items"]
                    if s["status"] == "sent"]

        email = wait_for(lambda: sent("regulars"), "the regulars' email sent", LIVE_SECONDS)[0]
        sms = wait_for(lambda: sent("first-order-sms"), "the first-order SMS sent",
                       LIVE_SECONDS)[0]
        tags = {t["tag"] for t in get(f"/customers/{email['customer_id']}")["tags"]}
        assert "regular" in tags, tags
        mails = requests.get(mailbox + "emails.json", timeout=10).json()
        assert any(m["to"] == email["to"] and m["subject"] == email["subject"] for m in mails), \
            (email, mails)
        texts = requests.get(mailbox + "sms.json", timeout=10).json()
        assert any(re.sub(r"\D", "", t["to"]) == re.sub(r"\D", "", sms["to"]) for t in texts), \
            (sms, texts)
        page = requests.get(mailbox, timeout=10).text
        assert email["subject"] in page and "Emails (" in page and "SMS (" in page
        number = next(m["number"] for m in mails if m["subject"] == email["subject"])
        assert "Thank you for coming back" in requests.get(
            f"{mailbox}emails/{number}", timeout=10).text

        children = descendants(demo.proc.pid)
        assert children, "the services run as a child process"
        demo.proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        code = demo.proc.wait(STOP_SECONDS + 5)
        took = time.monotonic() - began
        assert code == 0, demo.output()[-3000:]
        assert took <= STOP_SECONDS, f"stopping took {took:.1f} s"
        left = sorted(pid for pid in children if running(pid))
        assert not left, f"left running: {left}"
        assert "Stopped." in demo.output()
    finally:
        if demo.proc.poll() is None:  # a failed check: stop it as a user would, then by force
            demo.proc.send_signal(signal.SIGINT)
            try:
                demo.proc.wait(STOP_SECONDS + 5)
            except subprocess.TimeoutExpired:
                pass
        if demo.proc.poll() is None:
            for pid in descendants(demo.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            demo.proc.kill()
            demo.proc.wait(10)
