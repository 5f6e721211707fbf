"""Template resource bombs. A key that may write templates saved `{{ 'a'*10**9 }}`: the process
rendering it peaked at 4 GB and answered nothing else for half a minute, and the template was
stored. Wherever a template is rendered (checked at save, previewed, sent) such a template is
now refused quickly, in bounded memory, naming the limit it hit, and nothing is stored."""
from __future__ import annotations

import time
import tracemalloc
from datetime import datetime, timezone

import pytest

from services.notifications import templates as tpl
from services.notifications.channels import EmailChannel, SmsChannel, SmtpSettings, TwilioSettings
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from shared.errors import ValidationError
from demo.mailbox import SmtpServer
from tests.gateway_system import shop, system  # noqa: F401 - fixtures
from tests.support import Clock

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
LIMITS = ("TEMPLATE_EMAIL_MAX_CHARS", "TEMPLATE_SMS_MAX_CHARS", "TEMPLATE_RENDER_SECONDS",
          "MAX_RANGE_ITEMS", "MAX_LOOP_ITERATIONS", "MAX_INT_BITS")
# Generous for a loaded machine: unbounded, each of these takes tens of seconds or gigabytes.
QUICK_SECONDS = 5.0
SMALL_BYTES = 64 * 1024 * 1024

BOMBS = {
    "repeat a billion": "{{ 'a'*10**9 }}",
    "repeat a hundred million": "{{ 'a'*10**8 }}",
    "repeat by a huge int": "{{ 'ab' * 999999999999 }}",
    "huge range": "{{ range(10**9)|list }}",
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}.{% endfor %}"
                    "{% endfor %}",
    "nested loops over long text": "{% for a in 'x'*100000 %}{% for b in 'y'*100000 %}"
                                   "{% endfor %}{% endfor %}",
    "join over a huge range": "{{ range(100000)|join('-' * 10000) }}",
    "printf padding": "{{ '%999999999s'|format(1) }}",
    "printf padding operator": "{{ '%999999999s' % 1 }}",
    "center": "{{ 'x'|center(10**9) }}",
    "format padding": "{{ '{:>999999999}'.format(1) }}",
    "ljust": "{{ 'x'.ljust(10**9) }}",
    "indent by a long text": "{{ ('x\\n' * 10000)|indent('y' * 100000) }}",
    "replace with a long text": "{{ ('x' * 10000)|replace('x', 'y' * 100000) }}",
    "concatenation doubling": "{% set a = 'x'*100000 %}{% set b = a~a~a~a~a~a~a~a~a~a %}"
                              "{% set c = b~b~b~b~b~b~b~b~b~b %}{% set d = c~c~c~c~c~c~c~c~c~c %}"
                              "{{ d|length }}",
    "list of one long text": "{% set a = 'x'*100000 %}{{ ([a] * 10000)|string|length }}",
    "batch fill": "{{ [1]|batch(10**9)|list|length }}",
    "huge power": "{{ 7 ** (10**7) }}",
}
# Macros are refused at save (their names are not variables templates know), but a template
# stored before that check is still sent: rendering bounds them too.
STORED_BOMBS = {
    "macro fan-out": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
                     "{% endmacro %}{{ f(60) }}",
    "macro output": "{% macro m() %}{% for i in range(10000) %}{{ 'x'*100000 }}{% endfor %}"
                    "{% endmacro %}{{ m()|length }}",
    "recursive loop": "{% for i in range(10) recursive %}{{ loop(range(10)) }}{% endfor %}",
    **BOMBS,
}


def _email(html: str, slug: str = "bomb") -> dict:
    return {"slug": slug, "channel": "email", "name": "Bomb", "subject": "Hi",
            "html": html, "text": "Hi {{ customer.first_name }}"}


def _refusal(exc: ValidationError, part: str) -> str:
    [reason] = exc.details["fields"][part]
    assert any(limit in reason for limit in LIMITS), reason
    return reason


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_a_bomb_is_refused_when_saved_quickly_in_bounded_memory_naming_the_limit(source):
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ValidationError) as info:
            tpl.validate_template(_email(source))
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _refusal(info.value, "html")
    assert elapsed < QUICK_SECONDS
    assert peak < SMALL_BYTES


@pytest.mark.parametrize("source", STORED_BOMBS.values(), ids=STORED_BOMBS.keys())
def test_a_stored_bomb_is_refused_when_rendered_quickly_in_bounded_memory(source):
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ValueError) as info:
            tpl.render(_email(source), tpl.SAMPLE_CONTEXT)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith("html: ")
    assert elapsed < QUICK_SECONDS
    assert peak < SMALL_BYTES


def test_an_sms_longer_than_its_limit_once_rendered_is_refused():
    """The SMS source was checked (1600 characters); what it renders to was not."""
    with pytest.raises(ValidationError) as info:
        tpl.validate_template({"slug": "long", "channel": "sms", "body": "{{ 'x' * 2000 }}"})
    assert "TEMPLATE_SMS_MAX_CHARS" in _refusal(info.value, "body")
    tpl.validate_template({"slug": "fits", "channel": "sms", "body": "{{ 'x' * 1500 }}"})
    # what an SMS makes on the way may be longer, if what it sends is not
    tpl.validate_template({"slug": "cut", "channel": "sms",
                           "body": "{{ ('x' * 3000)|truncate(100) }}"})


def test_a_refused_bomb_is_not_stored(database):
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    notifier = Notifier(storage, Clock(T0))
    with pytest.raises(ValidationError) as info:
        notifier.save_template("s1", _email(BOMBS["repeat a billion"]))
    _refusal(info.value, "html")
    assert storage.templates.collection.count_documents({}) == 0
    assert "bomb" not in notifier.templates("s1")


def test_a_stored_bomb_fails_its_send_for_good_naming_the_limit(database):
    """A bomb stored before the limits existed: its send fails permanently with the reason,
    and nothing reaches the mail server; not a crash, not a retry, not "outcome unknown"."""
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    storage.templates.collection.insert_one({**_email(BOMBS["repeat a billion"]), "store_id": "s1"})
    clock = Clock(T0)
    notifier = Notifier(storage, clock)
    storage.contacts.apply("s1", "c1", "contact_at", T0, {
        "email": "c1@example.com", "phone": None, "phone_key": None, "first_name": "C",
        "last_name": "", "birthday": None, "country": "FR"})
    workflow = notifier.save_workflow("s1", {
        "workflow_id": "w", "name": "Bomb", "trigger": {"event": "order.placed"},
        "channel": "email", "template": "bomb", "purpose": "transactional"})
    storage.sends.schedule(notifier._send("s1", "c1", "wf:w:c1:e1", T0, workflow=workflow,
                                          trigger="e1"))
    with SmtpServer() as smtp:
        email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))
        sms = SmsChannel(TwilioSettings("", "", "", "", 5))
        sender = Sender(storage, email, sms, SenderSettings(), clock)
        tracemalloc.start()
        try:
            outcome = sender.run_once()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert outcome == {"failed": 1}
        assert smtp.messages == []
    assert peak < SMALL_BYTES
    send = storage.sends.collection.find_one({"_id": "wf:w:c1:e1"})
    assert send["status"] == "failed"
    assert "TEMPLATE_EMAIL_MAX_CHARS" in send["reason"]
    [event] = [e["message"] for e in send["outbox"] if e["event_type"] == "notification.failed"]
    assert event["data"]["permanent"] is True


def test_the_gateway_refuses_a_bomb_at_save_and_preview_and_stores_nothing(system):
    writer = system.client("write")
    answer = writer.put("/notifications/templates/bomb", json={
        key: value for key, value in _email(BOMBS["repeat a billion"]).items() if key != "slug"})
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert "TEMPLATE_EMAIL_MAX_CHARS" in " ".join(problem["errors"]["html"])
    assert writer.get("/notifications/templates/bomb").status_code == 404
    preview = writer.post("/notifications/preview", json={"template": _email(BOMBS["center"])})
    assert preview.status_code == 400, preview.text
    assert "TEMPLATE_EMAIL_MAX_CHARS" in " ".join(preview.json()["errors"]["html"])
    # the same process still answers at once
    assert writer.get("/notifications/templates").status_code == 200
