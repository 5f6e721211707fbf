"""The console's suppression page and the send log's reasons, against the gateway's real
pipeline with the stand-in services of test_console."""
from __future__ import annotations

import re

from tests.unit.test_console import EVIL, Notifications, World


def test_the_suppression_page_lists_why_escaped_and_only_an_admin_may_lift():
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/suppressions?channel=email&include_lifted=true"
                            ).get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;@x.io" in html
    assert "bounced" in html and "every message" in html
    assert 'action="/console/suppressions/lift"' not in html  # read: no lift form
    [(_, _, args)] = world.called("list_suppressions")
    assert args[1] == {"channel": "email", "include_lifted": True}
    nav = html.split("</nav>")[0]
    assert 'href="/console/suppressions"' in nav and 'aria-current="page"' in nav

    world = World()
    world.login("wcc_admin")
    html = world.client.get("/console/suppressions").get_data(as_text=True)
    assert 'action="/console/suppressions/lift"' in html
    assert re.search(r'<input id="reason-1" name="reason" required', html)


def test_lifting_needs_a_reason_and_passes_who_and_why_to_notifications():
    world = World()
    world.login("wcc_admin")
    token = world.csrf("/console/suppressions")
    address = Notifications.suppressions[0]["address"]
    answer = world.client.post("/console/suppressions/lift", data={
        "csrf_token": token, "channel": "email", "address": address, "reason": "  "})
    assert answer.status_code == 303 and world.called("lift_suppression") == []
    assert "give the reason" in world.client.get("/console/suppressions").get_data(as_text=True)
    answer = world.client.post("/console/suppressions/lift", data={
        "csrf_token": token, "channel": "email", "address": address,
        "reason": "mailbox fixed", "back": "https://evil.example/"})
    assert answer.headers["Location"].endswith("/console/suppressions")  # never off-site
    [(_, _, args)] = world.called("lift_suppression")
    assert args[1:4] == ("email", address, "mailbox fixed") and args[4]  # the key's name
    assert "may be sent to again" in world.client.get("/console/suppressions").get_data(
        as_text=True)


def test_a_write_key_cannot_lift_even_by_posting_directly():
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/suppressions")
    world.client.post("/console/suppressions/lift", data={
        "csrf_token": token, "channel": "email", "address": "a@x.io", "reason": "because"})
    assert world.called("lift_suppression") == []
    assert "admin" in world.client.get("/console/suppressions").get_data(as_text=True)


def test_the_send_log_shows_why_a_send_was_held_and_what_the_provider_said(monkeypatch):
    held = {**Notifications.sends[0], "_id": "held", "status": "refused",
            "held_reason": "suppressed", "reason": "suppressed: the address bounced"}
    retrying = {**Notifications.sends[0], "_id": "retry", "status": "scheduled",
                "provider_error": "SMTP connection failed: ConnectionRefusedError(111)"}
    monkeypatch.setattr(Notifications, "sends", [held, retrying])
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/messages").get_data(as_text=True)
    assert "suppressed: the address bounced" in html and 'held-suppressed' in html
    assert "provider: SMTP connection failed: ConnectionRefusedError(111)" in html
    world.client.get("/console/messages?held_reason=suppressed")
    assert world.called("list_sends")[-1][2][1] == {"held_reason": "suppressed"}
    world.client.get("/console/messages?held_reason=bogus")
    assert world.called("list_sends")[-1][2][1] == {}
