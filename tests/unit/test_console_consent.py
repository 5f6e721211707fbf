"""The consent card on a customer's console page: each purpose's state and where it came from,
the history, and a change that needs a reason and the session's CSRF token, shown and usable
only with the gdpr scope."""
from __future__ import annotations

import pytest

from tests.unit import test_console
from tests.unit.test_console import EVIL, World


class GdprWithConsent(test_console.Gdpr):
    """gdpr's stand-in, holding one customer's consent as the desk answers it."""

    def __init__(self):
        self.changes = []

    def get_consent(self, store_id, customer_id):
        return {"store_id": store_id, "customer_id": customer_id,
                "purposes": {"email_marketing": {"granted": True, "source": "checkout",
                                                 "at": "2026-03-02T09:00:00+00:00",
                                                 "actor": "customer_sync:checkout"},
                             "sms_marketing": {"granted": False, "source": "sms_stop",
                                               "at": "2026-04-01T09:00:00+00:00",
                                               "actor": "notifications"}},
                "history": [
                    {"change_id": "a", "purpose": "email_marketing", "granted": True,
                     "at": "2026-03-02T09:00:00+00:00", "source": "checkout",
                     "actor": "customer_sync:checkout", "order_id": "1001",
                     "note": "order meta _newsletter_optin = yes"},
                    {"change_id": "b", "purpose": "sms_marketing", "granted": False,
                     "at": "2026-04-01T09:00:00+00:00", "source": "sms_stop",
                     "actor": "notifications", "note": EVIL}]}

    def set_consent(self, store_id, customer_id, purpose, granted, source="operator",
                    actor="operator", note=""):
        self.changes.append((customer_id, purpose, granted, source, note))
        return self.get_consent(store_id, customer_id)


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setattr(test_console, "Gdpr", GdprWithConsent)
    return World()


def test_the_card_shows_each_purpose_its_source_and_history_escaped(world):
    world.login("wcc_gdpr")
    page = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert 'id="consent"' in page
    state = page[page.index('id="consent-state"'):page.index('id="consent-history"')]
    assert "Email marketing" in state and "Checkout opt-in" in state and ">Yes<" in state
    assert "SMS marketing" in state and "Replied STOP by SMS" in state and ">No<" in state
    assert "Data processing" in state and "Not recorded" in state
    history = page[page.index('id="consent-history"'):]
    assert "Checkout opt-in (order 1001)" in history
    assert EVIL not in page and "&lt;script&gt;" in history
    assert 'action="/console/customers/c1/consent"' in page


def test_without_the_gdpr_scope_there_is_no_card_and_gdpr_is_not_asked(world):
    world.login("wcc_write")
    page = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert 'id="consent"' not in page
    assert world.called("get_consent") == []


def test_a_change_needs_a_reason_and_the_csrf_token(world):
    world.login("wcc_gdpr")
    form = {"purpose": "sms_marketing", "granted": "yes", "reason": "asked at the counter"}
    assert world.client.post("/console/customers/c1/consent", data=form).status_code == 403
    assert world.called("set_consent") == []

    token = world.csrf("/console/customers/c1")
    blank = world.client.post("/console/customers/c1/consent",
                              data={**form, "reason": "   ", "csrf_token": token})
    assert blank.status_code == 303 and blank.headers["Location"].endswith("#consent")
    assert world.called("set_consent") == []
    page = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert "Give the reason for the change" in page

    odd = world.client.post("/console/customers/c1/consent",
                            data={**form, "purpose": "everything", "csrf_token": token})
    assert odd.status_code == 303 and world.called("set_consent") == []

    done = world.client.post("/console/customers/c1/consent", data={**form, "csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"].endswith("/c1#consent")
    [(_, _, args)] = world.called("set_consent")
    assert args[1:5] == ("c1", "sms_marketing", True, "operator")
    assert args[6] == "asked at the counter"  # the reason, kept on the history
    assert "SMS marketing: consent turned on." in world.client.get(
        "/console/customers/c1").get_data(as_text=True)
