"""Consent captured at checkout: a store's mapping of opt-in meta data, what it grants (and
what it does not), once per order, through every path that applies an order; gdpr records it
keyed by order, never over a newer change."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.customer_sync.privacy.consent_capture import opt_ins, validate_settings
from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from services.gdpr.desk import Desk
from services.gdpr.repository import GdprStorage
from shared.errors import ValidationError
from shared.events import parse_event
from shared.outbox import OUTBOX_FIELD
from tests import payloads
from tests.support import Clock

STORE = "s1"
RULES = {"rules": [
    {"scope": "order", "key": "_newsletter_optin", "yes_values": ["yes", "1"],
     "purpose": "email_marketing"},
    {"scope": "order", "key": "_sms_optin", "yes_values": ["on"], "purpose": "sms_marketing"},
    {"scope": "customer", "key": "mailchimp_optin", "yes_values": ["true"],
     "purpose": "email_marketing"},
]}


@pytest.fixture
def storage(database):
    s = CustomerSyncStorage(database)
    s.ensure_indexes()
    s.stores.save(Store(STORE, "https://shop.example/", "secret-123", "ck", "cs"))
    return s


@pytest.fixture
def sync(storage):
    sync = CustomerSync(storage)
    sync.capture_settings.save(STORE, RULES, "ops", datetime(2026, 1, 1, tzinfo=timezone.utc))
    return sync


def captured(storage) -> list[dict]:
    out = []
    for collection in storage.outbox_collections():
        for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
            out.extend(e["message"] for e in doc[OUTBOX_FIELD]
                       if e["message"]["event_type"] == "consent.captured")
    return out


def meta(**values) -> list[dict]:
    return [{"id": i, "key": k, "value": v} for i, (k, v) in enumerate(values.items(), 1)]


# -- the mapping -----------------------------------------------------------------------------

def test_settings_are_stored_normalised_and_read_back(sync):
    saved = sync.capture_settings.get(STORE)
    assert saved["updated_by"] == "ops"
    assert saved["rules"][0]["yes_values"] == ["1", "yes"]


@pytest.mark.parametrize("rules, field", [
    ({"rules": [{"scope": "order", "key": "k", "yes_values": ["no"],
                 "purpose": "email_marketing"}]}, "yes_values"),
    ({"rules": [{"scope": "order", "key": "k", "yes_values": [""],
                 "purpose": "email_marketing"}]}, "yes_values"),
    ({"rules": [{"scope": "order", "key": "k", "yes_values": [],
                 "purpose": "email_marketing"}]}, "yes_values"),
    ({"rules": [{"scope": "order", "key": "k", "yes_values": ["yes"],
                 "purpose": "data_processing"}]}, "purpose"),
    ({"rules": [{"scope": "cart", "key": "k", "yes_values": ["yes"],
                 "purpose": "email_marketing"}]}, "scope"),
    ({"rules": [{"scope": "order", "key": "   ", "yes_values": ["yes"],
                 "purpose": "email_marketing"}]}, "key"),
    ({"rules": [{"scope": "order", "key": "k", "yes_values": ["yes"],
                 "purpose": "email_marketing", "$where": "1"}]}, "$where"),
])
def test_a_bad_rule_is_refused_naming_its_field(rules, field):
    with pytest.raises(ValidationError) as caught:
        validate_settings(rules)
    assert field in str(caught.value.details["fields"])


def test_too_many_rules_are_refused():
    rule = {"scope": "order", "key": "k", "yes_values": ["yes"], "purpose": "email_marketing"}
    with pytest.raises(ValidationError):
        validate_settings({"rules": [{**rule, "key": f"k{i}"} for i in range(21)]})


def test_a_duplicate_rule_is_refused():
    rule = {"scope": "order", "key": "k", "yes_values": ["yes"], "purpose": "email_marketing"}
    with pytest.raises(ValidationError):
        validate_settings({"rules": [rule, rule]})


# -- what meta data grants ------------------------------------------------------------------

def test_only_a_mapped_yes_grants_and_case_and_spaces_do_not_matter():
    rules = validate_settings(RULES)["rules"]
    assert opt_ins(meta(_newsletter_optin=" YES "), rules, "order") == {
        "email_marketing": "order meta _newsletter_optin = yes"}
    assert opt_ins(meta(_newsletter_optin=1, _sms_optin="on"), rules, "order").keys() == {
        "email_marketing", "sms_marketing"}
    assert opt_ins(meta(_newsletter_optin="no"), rules, "order") == {}
    assert opt_ins(meta(_newsletter_optin={"nested": "yes"}), rules, "order") == {}
    assert opt_ins(meta(other="yes"), rules, "order") == {}
    assert opt_ins(meta(_newsletter_optin="yes"), rules, "customer") == {}
    assert opt_ins("not a list", rules, "order") == {}


# -- captured through the apply path ---------------------------------------------------------

def test_a_checkout_with_the_box_ticked_captures_consent_once_with_its_order(sync, storage):
    body = payloads.order(meta_data=meta(_newsletter_optin="yes"))
    result = sync.apply(STORE, "order", "created", body, correlation_id="c1")
    assert "consent.captured" in result.events
    [event] = captured(storage)
    data = event["data"]
    assert data["purpose"] == "email_marketing" and data["source"] == "checkout"
    assert data["order_id"] == "1001" and data["capture_key"] == "checkout:order:1001"
    assert data["captured_at"] == "2026-03-02T09:00:00+00:00"  # the checkout, not now
    assert data["customer_id"] == storage.orders.get(STORE, "1001")["customer_id"]
    # Again, and as a later state of the same order: nothing new.
    sync.apply(STORE, "order", "updated", body, correlation_id="c2")
    sync.apply(STORE, "order", "updated",
               payloads.order(status="completed", modified="2026-03-03T10:00:00",
                              meta_data=meta(_newsletter_optin="yes")), correlation_id="c3")
    assert len(captured(storage)) == 1


def test_no_box_and_an_unticked_box_capture_nothing(sync, storage):
    sync.apply(STORE, "order", "created", payloads.order(), correlation_id="c1")
    sync.apply(STORE, "order", "created",
               payloads.order(order_id=1002, meta_data=meta(_newsletter_optin="")),
               correlation_id="c2")
    assert captured(storage) == []


def test_an_order_already_held_is_captured_when_the_mapping_comes_later(storage):
    sync = CustomerSync(storage)
    body = payloads.order(meta_data=meta(_sms_optin="on"))
    sync.apply(STORE, "order", "created", body, correlation_id="c1")
    assert captured(storage) == []
    sync.capture_settings.save(STORE, RULES, "ops", datetime(2026, 1, 1, tzinfo=timezone.utc))
    # The backfill or reconciliation reads the same state again: unchanged, yet captured.
    result = sync.apply(STORE, "order", "updated", body, correlation_id="backfill",
                        from_rest=True)
    assert result.outcome == "unchanged"
    [event] = captured(storage)
    assert event["data"]["purpose"] == "sms_marketing"


def test_a_draft_checkout_captures_nothing(sync, storage):
    sync.apply(STORE, "order", "created",
               payloads.order(status="checkout-draft", meta_data=meta(_newsletter_optin="yes")),
               correlation_id="c1")
    assert captured(storage) == []


def test_a_customer_opt_in_is_captured_at_sign_up(sync, storage):
    sync.apply(STORE, "customer", "created",
               payloads.customer(meta_data=meta(mailchimp_optin=True)), correlation_id="c1")
    [event] = captured(storage)
    assert event["data"]["order_id"] is None
    assert event["data"]["captured_at"] == "2026-01-01T09:00:00+00:00"


# -- recorded by gdpr ------------------------------------------------------------------------

def _gdpr(database):
    storage = GdprStorage(database)
    storage.ensure_indexes()
    return Desk(storage, clock=Clock(datetime(2026, 11, 1, tzinfo=timezone.utc))), storage


def test_gdpr_records_a_capture_once_with_source_checkout_and_the_order(sync, storage, database):
    sync.apply(STORE, "order", "created",
               payloads.order(meta_data=meta(_newsletter_optin="yes")), correlation_id="c1")
    [message] = captured(storage)
    desk, gdpr = _gdpr(database)
    desk.record_capture(parse_event(message))
    desk.record_capture(parse_event(message))  # redelivered
    consent = desk.get_consent(STORE, message["data"]["customer_id"])
    assert consent["purposes"]["email_marketing"]["granted"] is True
    assert consent["purposes"]["email_marketing"]["source"] == "checkout"
    [entry] = consent["history"]
    assert entry["order_id"] == "1001" and entry["at"] == "2026-03-02T09:00:00+00:00"
    doc = gdpr.consents.collection.find_one()
    [changed] = [e["message"] for e in doc[OUTBOX_FIELD]]
    assert changed["event_type"] == "consent.changed"
    assert changed["data"]["order_id"] == "1001" and changed["data"]["source"] == "checkout"


def test_an_older_capture_never_overrides_a_newer_change(sync, storage, database):
    sync.apply(STORE, "order", "created",
               payloads.order(meta_data=meta(_newsletter_optin="yes")), correlation_id="c1")
    [message] = captured(storage)
    customer_id = message["data"]["customer_id"]
    desk, gdpr = _gdpr(database)
    desk.set_consent(STORE, customer_id, "email_marketing", False, "operator", "ops",
                     "asked to stop")  # at the desk's clock: after the checkout
    desk.record_capture(parse_event(message))  # a backfill brings the old checkout later
    consent = desk.get_consent(STORE, customer_id)
    assert consent["purposes"]["email_marketing"]["granted"] is False
    assert [e["source"] for e in consent["history"]] == ["checkout", "operator"]
    published = [e["message"]["data"]["granted"] for e in
                 gdpr.consents.collection.find_one()[OUTBOX_FIELD]]
    assert published == [False]


# -- CSV import ------------------------------------------------------------------------------

def test_an_import_row_claiming_consent_without_proof_is_refused_naming_row_and_field(sync,
                                                                                     storage):
    rows = [{"line": 2, "email": "a@example.com", "email_marketing": "yes"},
            {"line": 3, "email": "b@example.com", "sms_marketing": "YES",
             "sms_marketing_source": "   "},
            {"line": 4, "email": "c@example.com", "email_marketing": "perhaps",
             "email_marketing_source": "form"},
            {"line": 5, "email": "d@example.com", "email_marketing": "no"}]
    answer = CustomerImport(storage, sync).run(STORE, rows, True, "alice").answer
    outcomes = {r["line"]: (r["outcome"], r["errors"]) for r in answer["rows"]}
    assert outcomes[2][0] == "invalid" and list(outcomes[2][1]) == ["email_marketing_source"]
    assert outcomes[3][0] == "invalid" and list(outcomes[3][1]) == ["sms_marketing_source"]
    assert outcomes[4][0] == "invalid" and list(outcomes[4][1]) == ["email_marketing"]
    assert outcomes[5][0] == "create"
    # Nothing of a refused row is stored; a "no" records nothing.
    assert storage.customers.collection.count_documents({}) == 1
    assert captured(storage) == []


def test_an_import_row_with_consent_and_proof_captures_it_as_source_import(sync, storage):
    rows = [{"line": 2, "email": "a@example.com", "email_marketing": "Yes",
             "email_marketing_source": "paper form at the fair, 2026-05-01",
             "sms_marketing": "no"}]
    answer = CustomerImport(storage, sync).run(STORE, rows, True, "alice").answer
    assert answer["rows"][0]["consent"] == ["email_marketing"]
    [event] = captured(storage)
    assert event["data"]["source"] == "import"
    assert event["data"]["evidence"] == "paper form at the fair, 2026-05-01"
    assert event["data"]["customer_id"] == answer["rows"][0]["customer_id"]
    # The file again: the contact exists, nothing is captured twice, and the row says so.
    again = CustomerImport(storage, sync).run(STORE, rows, True, "alice").answer
    assert again["rows"][0]["outcome"] == "exists"
    assert list(again["rows"][0]["warnings"]) == ["email_marketing"]
    assert len(captured(storage)) == 1
