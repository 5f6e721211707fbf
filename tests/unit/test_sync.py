"""customer_sync's write side on an in-memory MongoDB: state, stale guard, guests, events."""
from __future__ import annotations

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.core.sync import CustomerSync
from shared.outbox import OUTBOX_FIELD
from tests import payloads

STORE = "s1"


@pytest.fixture
def storage(database):
    s = CustomerSyncStorage(database)
    s.ensure_indexes()
    return s


@pytest.fixture
def sync(storage):
    return CustomerSync(storage)


def owed(storage) -> list[dict]:
    """Every event the outbox holds, customers first (the relay's order)."""
    out = []
    for collection in storage.outbox_collections():
        for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
            out.extend(entry["message"] for entry in doc[OUTBOX_FIELD])
    return out


def types(storage) -> list[str]:
    return [m["event_type"] for m in owed(storage)]


def apply(sync, resource, action, body):
    return sync.apply(STORE, resource, action, body, correlation_id="corr-1")


def test_new_customer_is_created_with_a_customer_created_event(sync, storage):
    result = apply(sync, "customer", "created", payloads.customer())
    assert result.outcome == "created"
    [event] = owed(storage)
    assert event["event_type"] == "customer.created"
    assert event["data"]["woo_customer_id"] == 42
    assert event["data"]["email"] == "ada@example.com"
    assert event["correlation_id"] == "corr-1"
    doc = storage.customers.by_woo_id(STORE, 42)
    assert event["data"]["customer_id"] == doc["_id"]


def test_same_state_twice_changes_nothing_and_publishes_nothing(sync, storage):
    apply(sync, "customer", "created", payloads.customer())
    assert apply(sync, "customer", "updated", payloads.customer()).outcome == "unchanged"
    assert types(storage) == ["customer.created"]


def test_older_state_after_a_newer_one_is_dropped(sync, storage):
    apply(sync, "customer", "created", payloads.customer(modified="2026-03-05T10:00:00", first_name="New"))
    result = apply(sync, "customer", "updated",
                   payloads.customer(modified="2026-03-04T10:00:00", first_name="Old"))
    assert result.outcome == "stale"
    assert storage.customers.by_woo_id(STORE, 42)["first_name"] == "New"
    assert types(storage) == ["customer.created"]


def test_same_second_with_different_content_is_applied(sync, storage):
    apply(sync, "customer", "created", payloads.customer())
    result = apply(sync, "customer", "updated", payloads.customer(last_name="Byron"))
    assert result.outcome == "updated"
    [_, updated] = owed(storage)
    assert updated["event_type"] == "customer.updated"
    assert updated["data"]["changed_fields"] == ["last_name"]


def test_change_outside_contact_fields_is_stored_without_an_event(sync, storage):
    apply(sync, "customer", "created", payloads.customer())
    result = apply(sync, "customer", "updated",
                   payloads.customer(modified="2026-03-09T00:00:00", role="subscriber"))
    assert result.outcome == "updated"
    assert storage.customers.by_woo_id(STORE, 42)["role"] == "subscriber"
    assert types(storage) == ["customer.created"]


def test_guest_orders_belong_to_one_customer_by_lowercased_email(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="Guest@Example.com"))
    apply(sync, "order", "created", payloads.order(2, customer_id=0, email=" guest@example.COM "))
    first, second = storage.orders.get(STORE, "1"), storage.orders.get(STORE, "2")
    assert first["customer_id"] == second["customer_id"] is not None
    guest = storage.customers.get(STORE, first["customer_id"])
    assert guest["registered"] is False and guest["email_key"] == "guest@example.com"
    assert types(storage).count("customer.created") == 1
    assert types(storage).count("order.placed") == 2


def test_registered_customer_with_a_guests_email_takes_over_the_guest_record(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="ada@example.com"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    apply(sync, "customer", "created", payloads.customer(woo_id=42, email="ADA@example.com"))
    registered = storage.customers.by_woo_id(STORE, 42)
    assert registered["_id"] == guest_id  # the same person keeps one id
    assert registered["registered"] is True
    assert storage.customers.collection.count_documents({"store_id": STORE}) == 1
    updated = [m for m in owed(storage) if m["event_type"] == "customer.updated"]
    assert "registered" in updated[-1]["data"]["changed_fields"]
    # Later guest orders with that email go to the registered customer.
    apply(sync, "order", "created", payloads.order(2, customer_id=0, email="ada@example.com"))
    assert storage.orders.get(STORE, "2")["customer_id"] == guest_id


def test_email_change_onto_a_guest_merges_the_guest_and_moves_its_orders(sync, storage):
    apply(sync, "customer", "created", payloads.customer(woo_id=42, email="ada@old.example"))
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="ada@new.example"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    apply(sync, "customer", "updated",
          payloads.customer(woo_id=42, email="ada@new.example", modified="2026-04-01T00:00:00"))
    registered = storage.customers.by_woo_id(STORE, 42)
    assert storage.orders.get(STORE, "1")["customer_id"] == registered["_id"]
    assert storage.customers.get(STORE, guest_id)["status"] == "merged"
    merged = [m for m in owed(storage) if m["event_type"] == "customer.merged"]
    merge_id = merged[0]["data"]["merge_id"]
    assert merged[0]["data"] == {"customer_id": registered["_id"], "merged_customer_id": guest_id,
                                 "merge_id": merge_id, "kind": "guest"}
    # The guest merge is recorded like a manual one: what each record was, and what moved.
    record = storage.merges.get(STORE, merge_id)
    assert (record["kind"], record["state"], record["primary_id"], record["merged_ids"]) == (
        "guest", "done", registered["_id"], [guest_id])
    assert record["snapshots"][guest_id]["email"] == "ada@new.example"
    assert record["snapshots"][registered["_id"]]["email"] == "ada@old.example"
    assert record["moved"]["orders"] == [{"id": f"{STORE}:1", "from": guest_id,
                                          "to": registered["_id"]}]
    assert storage.customers.get(STORE, guest_id)["merge_id"] == merge_id


def test_order_before_its_customer_creates_the_customer_once(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=42))
    apply(sync, "customer", "created", payloads.customer(woo_id=42))
    assert storage.customers.collection.count_documents({"store_id": STORE}) == 1
    assert types(storage).count("customer.created") == 1
    assert storage.customers.by_woo_id(STORE, 42)["username"] == "ada"


def test_order_lifecycle_events(sync, storage):
    apply(sync, "order", "created", payloads.order(1, status="pending", modified="2026-03-02T10:00:00"))
    apply(sync, "order", "updated", payloads.order(1, status="processing", modified="2026-03-02T10:05:00"))
    apply(sync, "order", "updated", payloads.order(
        1, status="processing", modified="2026-03-03T10:00:00",
        refunds=[{"id": 9, "reason": "broken", "total": "-10.00"}]))
    apply(sync, "order", "updated", payloads.order(
        1, status="cancelled", modified="2026-03-04T10:00:00",
        refunds=[{"id": 9, "reason": "broken", "total": "-10.00"}]))
    orders = [m for m in owed(storage) if m["event_type"].startswith("order.")]
    assert [m["event_type"] for m in orders] == [
        "order.placed", "order.updated", "order.refunded", "order.cancelled"]
    placed, updated, refunded, cancelled = orders
    assert placed["data"]["total"] == {"amount": 4990, "currency": "EUR"}
    assert placed["data"]["line_items"][0]["total"] == {"amount": 4500, "currency": "EUR"}
    assert (updated["data"]["old_status"], updated["data"]["new_status"]) == ("pending", "processing")
    assert refunded["data"]["refund_delta"] == {"amount": 1000, "currency": "EUR"}
    assert refunded["data"]["total_refunded"] == {"amount": 1000, "currency": "EUR"}
    assert cancelled["data"]["old_status"] == "processing"


def test_second_refund_publishes_only_its_delta(sync, storage):
    apply(sync, "order", "created", payloads.order(1, refunds=[{"id": 1, "total": "-5.00"}]))
    apply(sync, "order", "updated", payloads.order(
        1, modified="2026-03-05T00:00:00",
        refunds=[{"id": 1, "total": "-5.00"}, {"id": 2, "total": "-2.50"}]))
    refunds = [m["data"]["refund_delta"]["amount"] for m in owed(storage)
               if m["event_type"] == "order.refunded"]
    assert refunds == [500, 250]


def test_order_first_seen_as_draft_is_placed_when_it_becomes_real(sync, storage):
    apply(sync, "order", "created", payloads.order(1, status="checkout-draft"))
    assert "order.placed" not in types(storage)
    apply(sync, "order", "updated", payloads.order(1, status="on-hold", modified="2026-03-03T00:00:00"))
    assert types(storage).count("order.placed") == 1


def test_update_delivered_before_create_and_redelivered(sync, storage):
    newer = payloads.order(1, status="completed", modified="2026-03-03T00:00:00")
    older = payloads.order(1, status="processing", modified="2026-03-02T10:00:00")
    assert apply(sync, "order", "updated", newer).outcome == "created"
    assert apply(sync, "order", "created", older).outcome == "stale"
    assert apply(sync, "order", "updated", newer).outcome == "unchanged"
    assert [t for t in types(storage) if t.startswith("order.")] == ["order.placed"]
    assert storage.orders.get(STORE, "1")["status"] == "completed"


def test_trashed_order_is_cancelled_and_an_older_state_does_not_revive_it(sync, storage):
    apply(sync, "order", "created", payloads.order(1, modified="2026-03-02T10:00:00"))
    apply(sync, "order", "deleted", {"id": 1})
    assert storage.orders.get(STORE, "1")["status"] == "trash"
    assert apply(sync, "order", "updated", payloads.order(1, modified="2026-03-02T10:00:00")).outcome in (
        "stale", "unchanged")
    assert storage.orders.get(STORE, "1")["status"] == "trash"
    cancelled = [m for m in owed(storage) if m["event_type"] == "order.cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["data"]["status"] == "trash"


def test_deleted_customer_is_not_revived_by_a_late_create(sync, storage):
    apply(sync, "customer", "deleted", {"id": 77})
    assert apply(sync, "customer", "created", payloads.customer(woo_id=77)).outcome == "ignored"
    assert storage.customers.by_woo_id(STORE, 77)["status"] == "deleted"
    assert "customer.created" not in types(storage)


def test_deleting_a_known_customer_publishes_customer_deleted_once(sync, storage):
    apply(sync, "customer", "created", payloads.customer(woo_id=5, email="x@example.com"))
    apply(sync, "customer", "deleted", {"id": 5})
    apply(sync, "customer", "deleted", {"id": 5})
    assert types(storage).count("customer.deleted") == 1


def test_guest_contact_follows_the_newest_order(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="g@example.com"))
    newer = payloads.order(2, customer_id=0, email="g@example.com",
                           date_created_gmt="2026-05-01T00:00:00",
                           billing=payloads.address("g@example.com", phone="+4499", city="Leeds"))
    apply(sync, "order", "created", newer)
    guest = storage.customers.get(STORE, storage.orders.get(STORE, "1")["customer_id"])
    assert (guest["phone"], guest["billing"]["city"]) == ("+4499", "Leeds")
    older = payloads.order(3, customer_id=0, email="g@example.com",
                           date_created_gmt="2026-04-01T00:00:00",
                           billing=payloads.address("g@example.com", phone="+4411", city="York"))
    apply(sync, "order", "created", older)
    guest = storage.customers.get(STORE, guest["_id"])
    assert guest["billing"]["city"] == "Leeds"


def test_event_ids_are_stable_for_the_same_change(storage):
    first = CustomerSync(storage)
    first.apply(STORE, "order", "created", payloads.order(1), correlation_id="a")
    placed_id = owed(storage)[-1]["event_id"]
    other = CustomerSyncStorage(mongomock_adapter.client().db)
    other.ensure_indexes()
    second = CustomerSync(other)
    second.apply(STORE, "order", "created", payloads.order(1), correlation_id="b")
    assert owed(other)[-1]["event_id"] == placed_id


def test_a_change_that_returns_to_an_earlier_state_gets_a_new_event_id(sync, storage):
    phones = ["111", "222", "111", "222"]
    for n, phone in enumerate(phones):
        apply(sync, "customer", "updated", payloads.customer(
            modified=f"2026-03-0{n + 1}T10:00:00", billing=payloads.address("ada@example.com",
                                                                             phone=phone)))
    ids = [m["event_id"] for m in owed(storage)]
    assert len(ids) == 4 and len(set(ids)) == 4


def test_a_refund_deleted_and_made_again_is_a_new_event(sync, storage):
    ten = [{"id": 1, "total": "-10.00"}]
    apply(sync, "order", "created", payloads.order(1, modified="2026-03-02T10:00:00", refunds=ten))
    apply(sync, "order", "updated", payloads.order(1, modified="2026-03-03T10:00:00", refunds=[]))
    apply(sync, "order", "updated", payloads.order(1, modified="2026-03-04T10:00:00",
                                                   refunds=[{"id": 2, "total": "-10.00"}]))
    refunds = [m["event_id"] for m in owed(storage) if m["event_type"] == "order.refunded"]
    assert len(refunds) == 2 and len(set(refunds)) == 2


def test_restore_after_trash_is_applied_whenever_it_arrives(sync, storage):
    apply(sync, "order", "created", payloads.order(1, modified="2026-03-02T10:00:00"))
    apply(sync, "order", "deleted", {"id": 1})
    restored = apply(sync, "order", "restored", payloads.order(1, modified="2026-03-02T10:00:20"))
    assert restored.outcome == "updated"
    assert storage.orders.get(STORE, "1")["status"] == "processing"
    updated = [m for m in owed(storage) if m["event_type"] == "order.updated"]
    assert (updated[-1]["data"]["old_status"], updated[-1]["data"]["new_status"]) == (
        "trash", "processing")


def test_registered_order_before_its_customer_takes_over_a_guest_with_that_email(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="ada@example.com"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    apply(sync, "order", "created", payloads.order(2, customer_id=42, email="ada@example.com"))
    apply(sync, "customer", "created", payloads.customer(woo_id=42))
    assert storage.orders.get(STORE, "2")["customer_id"] == guest_id
    assert storage.customers.collection.count_documents({"store_id": STORE}) == 1
    assert storage.customers.by_woo_id(STORE, 42)["_id"] == guest_id


def test_a_merge_cut_short_by_a_crash_is_finished_on_the_next_touch(sync, storage):
    apply(sync, "customer", "created", payloads.customer(woo_id=42, email="ada@old.example"))
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="ada@new.example"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    original = sync._finish_merge
    sync._finish_merge = lambda *args: None  # the process dies right after the update
    apply(sync, "customer", "updated",
          payloads.customer(woo_id=42, email="ada@new.example", modified="2026-04-01T00:00:00"))
    registered = storage.customers.by_woo_id(STORE, 42)
    assert registered["pending_merge"] == guest_id
    sync._finish_merge = original
    apply(sync, "order", "created", payloads.order(2, customer_id=42, email="ada@new.example"))
    assert storage.customers.get(STORE, guest_id)["status"] == "merged"
    assert storage.orders.get(STORE, "1")["customer_id"] == registered["_id"]
    assert "pending_merge" not in storage.customers.by_woo_id(STORE, 42)


def test_orders_do_not_bring_a_deleted_customers_contact_data_back(sync, storage):
    apply(sync, "customer", "created", payloads.customer(woo_id=5, email="x@example.com"))
    apply(sync, "customer", "deleted", {"id": 5})
    apply(sync, "order", "created", payloads.order(
        9, customer_id=5, email="x@example.com", date_created_gmt="2026-06-01T00:00:00",
        billing=payloads.address("x@example.com", phone="+999")))
    assert storage.customers.by_woo_id(STORE, 5)["phone"] != "+999"
    assert [m["event_type"] for m in owed(storage)].count("customer.updated") == 0


def test_a_guest_checkout_with_a_registered_email_does_not_rewrite_their_profile(sync, storage):
    apply(sync, "customer", "created", payloads.customer(woo_id=42))
    apply(sync, "order", "created", payloads.order(
        3, customer_id=0, email="ada@example.com", date_created_gmt="2026-06-01T00:00:00",
        billing=payloads.address("ada@example.com", phone="+000", city="Elsewhere")))
    customer = storage.customers.by_woo_id(STORE, 42)
    assert storage.orders.get(STORE, "3")["customer_id"] == customer["_id"]
    assert customer["billing"]["city"] == "London"


def test_an_order_anonymised_by_woocommerce_keeps_its_customer(sync, storage):
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="g@example.com"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    anonymised = payloads.order(1, customer_id=0, email="deleted@site.invalid",
                                modified="2026-05-01T00:00:00",
                                meta_data=[{"id": 1, "key": "_anonymized", "value": "yes"}])
    apply(sync, "order", "updated", anonymised)
    assert storage.orders.get(STORE, "1")["customer_id"] == guest_id
    assert storage.customers.collection.count_documents({"email_key": "deleted@site.invalid"}) == 0
