"""Manual merges and unmerges in customer_sync on an in-memory MongoDB: what moves, what the
primary keeps, the events owed, what happened since the merge, crashes and races."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.customer_sync.core import merges as merges_module
from services.customer_sync.core.merge_rules import fields_to_restore, plan_fields
from services.customer_sync.core.merges import CLAIM_LEASE, CustomerMerges
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.crm.notes import Notes
from services.customer_sync.crm.reminders import Reminders
from services.customer_sync.repository import MATCH_KEYS_FIELD, CustomerSyncStorage
from shared.errors import Conflict, NotFound, ValidationError
from shared.outbox import OUTBOX_FIELD
from tests import payloads

STORE = "s1"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def storage(database):
    s = CustomerSyncStorage(database)
    s.ensure_indexes()
    return s


@pytest.fixture
def sync(storage, clock):
    return CustomerSync(storage, clock)


@pytest.fixture
def merges(storage, sync, clock):
    return CustomerMerges(storage, sync, clock)


def owed(storage, event_type=None) -> list[dict]:
    out = []
    for collection in storage.outbox_collections():
        for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}).sort("_id", 1):
            out.extend(entry["message"] for entry in doc[OUTBOX_FIELD])
    return [m for m in out if event_type is None or m["event_type"] == event_type]


def apply(sync, resource, action, body):
    return sync.apply(STORE, resource, action, body, correlation_id="corr-1")


@pytest.fixture
def two(sync, storage, clock):
    """Two shop accounts of one person: 42 (ada@home) with order 1, 43 (ada@work) with 2."""
    apply(sync, "customer", "created", payloads.customer(
        woo_id=42, email="ada@home.example", billing=payloads.address("ada@home.example", phone="")))
    apply(sync, "customer", "created", payloads.customer(
        woo_id=43, email="ada@work.example", first_name="Augusta",
        billing=payloads.address("ada@work.example", phone="+441234")))
    apply(sync, "order", "created", payloads.order(
        1, customer_id=42, email="ada@home.example",
        billing=payloads.address("ada@home.example", phone="")))
    apply(sync, "order", "created", payloads.order(
        2, customer_id=43, email="ada@work.example",
        billing=payloads.address("ada@work.example", phone="+441234")))
    primary = storage.customers.by_woo_id(STORE, 42)["_id"]
    other = storage.customers.by_woo_id(STORE, 43)["_id"]
    notes = Notes(storage, clock=clock)
    note = notes.add(STORE, other, {"category": "general", "text": "likes tea"}, "alice")
    reminder = Reminders(storage, clock=clock).add(
        STORE, other, {"due_at": "2026-06-01T00:00:00+00:00", "text": "call"}, "alice")
    clock.advance(minutes=5)
    return {"primary": primary, "other": other, "note": note.answer["note_id"],
            "reminder": reminder.answer["reminder_id"]}


# -- the pure rules ---------------------------------------------------------------------------
def test_unchosen_fields_keep_the_primarys_value_or_take_a_merged_ones_where_it_is_empty():
    primary = {"_id": "p", "email": "p@example.com", "phone": "", "first_name": "P"}
    merged = [{"_id": "m", "email": "m@example.com", "phone": "+1", "first_name": "M"}]
    plan = plan_fields(primary, merged, {"first_name": "m"})
    assert plan.values["email"] == "p@example.com" and plan.sources["email"] == "p"
    assert plan.values["phone"] == "+1" and plan.sources["phone"] == "m"
    assert plan.values["first_name"] == "M"
    assert plan.changes == {"phone": {"before": "", "after": "+1"},
                            "first_name": {"before": "P", "after": "M"}}


def test_an_unmerge_gives_back_only_fields_not_edited_since():
    changes = {"phone": {"before": "", "after": "+1"}, "email": {"before": "a@x.io", "after": "b@x.io"}}
    restore, kept = fields_to_restore(changes, {"phone": "+9", "email": "b@x.io"})
    assert restore == {"email": "a@x.io", "email_key": "a@x.io"}
    assert kept == ["phone"]


# -- merging ----------------------------------------------------------------------------------
def test_a_merge_moves_everything_to_the_primary_and_publishes_one_merged_event_each(
        merges, storage, two):
    result = merges.merge_customers(STORE, two["primary"], [two["other"]],
                                    {"email": two["other"]}, "alice")
    answer = result.answer
    merge_id = answer["merge_id"]
    primary = storage.customers.get(STORE, two["primary"])
    other = storage.customers.get(STORE, two["other"])
    assert primary["email"] == "ada@work.example" and primary["email_key"] == "ada@work.example"
    assert primary["first_name"] == "Ada"      # the primary's by default
    assert primary["phone"] == "+441234"       # empty on the primary: the merged record's
    assert "pending_merge_id" not in primary
    assert (other["status"], other["merged_into"], other["merge_id"]) == (
        "merged", two["primary"], merge_id)
    assert MATCH_KEYS_FIELD not in other and "merge_claim" not in other
    assert storage.orders.get(STORE, "2")["customer_id"] == two["primary"]
    assert storage.notes.get(STORE, two["note"])["customer_id"] == two["primary"]
    assert storage.reminders.get(STORE, two["reminder"])["customer_id"] == two["primary"]
    [merged_event] = owed(storage, "customer.merged")
    assert merged_event["data"] == {"customer_id": two["primary"],
                                    "merged_customer_id": two["other"],
                                    "merge_id": merge_id, "kind": "manual"}
    updated = owed(storage, "customer.updated")[-1]
    assert updated["data"]["customer_id"] == two["primary"]
    assert sorted(updated["data"]["changed_fields"]) == ["email", "phone"]
    # WooCommerce has no merge: both accounts remain there, and the operator is told.
    assert sorted(a["woo_customer_id"] for a in answer["shop_accounts"]) == [42, 43]
    assert answer["state"] == "merged" and answer["moved"]["orders"] == ["2"]
    record = storage.merges.get(STORE, merge_id)
    assert record["snapshots"][two["primary"]]["email"] == "ada@home.example"
    assert record["created_by"] == "alice"
    assert result.touched == (("customers", two["primary"]),)


def test_a_merged_shop_account_is_updated_silently_and_its_new_orders_go_to_the_primary(
        merges, sync, storage, two):
    merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice")
    before = len(owed(storage))
    apply(sync, "customer", "updated", payloads.customer(
        woo_id=43, email="ada@work.example", first_name="Gus", modified="2026-04-01T00:00:00"))
    other = storage.customers.get(STORE, two["other"])
    assert other["first_name"] == "Gus" and other["status"] == "merged"
    assert not other.get(MATCH_KEYS_FIELD)
    assert len(owed(storage)) == before  # a merged record announces nothing
    apply(sync, "order", "created", payloads.order(3, customer_id=43, email="ada@work.example"))
    assert storage.orders.get(STORE, "3")["customer_id"] == two["primary"]
    placed = [m for m in owed(storage, "order.placed") if m["data"]["order_id"] == "3"]
    assert placed[0]["data"]["customer_id"] == two["primary"]


@pytest.mark.parametrize("args, field", [
    (lambda t: (t["primary"], [t["primary"]], {}), "merged_ids"),
    (lambda t: (t["primary"], [t["other"], t["other"]], {}), "merged_ids"),
    (lambda t: (t["primary"], [], {}), "merged_ids"),
    (lambda t: (t["primary"], [f"c{n}" for n in range(11)], {}), "merged_ids"),
    (lambda t: (t["primary"], t["other"], {}), "merged_ids"),
    (lambda t: (t["primary"], [t["other"]], {"username": t["other"]}), "field_choices"),
    (lambda t: (t["primary"], [t["other"]], {"email": "someone-else"}), "field_choices"),
    (lambda t: (t["primary"], [t["other"]], ["email"]), "field_choices"),
    (lambda t: ("", [t["other"]], {}), "primary_id"),
])
def test_bad_merge_requests_are_refused_naming_the_field_and_change_nothing(
        merges, storage, two, args, field):
    with pytest.raises(ValidationError) as refused:
        merges.merge_customers(STORE, *args(two), "alice")
    assert field in refused.value.details["fields"]
    assert storage.merges.collection.count_documents({}) == 0
    assert storage.customers.get(STORE, two["other"])["status"] == "active"


def test_unknown_erased_merged_or_other_stores_records_are_refused(merges, storage, sync, two):
    with pytest.raises(NotFound):
        merges.merge_customers(STORE, two["primary"], ["nobody"], {}, "alice")
    with pytest.raises(NotFound):
        merges.merge_customers("s2", two["primary"], [two["other"]], {}, "alice")
    merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice")
    with pytest.raises(Conflict) as again:
        merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice")
    assert "merged_ids" in again.value.details["fields"]
    with pytest.raises(Conflict):
        merges.merge_customers(STORE, two["other"], [two["primary"]], {}, "alice")
    assert len(owed(storage, "customer.merged")) == 1


# -- crashes and races ------------------------------------------------------------------------
def test_a_merge_cut_short_by_a_crash_is_finished_by_the_next_touch(
        merges, sync, storage, two, monkeypatch):
    monkeypatch.setattr(merges_module, "finish_merge", lambda *args: None)
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    assert storage.customers.get(STORE, two["primary"])["pending_merge_id"] == merge_id
    assert storage.orders.get(STORE, "2")["customer_id"] == two["other"]
    monkeypatch.undo()
    # The shop's next word about the primary finishes it.
    apply(sync, "customer", "updated", payloads.customer(
        woo_id=42, email="ada@home.example", modified="2026-04-02T00:00:00",
        billing=payloads.address("ada@home.example", phone="")))
    assert "pending_merge_id" not in storage.customers.get(STORE, two["primary"])
    assert storage.customers.get(STORE, two["other"])["status"] == "merged"
    assert storage.orders.get(STORE, "2")["customer_id"] == two["primary"]
    assert storage.merges.get(STORE, merge_id)["state"] == "done"
    assert len(owed(storage, "customer.merged")) == 1


def test_a_crash_between_the_primarys_write_and_the_records_step_still_finishes_the_merge(
        merges, sync, storage, two, clock, monkeypatch):
    # The primary's write (its fields, the marker and customer.merged, announced) lands, then
    # the process dies before the merge record says "pending": the marker is the word that
    # the merge happened, for the next touch and for a merge meeting the old claim.
    monkeypatch.setattr(merges_module, "finish_merge", lambda *args: None)
    real_move_state = storage.merges.move_state
    storage.merges.move_state = lambda merge_id, from_states, state, *a, **k: (
        False if state == "pending" else real_move_state(merge_id, from_states, state, *a, **k))
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    storage.merges.move_state = real_move_state
    monkeypatch.undo()
    assert storage.merges.get(STORE, merge_id)["state"] == "planned"
    clock.advance(seconds=CLAIM_LEASE.total_seconds() + 1)
    # Another merge meets the claim, now old: it finishes the merge instead of abandoning it.
    with pytest.raises(Conflict):
        merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "bob")
    record = storage.merges.get(STORE, merge_id)
    assert record["state"] == "done"
    assert storage.customers.get(STORE, two["other"])["status"] == "merged"
    assert storage.orders.get(STORE, "2")["customer_id"] == two["primary"]
    assert "pending_merge_id" not in storage.customers.get(STORE, two["primary"])
    assert len(owed(storage, "customer.merged")) == 1
    assert merges.get(STORE, merge_id)["merge_id"] == merge_id  # readable, so it can be undone


def test_a_merge_whose_record_was_deleted_at_the_shop_meanwhile_leaves_it_deleted(
        merges, sync, storage, two, clock, monkeypatch):
    monkeypatch.setattr(merges_module, "finish_merge", lambda *args: None)
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    monkeypatch.undo()
    apply(sync, "customer", "deleted", {"id": 43})  # claimed, then deleted at the shop
    assert storage.customers.get(STORE, two["other"])["status"] == "deleted"
    merges_module.finish_merge(storage, STORE, merge_id, clock())
    other = storage.customers.get(STORE, two["other"])
    assert other["status"] == "deleted" and "merged_into" not in other
    assert storage.orders.get(STORE, "2")["customer_id"] == two["other"]  # nothing moved
    assert storage.merges.get(STORE, merge_id)["state"] == "done"


def test_a_primary_changed_meanwhile_is_read_again_and_merged_once(merges, sync, storage, two):
    real_update = storage.customers.update
    raced = []

    def update(doc_id, version, fields, *args, **kwargs):
        if "pending_merge_id" in fields and not raced:
            raced.append(True)  # the shop's webhook lands between the read and the write
            apply(sync, "customer", "updated", payloads.customer(
                woo_id=42, email="ada@home.example", last_name="King",
                billing=payloads.address("ada@home.example", phone=""),
                modified="2026-04-02T00:00:00"))
        return real_update(doc_id, version, fields, *args, **kwargs)

    storage.customers.update = update
    merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice")
    primary = storage.customers.get(STORE, two["primary"])
    assert raced and primary["last_name"] == "King" and primary["phone"] == "+441234"
    assert len(owed(storage, "customer.merged")) == 1
    assert storage.customers.get(STORE, two["other"])["status"] == "merged"


def test_a_record_claimed_by_another_merge_is_refused_until_its_claim_is_stale(
        merges, storage, two, clock):
    other = storage.customers.get(STORE, two["other"])
    storage.merges.plan({"_id": "m-crashed", "store_id": STORE, "kind": "manual",
                         "primary_id": "x", "merged_ids": [two["other"]], "created_at": clock()})
    storage.customers.collection.update_one({"_id": other["_id"]},
                                            {"$set": {"merge_claim": "m-crashed"}})
    with pytest.raises(Conflict):
        merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice")
    clock.advance(seconds=CLAIM_LEASE.total_seconds() + 1)
    merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice")
    assert storage.merges.get(STORE, "m-crashed")["state"] == "abandoned"
    assert storage.customers.get(STORE, two["other"])["merged_into"] == two["primary"]


def test_a_merge_slower_than_its_claims_lease_still_retires_its_records(
        merges, storage, two, clock):
    real_update = storage.customers.update

    def update(doc_id, version, fields, *args, **kwargs):
        if "pending_merge_id" in fields:
            # The merge stalls past the lease and another one's look at the record releases
            # its claim as left by a crash; then the primary's write lands after all.
            clock.advance(seconds=CLAIM_LEASE.total_seconds() + 1)
            assert merges._release_stale_claim(STORE, storage.customers.get(STORE, two["other"]))
        return real_update(doc_id, version, fields, *args, **kwargs)

    storage.customers.update = update
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    other = storage.customers.get(STORE, two["other"])
    assert (other["status"], other["merge_id"]) == ("merged", merge_id)
    assert storage.merges.get(STORE, merge_id)["state"] == "done"
    assert storage.orders.get(STORE, "2")["customer_id"] == two["primary"]


# -- unmerging --------------------------------------------------------------------------------
def test_an_unmerge_hands_back_what_moved_and_what_is_the_restored_records_own(
        merges, sync, storage, two, clock):
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]],
                                      {"email": two["other"], "first_name": two["other"]},
                                      "alice").answer["merge_id"]
    clock.advance(hours=1)
    # Since the merge: an order of each shop account, a note on the primary, and an edit of
    # a field the merge gave the primary.
    apply(sync, "order", "created", payloads.order(3, customer_id=43, email="ada@work.example"))
    apply(sync, "order", "created", payloads.order(4, customer_id=42, email="ada@home.example"))
    new_note = Notes(storage, clock=clock).add(STORE, two["primary"],
                                               {"category": "general", "text": "new"}, "bob")
    primary = storage.customers.get(STORE, two["primary"])
    storage.customers.update(primary["_id"], primary["version"], {"first_name": "Edited"})
    before = {m["event_id"] for m in owed(storage)}

    result = merges.unmerge(STORE, merge_id, "bob")
    answer = result.answer
    [restored] = answer["restored"]
    assert restored["customer_id"] == two["other"] and restored["status"] == "active"
    assert restored["orders_back"] == ["2"] and restored["orders_since"] == ["3"]
    assert restored["notes_back"] == 1 and restored["reminders_back"] == 1
    assert [o["order_id"] for o in answer["orders_stayed"]] == ["4"]
    assert answer["fields_back"] == ["email", "phone"]
    assert answer["fields_kept"] == ["first_name"]  # edited since the merge: the edit wins
    assert storage.orders.get(STORE, "2")["customer_id"] == two["other"]
    assert storage.orders.get(STORE, "3")["customer_id"] == two["other"]
    assert storage.orders.get(STORE, "4")["customer_id"] == two["primary"]
    assert storage.notes.get(STORE, two["note"])["customer_id"] == two["other"]
    assert storage.notes.get(STORE, new_note.answer["note_id"])["customer_id"] == two["primary"]
    other = storage.customers.get(STORE, two["other"])
    assert other["status"] == "active" and "merged_into" not in other
    assert other[MATCH_KEYS_FIELD]  # a live record again: findable as a duplicate
    primary = storage.customers.get(STORE, two["primary"])
    assert primary["email"] == "ada@home.example" and primary["first_name"] == "Edited"
    def new_on(customer_id):
        doc = storage.customers.collection.find_one({"_id": customer_id})
        return [e["message"] for e in doc[OUTBOX_FIELD] if e["message"]["event_id"] not in before]

    unmerged, restored_update = new_on(two["other"])  # in this order, in one write
    assert unmerged["event_type"] == "customer.unmerged"
    assert unmerged["data"] == {"customer_id": two["primary"],
                                "restored_customer_id": two["other"], "merge_id": merge_id,
                                "orders_since": ["3"]}
    assert restored_update["event_type"] == "customer.updated"
    assert restored_update["data"]["email"] == "ada@work.example"
    [primary_update] = new_on(two["primary"])
    assert primary_update["data"]["changed_fields"] == ["email", "phone"]
    assert primary_update["data"]["email"] == "ada@home.example"
    with pytest.raises(Conflict):
        merges.unmerge(STORE, merge_id, "bob")
    view = merges.get(STORE, merge_id)
    assert view["state"] == "unmerged" and view["unmerged_by"] == "bob"
    assert view["unmerge"] == answer


def test_a_merged_account_deleted_at_the_shop_is_deleted_silently_and_not_restored(
        merges, sync, storage, two):
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    before = len(owed(storage))
    apply(sync, "customer", "deleted", {"id": 43})
    assert storage.customers.get(STORE, two["other"])["status"] == "deleted"
    assert len(owed(storage)) == before  # not a live customer: nobody is told
    answer = merges.unmerge(STORE, merge_id, "bob").answer
    assert answer["restored"][0]["status"] == "deleted"
    assert answer["restored"][0]["orders_back"] == []
    assert storage.orders.get(STORE, "2")["customer_id"] == two["primary"]
    assert owed(storage, "customer.unmerged") == []


def unmerge_cut_short(merges, two, monkeypatch) -> str:
    """A merge whose unmerge crashed before giving the primary its fields back: its id."""
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    monkeypatch.setattr(CustomerMerges, "_restore_primary_fields",
                        lambda *args: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        merges.unmerge(STORE, merge_id, "bob")
    monkeypatch.undo()
    return merge_id


def test_an_unmerge_cut_short_is_finished_by_asking_again(merges, storage, two, monkeypatch):
    merge_id = unmerge_cut_short(merges, two, monkeypatch)
    assert storage.merges.get(STORE, merge_id)["state"] == "unmerging"
    answer = merges.unmerge(STORE, merge_id, "bob").answer
    assert answer["restored"][0]["orders_back"] == ["2"]
    assert len(owed(storage, "customer.unmerged")) == 1
    with pytest.raises(Conflict):
        merges.unmerge(STORE, merge_id, "bob")


def test_an_unmerge_cut_short_and_then_erased_is_a_conflict_not_a_crash(
        merges, storage, two, monkeypatch):
    merge_id = unmerge_cut_short(merges, two, monkeypatch)
    storage.merges.forget(STORE, [two["other"]])  # the person is erased meanwhile
    with pytest.raises(Conflict) as info:
        merges.unmerge(STORE, merge_id, "bob")
    assert info.value.details["fields"] == {"merge_id": ["erased"]}


def test_a_guest_merge_can_be_undone(merges, sync, storage):
    apply(sync, "customer", "created", payloads.customer(woo_id=42, email="ada@old.example"))
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="ada@new.example"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    apply(sync, "customer", "updated",
          payloads.customer(woo_id=42, email="ada@new.example", modified="2026-04-01T00:00:00"))
    [merged] = owed(storage, "customer.merged")
    listed = merges.list(STORE)["items"]
    assert [(m["merge_id"], m["kind"]) for m in listed] == [(merged["data"]["merge_id"], "guest")]
    answer = merges.unmerge(STORE, merged["data"]["merge_id"], "bob").answer
    assert answer["restored"][0]["orders_back"] == ["1"]
    guest = storage.customers.get(STORE, guest_id)
    assert guest["status"] == "active" and guest["guest_email_key"] == "ada@new.example"


def test_unknown_merges_are_not_found_and_other_stores_see_none(merges, storage, two):
    merge_id = merges.merge_customers(STORE, two["primary"], [two["other"]], {},
                                      "alice").answer["merge_id"]
    with pytest.raises(NotFound):
        merges.unmerge(STORE, "nope", "bob")
    with pytest.raises(NotFound):
        merges.get("s2", merge_id)
    assert merges.list("s2")["items"] == []
    assert [m["merge_id"] for m in merges.list(STORE, customer_id=two["other"])["items"]] == [
        merge_id]


@pytest.mark.parametrize("merge_id", ["", "x" * 65, "m 1", "m1\n", "../m1", 7, None])
def test_a_merge_id_over_rpc_is_what_the_gateway_accepts_in_the_path(merges, merge_id):
    with pytest.raises(ValidationError) as info:
        merges.get(STORE, merge_id)
    assert "merge_id" in info.value.details["fields"]


# -- custom field values ----------------------------------------------------------------------
def test_the_primarys_values_win_and_a_merged_records_fill_the_keys_it_has_none_of():
    primary = {"_id": "p", "custom_fields": {"tier": "gold"}}
    merged = [{"_id": "m", "custom_fields": {"tier": "silver", "visits": 3}},
              {"_id": "n", "custom_fields": {"visits": 9, "vip": True}}]
    plan = plan_fields(primary, merged, {})
    assert plan.values["custom_fields"] == {"tier": "gold", "visits": 3, "vip": True}
    assert plan.changes["custom_fields"] == {
        "before": {"tier": "gold"}, "after": {"tier": "gold", "visits": 3, "vip": True}}
    assert "custom_fields" not in plan_fields(merged[0], [{"_id": "q"}], {}).changes


def test_an_unmerge_takes_off_the_values_it_gave_unless_edited_since():
    changes = {"custom_fields": {"before": {"tier": "gold"},
                                 "after": {"tier": "gold", "visits": 3, "vip": True}}}
    restore, kept = fields_to_restore(changes, {"custom_fields": {
        "tier": "platinum", "visits": 3, "vip": False, "since": "2026-01-01"}})
    assert restore == {"custom_fields": {"tier": "platinum", "vip": False,
                                         "since": "2026-01-01"}}
    assert kept == ["custom_fields"]


def _with_values(storage, sync, clock, two):
    custom = CustomFields(storage, sync, clock)
    for key, kind in (("tier", "text"), ("visits", "number"), ("vip", "boolean")):
        custom.create(STORE, {"key": key, "label": key, "type": kind}, "alice")
    custom.set_values(STORE, two["primary"], {"tier": "gold"}, "alice")
    custom.set_values(STORE, two["other"], {"tier": "silver", "visits": 3}, "alice")
    for collection in storage.outbox_collections():
        collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})
    return custom


def test_a_merge_carries_the_merged_records_values_and_an_unmerge_gives_them_back(
        merges, storage, sync, clock, two):
    custom = _with_values(storage, sync, clock, two)
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice").answer
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == \
        {"tier": "gold", "visits": 3}
    [updated] = owed(storage, "customer.updated")
    assert updated["data"]["custom_fields"] == {"tier": "gold", "visits": 3}
    assert "custom_fields" in updated["data"]["changed_fields"]
    assert "custom_fields" in merge["changed_fields"]
    for collection in storage.outbox_collections():
        collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})
    # Since the merge the primary gains a value of its own; the one it was given goes back.
    custom.set_values(STORE, two["primary"], {"tier": "gold", "visits": 3, "vip": True},
                      "bob")
    for collection in storage.outbox_collections():
        collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})
    merges.unmerge(STORE, merge["merge_id"], "alice")
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == \
        {"tier": "gold", "vip": True}
    assert storage.customers.get(STORE, two["other"])["custom_fields"] == \
        {"tier": "silver", "visits": 3}
    by_customer = {m["data"]["customer_id"]: m["data"] for m in owed(storage, "customer.updated")}
    assert by_customer[two["primary"]]["custom_fields"] == {"tier": "gold", "vip": True}
    assert "custom_fields" in by_customer[two["primary"]]["changed_fields"]
    assert by_customer[two["other"]]["custom_fields"] == {"tier": "silver", "visits": 3}


def test_an_unmerge_restores_no_value_of_a_field_deleted_since(merges, storage, sync, clock,
                                                                two):
    custom = _with_values(storage, sync, clock, two)
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice").answer
    custom.delete(STORE, "visits", "alice")
    merges.unmerge(STORE, merge["merge_id"], "alice")
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == {"tier": "gold"}
    assert storage.customers.get(STORE, two["other"])["custom_fields"] == {"tier": "silver"}


def test_a_guest_merge_carries_the_guests_values_and_its_undoing_takes_them_back(
        merges, sync, storage, clock):
    custom = CustomFields(storage, sync, clock)
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text"}, "alice")
    custom.create(STORE, {"key": "visits", "label": "Visits", "type": "number"}, "alice")
    apply(sync, "customer", "created", payloads.customer(woo_id=42, email="ada@old.example"))
    apply(sync, "order", "created", payloads.order(1, customer_id=0, email="ada@new.example"))
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    primary_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    custom.set_values(STORE, primary_id, {"tier": "gold"}, "alice")
    custom.set_values(STORE, guest_id, {"tier": "bronze", "visits": 2}, "alice")
    for collection in storage.outbox_collections():
        collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})
    apply(sync, "customer", "updated",
          payloads.customer(woo_id=42, email="ada@new.example", modified="2026-04-01T00:00:00"))
    assert storage.customers.get(STORE, primary_id)["custom_fields"] == \
        {"tier": "gold", "visits": 2}
    [updated] = owed(storage, "customer.updated")
    assert updated["data"]["custom_fields"] == {"tier": "gold", "visits": 2}
    assert "custom_fields" in updated["data"]["changed_fields"]
    [merged] = owed(storage, "customer.merged")
    merges.unmerge(STORE, merged["data"]["merge_id"], "bob")
    assert storage.customers.get(STORE, primary_id)["custom_fields"] == {"tier": "gold"}
    assert storage.customers.get(STORE, guest_id)["custom_fields"] == \
        {"tier": "bronze", "visits": 2}


def test_the_operators_choice_of_a_custom_field_wins_and_its_undoing_puts_it_back(
        merges, storage, sync, clock, two):
    _with_values(storage, sync, clock, two)
    with pytest.raises(ValidationError) as refused:
        merges.merge_customers(STORE, two["primary"], [two["other"]],
                               {"custom_fields.colour": two["other"]}, "alice")
    assert "field_choices" in refused.value.details["fields"]
    with pytest.raises(ValidationError):
        merges.merge_customers(STORE, two["primary"], [two["other"]],
                               {"custom_fields.tier": "someone-else"}, "alice")
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]],
                                   {"custom_fields.tier": two["other"],
                                    "custom_fields.visits": two["primary"]}, "alice").answer
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == {"tier": "silver"}
    assert merge["field_choices"]["custom_fields.tier"] == two["other"]
    merges.unmerge(STORE, merge["merge_id"], "alice")
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == {"tier": "gold"}


def test_an_unmerge_puts_back_a_chosen_value_unless_edited_since():
    change = {"before": {"tier": "gold", "vip": True},
              "after": {"tier": "silver", "visits": 3}}
    restore, kept = fields_to_restore({"custom_fields": change}, {"custom_fields": {
        "tier": "silver", "visits": 4}})
    assert restore == {"custom_fields": {"tier": "gold", "vip": True, "visits": 4}}
    assert kept == ["custom_fields"]


def test_the_unmerge_answer_reports_the_custom_values_that_went_back(merges, storage, sync,
                                                                      clock, two):
    custom = _with_values(storage, sync, clock, two)
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice").answer
    # A value of its own since the merge: the one the merge gave (visits) still goes back.
    custom.set_values(STORE, two["primary"], {"tier": "gold", "visits": 3, "vip": True},
                      "bob")
    answer = merges.unmerge(STORE, merge["merge_id"], "alice").answer
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == \
        {"tier": "gold", "vip": True}
    assert "custom_fields" in answer["fields_back"]
    assert "custom_fields" not in answer["fields_kept"]
    assert merges.get(STORE, merge["merge_id"])["unmerge"] == answer


def test_the_unmerge_answer_names_custom_fields_kept_when_a_given_value_was_edited(
        merges, storage, sync, clock, two):
    custom = _with_values(storage, sync, clock, two)
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice").answer
    custom.set_values(STORE, two["primary"], {"tier": "gold", "visits": 4}, "bob")
    answer = merges.unmerge(STORE, merge["merge_id"], "alice").answer
    assert storage.customers.get(STORE, two["primary"])["custom_fields"] == \
        {"tier": "gold", "visits": 4}
    assert "custom_fields" in answer["fields_kept"]
    assert "custom_fields" not in answer["fields_back"]


def test_an_unmerge_restores_no_value_a_field_defined_again_with_another_type_refuses(
        merges, storage, sync, clock, two):
    custom = _with_values(storage, sync, clock, two)
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]], {}, "alice").answer
    custom.delete(STORE, "tier", "alice")
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "number"}, "alice")
    answer = merges.unmerge(STORE, merge["merge_id"], "alice").answer
    # The snapshot's text "silver" no longer fits a number field: left out, and said so.
    assert storage.customers.get(STORE, two["other"])["custom_fields"] == {"visits": 3}
    [restored] = answer["restored"]
    assert restored["values_dropped"] == ["tier"]
    assert answer["values_dropped"] == []


def test_an_unmerge_puts_back_on_the_primary_no_value_its_field_now_refuses(
        merges, storage, sync, clock, two):
    custom = _with_values(storage, sync, clock, two)
    merge = merges.merge_customers(STORE, two["primary"], [two["other"]],
                                   {"custom_fields.tier": two["other"]}, "alice").answer
    assert storage.customers.get(STORE, two["primary"])["custom_fields"]["tier"] == "silver"
    custom.update(STORE, "tier", {"max_length": 3}, "alice")  # "gold" no longer fits
    answer = merges.unmerge(STORE, merge["merge_id"], "alice").answer
    assert "tier" not in storage.customers.get(STORE, two["primary"])["custom_fields"]
    assert answer["values_dropped"] == ["tier"]
