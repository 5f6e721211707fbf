"""A bulk consent change: bounded, with a reason on every customer's history, answered per
customer, and nothing written when the request as a whole is refused."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.gateway.handlers import consent as gateway_consent
from services.gdpr.consent_bulk import MAX_BULK_CONSENT, bulk_set_consent
from services.gdpr.desk import Desk
from services.gdpr.repository import GdprStorage
from shared.customers import CustomerCheck
from shared.errors import ValidationError
from shared.outbox import OUTBOX_FIELD
from tests.support import Clock

STORE = "s1"
KNOWN = {"c-1", "c-2", "c-3"}


@pytest.fixture
def desk(database):
    storage = GdprStorage(database)
    storage.ensure_indexes()
    customers = CustomerCheck(lambda store_id, ids: [i for i in ids if i in KNOWN])
    return Desk(storage, clock=Clock(datetime(2026, 11, 1, 9, tzinfo=timezone.utc)),
                customers=customers)


def test_each_customer_answers_and_the_reason_is_on_each_history(desk):
    desk.set_consent(STORE, "c-2", "email_marketing", False, "operator", "ops", "")
    answer = bulk_set_consent(desk, STORE, ["c-1", "c-2", "nobody", "c-1"], "email_marketing",
                              False, "  complaint to the shop  ", "alice")
    assert [(r["customer_id"], r["outcome"]) for r in answer["results"]] == [
        ("c-1", "changed"), ("c-2", "unchanged"), ("nobody", "not_found")]
    assert answer["summary"] == {"changed": 1, "unchanged": 1, "not_found": 1}
    [entry] = desk.get_consent(STORE, "c-1")["history"]
    assert (entry["note"], entry["actor"], entry["source"]) == (
        "complaint to the shop", "alice", "operator")
    assert desk.storage.consents.get(STORE, "nobody") is None
    published = [e["message"]["data"] for e in
                 desk.storage.consents.collection.find_one({"customer_id": "c-1"})[OUTBOX_FIELD]]
    assert [(d["purpose"], d["granted"]) for d in published] == [("email_marketing", False)]


@pytest.mark.parametrize("ids, purpose, granted, reason, field", [
    ([f"c-{i}" for i in range(MAX_BULK_CONSENT + 1)], "email_marketing", False, "r",
     "customer_ids"),
    ([], "email_marketing", False, "r", "customer_ids"),
    (["c-1", {"$ne": 1}], "email_marketing", False, "r", "customer_ids"),
    (["c-1"], "email_marketing", False, "   ", "reason"),
    (["c-1"], "email_marketing", False, "x" * 2001, "reason"),
    (["c-1"], "push_marketing", False, "r", "purpose"),
    (["c-1"], "email_marketing", "false", "r", "granted"),
])
def test_a_request_wrong_as_a_whole_is_refused_naming_the_field_and_writes_nothing(
        desk, ids, purpose, granted, reason, field):
    with pytest.raises(ValidationError) as caught:
        bulk_set_consent(desk, STORE, ids, purpose, granted, reason, "alice")
    assert field in caught.value.details["fields"]
    assert desk.storage.consents.collection.count_documents({}) == 0


def test_the_gateway_states_the_same_bound():
    assert gateway_consent.MAX_BULK_CONSENT == MAX_BULK_CONSENT
