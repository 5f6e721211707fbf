"""customer_sync's staff side without a broker: notes, reminders, the activity timeline, staff
edits written back to a shop (the local WooCommerce stand-in), account status, deletion and
import, on an in-memory MongoDB."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.privacy.deletion import CustomerDeletion
from services.customer_sync.privacy.erasure import CustomerErasure
from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.crm.notes import Notes
from services.customer_sync.core.queries import CustomerQueries
from services.customer_sync.crm.reminders import Reminders
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.staff import AccountStatus, StaffEdits
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm.timeline import TIMELINE_FIELD, TimelineProjector, timeline_page
from services.customer_sync.shop.woo_client import WooClient
from shared.errors import NotFound, Unavailable, ValidationError
from shared.outbox import OUTBOX_FIELD
from tests import payloads
from demo.shop import FakeWooShop
from tests.support import Clock

STORE = "s1"


@pytest.fixture
def shop():
    with FakeWooShop(seed=11) as shop:
        yield shop


@pytest.fixture
def storage(shop):
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    s.stores.save(Store(STORE, shop.base_url, "whsec-12345678", shop.consumer_key,
                        shop.consumer_secret))
    return s


@pytest.fixture
def sync(storage):
    return CustomerSync(storage)


@pytest.fixture
def projector(storage):
    p = TimelineProjector(storage.timeline, storage.timeline_sources(),
                          storage.customers.collection)
    p.ensure_indexes()
    return p


def clients(retries: int = 0):
    return lambda store: WooClient(store.shop_url, store.consumer_key, store.consumer_secret,
                                   timeout=5, max_retries=retries, backoff_base=0.01)


def owed(storage, event_type: str | None = None) -> list[dict]:
    out = []
    for collection in storage.outbox_collections():
        for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
            out.extend(e["message"] for e in doc[OUTBOX_FIELD])
    return [m for m in out if event_type is None or m["event_type"] == event_type]


def clear_outbox(storage) -> None:
    for collection in storage.outbox_collections():
        collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})


def entries(storage, projector, customer_id: str) -> list[dict]:
    projector.sweep()
    return timeline_page(storage, STORE, customer_id, {"size": 500})["items"]


def customer_from_shop(shop, sync, storage, **overrides) -> tuple[dict, str]:
    """A registered customer at the shop, applied here as its webhook would be."""
    woo = shop.add_customer(**overrides)
    sync.apply(STORE, "customer", "created", woo, correlation_id="wh-1")
    return woo, storage.customers.by_woo_id(STORE, woo["id"])["_id"]


def guest(sync, storage, order_id: int = 2001, email: str = "guest@example.com") -> str:
    sync.apply(STORE, "order", "created", payloads.order(order_id, customer_id=0, email=email),
               correlation_id="wh-g")
    return storage.customers.by_email(STORE, email)["_id"]


# -- the timeline -------------------------------------------------------------------------------
def test_shop_changes_reach_the_timeline_once_each(storage, projector):
    # Entries are dated by their events: a clock the test moves, so two changes applied in the
    # same millisecond cannot swap places in the newest-first timeline.
    clock = Clock(datetime(2026, 3, 5, 9, tzinfo=timezone.utc))
    sync = CustomerSync(storage, clock=clock)
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    sync.apply(STORE, "order", "created", payloads.order(1001), correlation_id="wh-2")
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    first = entries(storage, projector, customer_id)
    assert [e["kind"] for e in first] == ["order.placed", "customer.created"]
    assert first[0]["summary"] == "Order #1001 placed (49.90 EUR)" and first[0]["actor"] == "shop"
    assert storage.customers.collection.count_documents({f"{TIMELINE_FIELD}.0": {"$exists": True}}) == 0

    # The same states again (a duplicate delivery, a backfill): nothing new.
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-3")
    sync.apply(STORE, "order", "updated", payloads.order(1001), correlation_id="wh-4")
    assert entries(storage, projector, customer_id) == first

    sync.apply(STORE, "order", "updated",
               payloads.order(1001, status="completed", modified="2026-03-03T10:00:00"),
               correlation_id="wh-5")
    clock.now += timedelta(seconds=1)
    sync.apply(STORE, "customer", "updated",
               payloads.customer(modified="2026-03-04T10:00:00", first_name="Augusta"),
               correlation_id="wh-6")
    latest = entries(storage, projector, customer_id)
    assert [e["kind"] for e in latest[:2]] == ["customer.updated", "order.updated"]
    assert latest[0]["details"] == {"changed_fields": ["first_name"]}
    assert "Augusta" not in json.dumps(latest)  # names what changed, not the data
    assert latest[1]["summary"] == "Order #1001 status processing -> completed"


def test_timeline_pages_with_a_cursor(sync, storage, projector):
    customer_id = guest(sync, storage)
    notes = Notes(storage)
    for n in range(5):
        notes.add(STORE, customer_id, {"category": "general", "text": f"n{n}"}, "alice")
    projector.sweep()
    seen, cursor = [], None
    while True:
        page = timeline_page(storage, STORE, customer_id, {"size": 2, "cursor": cursor})
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and len({e["entry_id"] for e in seen}) == 7  # created, order, 5 notes
    assert [e["at"] for e in seen] == sorted((e["at"] for e in seen), reverse=True)
    with pytest.raises(ValidationError):
        timeline_page(storage, STORE, customer_id, {"cursor": "nonsense"})
    with pytest.raises(NotFound):
        timeline_page(storage, STORE, "nobody", None)


# -- notes ---------------------------------------------------------------------------------------
def ticking(start: str = "2026-04-01T10:00:00+00:00"):
    """A clock one second further on each call, so newest-first order is unambiguous."""
    now = [datetime.fromisoformat(start)]

    def clock():
        now[0] += timedelta(seconds=1)
        return now[0]
    return clock


def test_notes_add_list_edit_delete_with_timeline(sync, storage, projector):
    customer_id = guest(sync, storage)
    notes = Notes(storage, clock=ticking())
    first = notes.add(STORE, customer_id, {"category": "phone-call", "text": "Called about X"},
                      "alice").answer
    second = notes.add(STORE, customer_id, {"category": "complaint", "text": "Parcel late"},
                       "bob").answer
    assert set(first) == {"note_id", "customer_id", "category", "text", "author", "created_at",
                          "updated_at"}
    assert [n["note_id"] for n in notes.list(STORE, customer_id)] == [second["note_id"],
                                                                      first["note_id"]]
    assert [n["text"] for n in notes.list(STORE, customer_id, "complaint")] == ["Parcel late"]

    edited = notes.update(STORE, first["note_id"], {"text": "Called twice"}, "bob").answer
    assert edited["text"] == "Called twice" and edited["author"] == "alice"
    assert notes.delete(STORE, second["note_id"], "alice").answer["deleted"] is True
    assert [n["note_id"] for n in notes.list(STORE, customer_id)] == [first["note_id"]]
    assert "Parcel late" not in json.dumps(list(storage.notes.collection.find()), default=str)
    with pytest.raises(NotFound):
        notes.update(STORE, second["note_id"], {"text": "again"}, "alice")

    kinds = [(e["kind"], e["actor"]) for e in entries(storage, projector, customer_id)]
    assert kinds[:4] == [("note.deleted", "alice"), ("note.edited", "bob"),
                         ("note.added", "bob"), ("note.added", "alice")]


@pytest.mark.parametrize("note", [
    {"category": "gossip", "text": "x"}, {"category": "general", "text": ""},
    {"category": "general", "text": "   "}, {"category": "general", "text": "x" * 10_001},
    {"category": "general"}, {"category": "general", "text": "x", "extra": 1}, "text",
])
def test_notes_are_validated(sync, storage, note):
    customer_id = guest(sync, storage)
    with pytest.raises(ValidationError):
        Notes(storage).add(STORE, customer_id, note, "alice")
    assert storage.notes.collection.count_documents({}) == 0


def test_a_note_about_an_unknown_customer_is_not_found(storage):
    with pytest.raises(NotFound):
        Notes(storage).add(STORE, "nobody", {"category": "general", "text": "x"}, "alice")
    with pytest.raises(NotFound):
        Notes(storage).list(STORE, "nobody")


# -- reminders ------------------------------------------------------------------------------------
def test_reminders_by_due_time_status_and_customer(sync, storage, projector):
    ada = guest(sync, storage)
    bob = guest(sync, storage, 2002, "bob@example.com")
    reminders = Reminders(storage, clock=ticking())
    late = reminders.add(STORE, ada, {"due_at": "2026-05-02T09:00:00+02:00", "text": "Call"},
                         "alice").answer
    soon = reminders.add(STORE, bob, {"due_at": "2026-05-01T00:00:00Z", "text": "Mail",
                                      "assignee": "carol"}, "alice").answer
    assert late["due_at"] == "2026-05-02T07:00:00+00:00" and late["status"] == "open"
    assert [r["reminder_id"] for r in reminders.list(STORE)] == [soon["reminder_id"],
                                                                 late["reminder_id"]]
    assert [r["reminder_id"] for r in reminders.list(STORE, ada)] == [late["reminder_id"]]
    assert [r["reminder_id"] for r in reminders.list(
        STORE, due_before="2026-05-01T12:00:00+00:00")] == [soon["reminder_id"]]

    done = reminders.complete(STORE, soon["reminder_id"], "carol").answer
    assert (done["status"], done["completed_by"]) == ("done", "carol") and done["completed_at"]
    assert reminders.complete(STORE, soon["reminder_id"], "dave").answer["completed_by"] == "carol"
    assert [r["reminder_id"] for r in reminders.list(STORE)] == [late["reminder_id"]]
    assert [r["reminder_id"] for r in reminders.list(STORE, status="done")] == [soon["reminder_id"]]
    assert len(reminders.list(STORE, status=None)) == 2
    reminders.delete(STORE, late["reminder_id"], "alice")
    assert reminders.list(STORE, status=None) == [done]
    kinds = [e["kind"] for e in entries(storage, projector, ada)]
    assert kinds[:2] == ["reminder.deleted", "reminder.added"]
    assert [e["kind"] for e in entries(storage, projector, bob)][:2] == ["reminder.completed",
                                                                          "reminder.added"]


@pytest.mark.parametrize("reminder", [
    {"due_at": "2026-05-01T09:00:00", "text": "naive time"},
    {"due_at": "tomorrow", "text": "x"}, {"due_at": "2026-05-01T09:00:00Z", "text": ""},
    {"due_at": "2026-05-01T09:00:00Z", "text": "x" * 2001},
])
def test_reminders_are_validated(sync, storage, reminder):
    with pytest.raises(ValidationError):
        Reminders(storage).add(STORE, guest(sync, storage), reminder, "alice")
    with pytest.raises(ValidationError):
        Reminders(storage).list(STORE, status="later")
    # Before year 1 once in UTC: a field error, not an overflow in the database driver.
    with pytest.raises(ValidationError) as refused:
        Reminders(storage).list(STORE, due_before="0001-01-01T00:00:00+14:00")
    assert "due_before" in refused.value.args[1]["fields"]


# -- account status ---------------------------------------------------------------------------------
def test_account_status_publishes_and_survives_shop_updates(sync, storage, projector):
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    clear_outbox(storage)
    status = AccountStatus(storage, sync)
    written = status.set(STORE, [customer_id, "nobody", customer_id], "inactive", "alice")
    assert written.answer == {"results": [{"customer_id": customer_id, "outcome": "changed"},
                                          {"customer_id": "nobody", "outcome": "not_found"}]}
    assert written.touched == (("customers", customer_id),)
    [event] = owed(storage)
    assert event["event_type"] == "customer.updated"
    assert event["data"]["account_status"] == "inactive"
    assert event["data"]["changed_fields"] == ["account_status"]
    assert status.set(STORE, [customer_id], "inactive", "bob").answer["results"][0]["outcome"] == "unchanged"
    assert len(owed(storage)) == 1
    [entry] = [e for e in entries(storage, projector, customer_id)
               if e["kind"] == "customer.status_changed"]
    assert entry["actor"] == "alice" and entry["details"] == {"old_status": "active",
                                                              "new_status": "inactive"}

    clear_outbox(storage)
    sync.apply(STORE, "customer", "updated",
               payloads.customer(modified="2026-03-05T10:00:00", last_name="King"),
               correlation_id="wh-2")
    assert storage.customers.get(STORE, customer_id)["account_status"] == "inactive"
    [event] = owed(storage)
    assert event["data"]["account_status"] == "inactive"
    with pytest.raises(ValidationError):
        status.set(STORE, [customer_id], "banned", "alice")
    with pytest.raises(ValidationError):
        status.set(STORE, [], "active", "alice")


def test_the_customer_view_says_whether_they_are_active_and_why_not(sync, storage):
    queries = CustomerQueries(storage)
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    sync.apply(STORE, "customer", "created", payloads.customer(woo_id=43, email="b@example.org"),
               correlation_id="wh-2")
    kept = storage.customers.by_woo_id(STORE, 42)["_id"]
    gone = storage.customers.by_woo_id(STORE, 43)["_id"]
    view = queries.get_customer(STORE, kept)
    assert (view["account_status"], view["inactive_reason"]) == ("active", None)

    AccountStatus(storage, sync).set(STORE, [kept], "inactive", "alice")
    view = queries.get_customer(STORE, kept)
    assert (view["account_status"], view["inactive_reason"]) == ("inactive", "staff")

    sync.apply(STORE, "customer", "deleted", {"id": 43}, correlation_id="wh-3")
    view = queries.get_customer(STORE, gone)
    assert (view["status"], view["account_status"], view["inactive_reason"]) == (
        "deleted", "inactive", "deleted")


# -- staff edits --------------------------------------------------------------------------------------
def test_a_staff_edit_reaches_the_shop_and_is_applied_once(shop, sync, storage, projector):
    woo, customer_id = customer_from_shop(shop, sync, storage)
    clear_outbox(storage)
    edits = StaffEdits(storage, sync, clients())
    answer = edits.update_customer(STORE, customer_id,
                                   {"phone": "+49 30 123456", "last_name": "Neu"}, "alice").answer
    assert shop.customers[woo["id"]]["billing"]["phone"] == "+49 30 123456"
    assert shop.customers[woo["id"]]["last_name"] == "Neu"
    assert answer["written_to_shop"] is True and answer["customer"]["last_name"] == "Neu"
    [event] = owed(storage)
    assert event["event_type"] == "customer.updated"
    assert sorted(event["data"]["changed_fields"]) == ["billing", "last_name", "phone"]
    # The shop's webhook for the same change adds nothing.
    sync.apply(STORE, "customer", "updated", shop.customers[woo["id"]], correlation_id="wh-9")
    assert len(owed(storage)) == 1
    kinds = [(e["kind"], e["actor"]) for e in entries(storage, projector, customer_id)]
    assert kinds[0] == ("customer.staff_edit", "alice")
    assert ("customer.updated", "shop") not in kinds


def test_a_staff_edit_while_the_shop_is_down_changes_nothing(shop, sync, storage):
    woo, customer_id = customer_from_shop(shop, sync, storage)
    before = storage.customers.get(STORE, customer_id)
    clear_outbox(storage)
    shop.fail_next(5, status=503)
    with pytest.raises(Unavailable) as caught:
        StaffEdits(storage, sync, clients(retries=1)).update_customer(
            STORE, customer_id, {"first_name": "Never"}, "alice")
    assert caught.value.http_status == 503
    assert storage.customers.get(STORE, customer_id)["first_name"] == before["first_name"]
    assert owed(storage) == [] and shop.customers[woo["id"]]["first_name"] != "Never"


def test_a_guest_is_edited_here_only(shop, sync, storage):
    customer_id = guest(sync, storage)
    clear_outbox(storage)
    answer = StaffEdits(storage, sync, clients()).update_customer(
        STORE, customer_id, {"company": "ACME"}, "alice").answer
    assert answer["written_to_shop"] is False and answer["customer"]["company"] == "ACME"
    assert [e["event_type"] for e in owed(storage)] == ["customer.updated"]
    assert not any(r.method == "PUT" for r in shop.requests_log)
    with pytest.raises(ValidationError):
        StaffEdits(storage, sync, clients()).update_customer(
            STORE, customer_id, {"username": "x"}, "alice")


def test_a_staff_edit_is_dated_by_the_clock_it_is_given(shop, sync, storage):
    customer_id = guest(sync, storage)
    pinned = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    StaffEdits(storage, sync, clients(), clock=Clock(pinned)).update_customer(
        STORE, customer_id, {"company": "ACME"}, "alice")
    doc = storage.customers.get(STORE, customer_id)
    assert doc["staff_edits"][-1]["at"] == pinned and doc["contact_from_order_at"] == pinned


# -- deletion ------------------------------------------------------------------------------------------
def shop_order_applied(shop, sync, customer_id: int) -> dict:
    order = shop.add_order(customer_id=customer_id)
    sync.apply(STORE, "order", "created", order, correlation_id=f"wh-o{order['id']}")
    return order


def test_delete_keeping_anonymised_orders(shop, sync, storage, projector):
    woo, customer_id = customer_from_shop(shop, sync, storage)
    order = shop_order_applied(shop, sync, woo["id"])
    notes = Notes(storage)
    notes.add(STORE, customer_id, {"category": "general", "text": "VIP"}, "alice")
    clear_outbox(storage)
    written = CustomerDeletion(storage, sync, clients()).delete(
        STORE, [customer_id], "anonymise", "alice")
    assert written.answer == {"results": [{"customer_id": customer_id, "outcome": "deleted",
                                           "orders": 1}]}
    assert written.touched == (("customers", customer_id),)  # its event and timeline entry
    assert woo["id"] not in shop.customers and order["id"] in shop.orders
    local_order = storage.orders.get(STORE, str(order["id"]))
    assert local_order["personal_data_erased"] and local_order["billing"]["email"] == ""
    doc = storage.customers.get(STORE, customer_id)
    assert doc["status"] == "deleted" and "email" not in doc and doc["woo_customer_id"] == woo["id"]
    assert [e["event_type"] for e in owed(storage)] == ["customer.deleted"]
    assert storage.notes.collection.count_documents({}) == 0
    assert entries(storage, projector, customer_id)[0]["kind"] == "customer.deleted"

    # The shop's own webhooks for it afterwards change nothing and publish nothing.
    clear_outbox(storage)
    sync.apply(STORE, "customer", "deleted", {"id": woo["id"]}, correlation_id="wh-d")
    sync.apply(STORE, "order", "updated", shop.orders[order["id"]], correlation_id="wh-u")
    assert owed(storage) == []
    assert storage.orders.get(STORE, str(order["id"]))["billing"]["email"] == ""


def test_delete_with_orders_at_the_shop_and_here(shop, sync, storage):
    woo, customer_id = customer_from_shop(shop, sync, storage)
    orders = [shop_order_applied(shop, sync, woo["id"]) for _ in range(2)]
    clear_outbox(storage)
    answer = CustomerDeletion(storage, sync, clients()).delete(
        STORE, [customer_id], "delete", "alice").answer
    assert answer["results"] == [{"customer_id": customer_id, "outcome": "deleted", "orders": 2}]
    assert all(o["id"] not in shop.orders for o in orders) and woo["id"] not in shop.customers
    for o in orders:
        local = storage.orders.get(STORE, str(o["id"]))
        assert local["status"] == "deleted" and "billing" not in local
    types = sorted(e["event_type"] for e in owed(storage))
    assert types == ["customer.deleted", "order.cancelled", "order.cancelled"]
    clear_outbox(storage)
    # Late deliveries (a trash, an earlier state) neither revive nor re-cancel the orders.
    sync.apply(STORE, "order", "deleted", {"id": orders[0]["id"]}, correlation_id="wh-t")
    sync.apply(STORE, "order", "updated", orders[1], correlation_id="wh-late")
    assert owed(storage) == []
    assert storage.orders.get(STORE, str(orders[1]["id"]))["status"] == "deleted"


def test_one_failure_does_not_stop_the_others(shop, sync, storage):
    woo, registered = customer_from_shop(shop, sync, storage)
    guest_id = guest(sync, storage)
    shop.fail_next(10, status=503)
    answer = CustomerDeletion(storage, sync, clients()).delete(
        STORE, [registered, "nobody", guest_id], "anonymise", "alice").answer
    outcomes = {r["customer_id"]: r for r in answer["results"]}
    assert outcomes[registered]["outcome"] == "failed" and "shop" in outcomes[registered]["error"]
    assert outcomes["nobody"]["outcome"] == "not_found"
    assert outcomes[guest_id]["outcome"] == "deleted"
    assert storage.customers.get(STORE, registered)["status"] == "active"
    assert woo["id"] in shop.customers
    with pytest.raises(ValidationError):
        CustomerDeletion(storage, sync, clients()).delete(STORE, [guest_id], "keep", "alice")


def test_a_deletion_is_dated_by_the_clock_it_is_given(shop, sync, storage):
    woo, customer_id = customer_from_shop(shop, sync, storage)
    order = shop_order_applied(shop, sync, woo["id"])
    pinned = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    CustomerDeletion(storage, sync, clients(), clock=Clock(pinned)).delete(
        STORE, [customer_id], "delete", "alice")
    for doc in (storage.customers.get(STORE, customer_id),
                storage.orders.get(STORE, str(order["id"]))):
        assert doc["deleted_at"] == pinned
        [by_staff] = [e for e in doc[TIMELINE_FIELD] if e["actor"] == "alice"]
        assert by_staff["kind"].endswith(".deleted") and by_staff["at"] == pinned


# -- import ----------------------------------------------------------------------------------------------
ROWS = [
    {"line": 2, "email": "new.one@example.com", "first_name": "New", "billing_country": "de",
     "phone": "+49 30 1", "billing_city": "Berlin", "newsletter": "yes"},
    {"line": 3, "email": "not-an-email", "first_name": "Bad"},
    {"line": 4, "email": "NEW.one@example.com ", "first_name": "Twice"},
    {"line": 5, "email": "ada@example.com"},
    {"line": 6, "email": "x@example.com", "billing_country": "Germany", "phone": "call me"},
    {"line": 7, "email": "second@example.com", "first_name": "", "company": "ACME"},
]


def test_import_dry_run_apply_and_reapply(sync, storage, projector):
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    clear_outbox(storage)
    before = storage.customers.collection.count_documents({})
    importer = CustomerImport(storage, sync)
    written = importer.run(STORE, ROWS, False, "alice")
    dry, touched = written.answer, written.touched
    assert touched == () and storage.customers.collection.count_documents({}) == before
    assert [(r["line"], r["outcome"]) for r in dry["rows"]] == [
        (2, "create"), (3, "invalid"), (4, "duplicate_in_file"), (5, "exists"), (6, "invalid"),
        (7, "create")]
    assert set(dry["rows"][4]["errors"]) == {"billing_country", "phone"}
    assert dry["summary"]["create"] == 2 and dry["summary"]["applied"] is False
    assert dry["summary"]["ignored_columns"] == ["newsletter"]

    written = importer.run(STORE, ROWS, True, "alice")
    applied, touched = written.answer, written.touched
    assert [r["outcome"] for r in applied["rows"]] == [r["outcome"] for r in dry["rows"]]
    assert applied["summary"]["created"] == 2 and len(touched) == 2
    created = storage.customers.by_email(STORE, "new.one@example.com")
    assert created["registered"] is False and created["billing"]["country"] == "DE"
    assert created["billing"]["city"] == "Berlin" and created["source"] == "import"
    events = owed(storage)
    assert [e["event_type"] for e in events] == ["customer.created", "customer.created"]
    assert all(e["data"]["registered"] is False for e in events)
    [entry] = entries(storage, projector, created["_id"])
    assert entry["actor"] == "alice" and entry["details"]["source"] == "import"

    written = importer.run(STORE, ROWS, True, "alice")
    again, touched = written.answer, written.touched
    assert touched == () and again["summary"]["created"] == 0
    assert [r["outcome"] for r in again["rows"]][::5] == ["exists", "exists"]
    assert len(owed(storage)) == 2


def test_an_imported_contact_becomes_the_guest_and_then_the_registered_customer(sync, storage):
    CustomerImport(storage, sync).run(STORE, [{"line": 2, "email": "ada@example.com"}], True, "a")
    contact_id = storage.customers.by_email(STORE, "ada@example.com")["_id"]
    sync.apply(STORE, "order", "created", payloads.order(3001, customer_id=0), correlation_id="o")
    assert storage.orders.get(STORE, "3001")["customer_id"] == contact_id
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="c")
    assert storage.customers.by_woo_id(STORE, 42)["_id"] == contact_id


def test_import_refuses_erased_people_and_oversized_files(sync, storage):
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    CustomerErasure(storage).erase(STORE, [customer_id], "ada@example.com", "req-1")
    written = CustomerImport(storage, sync).run(
        STORE, [{"line": 2, "email": "Ada@example.com"}], True, "alice")
    answer, touched = written.answer, written.touched
    assert answer["rows"][0]["outcome"] == "invalid" and touched == ()
    with pytest.raises(ValidationError):
        CustomerImport(storage, sync).run(STORE, [{"email": "a@b.example"}] * 10_001, False, "a")


# -- erasure ------------------------------------------------------------------------------------------
def test_erasure_forgets_notes_reminders_and_timeline(sync, storage, projector):
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    Notes(storage).add(STORE, customer_id, {"category": "general", "text": "Ada likes tea"}, "al")
    Reminders(storage).add(STORE, customer_id, {"due_at": "2026-05-01T00:00:00Z",
                                                "text": "Ask Ada"}, "al")
    projector.sweep()
    assert storage.timeline.collection.count_documents({}) == 3
    CustomerErasure(storage).erase(STORE, [customer_id], "ada@example.com", "req-1")
    projector.sweep()
    for name in ("notes", "reminders", "timeline"):
        assert storage.database[name].count_documents({}) == 0, name


def test_timeline_amounts_follow_the_currencys_minor_unit():
    from services.customer_sync.crm.timeline import money_text

    assert money_text({"amount": 4990, "currency": "EUR"}) == "49.90 EUR"
    assert money_text({"amount": 1500, "currency": "JPY"}) == "1500 JPY"
    assert money_text({"amount": 1234, "currency": "KWD"}) == "1.234 KWD"


def test_jpy_and_kwd_orders_read_in_their_own_decimals_on_the_timeline(storage, projector):
    sync = CustomerSync(storage, clock=Clock(datetime(2026, 3, 5, 9, tzinfo=timezone.utc)))
    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    sync.apply(STORE, "order", "created", payloads.order(1001, total="1500", currency="JPY"),
               correlation_id="wh-2")
    sync.apply(STORE, "order", "created", payloads.order(1002, total="12.345", currency="KWD"),
               correlation_id="wh-3")
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    summaries = {e["summary"] for e in entries(storage, projector, customer_id)}
    assert {"Order #1001 placed (1500 JPY)", "Order #1002 placed (12.345 KWD)"} <= summaries


def test_a_consent_change_reaches_the_timeline_once_without_its_note(sync, storage, projector):
    from services.customer_sync.crm.timeline import record_foreign_event
    from shared.events import build_event

    sync.apply(STORE, "customer", "created", payloads.customer(), correlation_id="wh-1")
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    change = build_event("consent.changed", store_id=STORE, data={
        "customer_id": customer_id, "purpose": "email_marketing", "granted": False,
        "source": "unsubscribe_link", "changed_at": "2026-11-29T10:00:00+00:00",
        "origin": "notifications", "note": "Ada's own words"})
    assert record_foreign_event(storage, change)
    assert not record_foreign_event(storage, change)  # redelivered: one entry
    [entry] = [e for e in entries(storage, projector, customer_id)
               if e["kind"] == "consent.changed"]
    assert entry["summary"] == "Email marketing consent off (unsubscribe link)"
    assert entry["actor"] == "notifications"
    assert "Ada" not in json.dumps(entry, default=str)


# -- import modes: update and upsert ---------------------------------------------------------------
def test_an_update_import_changes_held_customers_by_email_and_reports_each_row(shop, sync,
                                                                             storage):
    woo, registered = customer_from_shop(shop, sync, storage)
    guest_id = guest(sync, storage, email="guest@example.com")
    clear_outbox(storage)
    held = storage.customers.get(STORE, guest_id)
    rows = [
        {"line": 2, "email": woo["email"].upper(), "last_name": "Renamed",
         "shipping_city": "Leith"},
        {"line": 3, "email": "guest@example.COM", "first_name": held["first_name"]},
        {"line": 4, "email": "guest@example.com", "company": "Twice"},
        {"line": 5, "email": "new.person@example.org", "first_name": "New"},
        {"line": 6, "email": "bad-phone@example.org", "phone": "call me"},
    ]
    importer = CustomerImport(storage, sync, client_factory=clients())
    written = importer.run(STORE, rows, False, "alice", "update")
    preview, touched = written.answer, written.touched
    outcomes = {r["line"]: r["outcome"] for r in preview["rows"]}
    assert outcomes == {2: "update", 3: "unchanged", 4: "duplicate_in_file", 5: "invalid",
                        6: "invalid"}
    assert "email" in preview["rows"][3]["errors"] and "phone" in preview["rows"][4]["errors"]
    assert touched == () and owed(storage) == [] and shop.customers[woo["id"]]["last_name"] != \
        "Renamed"

    written = importer.run(STORE, rows, True, "alice", "update")
    answer = written.answer
    assert answer["summary"]["updated"] == 1 and answer["summary"]["created"] == 0
    assert written.touched == (("customers", registered),)  # its event and timeline entry
    assert answer["summary"]["mode"] == "update"
    assert shop.customers[woo["id"]]["last_name"] == "Renamed"  # written to the shop first
    doc = storage.customers.get(STORE, registered)
    assert doc["last_name"] == "Renamed" and doc["shipping"]["city"] == "Leith"
    [event] = owed(storage, "customer.updated")
    assert event["data"]["customer_id"] == registered
    assert storage.customers.by_email(STORE, "new.person@example.org") is None

    again = importer.run(STORE, rows, True, "alice", "update").answer
    assert {r["line"]: r["outcome"] for r in again["rows"]}[2] == "unchanged"
    assert len(owed(storage, "customer.updated")) == 1


def test_an_upsert_creates_new_emails_and_a_shop_refusal_changes_nothing(shop, sync, storage):
    woo, registered = customer_from_shop(shop, sync, storage)
    clear_outbox(storage)
    rows = [{"line": 2, "email": woo["email"], "first_name": "Never"},
            {"line": 3, "email": "new.person@example.org", "first_name": "New"}]
    shop.fail_next(5, status=503)
    answer = CustomerImport(storage, sync, client_factory=clients(retries=1)).run(
        STORE, rows, True, "alice", "upsert").answer
    by_line = {r["line"]: r for r in answer["rows"]}
    assert by_line[2]["outcome"] == "refused" and by_line[2]["errors"]
    assert by_line[3]["outcome"] == "create" and answer["summary"]["created"] == 1
    assert storage.customers.get(STORE, registered)["first_name"] != "Never"
    assert shop.customers[woo["id"]]["first_name"] != "Never"
    assert [e["event_type"] for e in owed(storage)] == ["customer.created"]
    with pytest.raises(ValidationError) as refused:
        CustomerImport(storage, sync).run(STORE, rows, False, "alice", "merge")
    assert "mode" in refused.value.args[1]["fields"]
