"""A manual merge and its undoing through the gateway, on the real broker with every service
running: two shop accounts of one person with orders, a note and a reminder are merged, then
the merge is undone; customer_sync's data and the events it published are checked each time."""
from __future__ import annotations

from shared import mongo
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.integration.test_gateway_routes import MERGE_ROUTES, _ok, _problem, assert_driven
from tests.support import wait_until


def _customer_sync(system):
    return mongo.connect(system.services.mongo_uri)["companion_customer_sync"]


def _order_owners(db, order_ids) -> dict[str, str]:
    return {d["order_id"]: d["customer_id"]
            for d in db["orders"].find({"store_id": STORE, "order_id": {"$in": order_ids}})}


def test_merge_and_unmerge_through_the_gateway(system, events):
    events.listen("customer_sync")
    reader, writer = system.client("read"), system.client("write")
    _, primary = system.shop_customer(orders=1)
    _, other = system.shop_customer(orders=2)
    db = _customer_sync(system)
    other_orders = sorted(d["order_id"] for d in db["orders"].find({"customer_id": other}))
    assert len(other_orders) == 2
    note = _ok(writer.post(f"/customers/{other}/notes",
                           json={"category": "general", "text": "prefers email"}), 201)
    reminder = _ok(writer.post(f"/customers/{other}/reminders",
                               json={"due_at": "2030-01-01T09:00:00Z", "text": "call back"}), 201)
    _ok(writer.post("/custom-fields", json={"key": "tier", "label": "Tier", "type": "text"}), 201)
    _ok(writer.post("/custom-fields", json={"key": "visits", "label": "Visits",
                                            "type": "number"}), 201)
    _ok(writer.put(f"/customers/{primary}/custom-fields", json={"tier": "gold"}))
    _ok(writer.put(f"/customers/{other}/custom-fields", json={"tier": "silver", "visits": 3}))

    # Refusals first: nothing of them is kept.
    _problem(writer.post("/customers/merge", json={"primary_id": primary, "merged_ids": []}), 400,
             "merged_ids")
    _problem(writer.post("/customers/merge", json={"primary_id": primary,
                                                   "merged_ids": ["no-such-record"]}), 404)
    _problem(reader.get("/merges/no-such-merge"), 404)
    _problem(writer.post("/merges/no-such-merge/unmerge"), 404)
    _problem(reader.get("/merges", params={"limit": 0}), 400, "limit")
    assert db["merges"].count_documents({}) == 0

    merge = _ok(writer.post("/customers/merge", json={
        "primary_id": primary, "merged_ids": [other], "field_choices": {"first_name": other}}),
        201)
    merge_id = merge["merge_id"]
    assert merge["state"] == "merged" and merge["kind"] == "manual"
    assert sorted(merge["moved"]["orders"]) == other_orders
    assert merge["moved"]["notes"] == [note["note_id"]]
    assert merge["moved"]["reminders"] == [reminder["reminder_id"]]
    assert len(merge["shop_accounts"]) == 2  # WooCommerce keeps both accounts

    # customer_sync's data: the merged record retired, its things with the primary.
    merged_doc = db["customers"].find_one({"_id": other})
    assert (merged_doc["status"], merged_doc["merged_into"]) == ("merged", primary)
    assert set(_order_owners(db, other_orders).values()) == {primary}
    assert [n["note_id"] for n in _ok(reader.get(f"/customers/{primary}/notes"))] == [
        note["note_id"]]
    assert db["customers"].find_one({"_id": primary})["first_name"] == merged_doc["first_name"]
    # The events: one customer.merged naming the merge, and the primary's new details.
    events.wait_for(lambda got: any(e["data"].get("merge_id") == merge_id
                                    for e in events.of_type("customer.merged")), timeout=20)
    [merged_event] = [e for e in events.of_type("customer.merged")
                      if e["data"]["merged_customer_id"] == other]
    assert merged_event["data"] == {"customer_id": primary, "merged_customer_id": other,
                                    "merge_id": merge_id, "kind": "manual"}
    events.wait_for(lambda got: any(e["data"]["customer_id"] == primary
                                    and "first_name" in e["data"]["changed_fields"]
                                    for e in events.of_type("customer.updated")), timeout=20)
    _problem(writer.post("/customers/merge", json={"primary_id": primary,
                                                   "merged_ids": [other]}), 409, "merged_ids")
    # Custom field values: the primary's own win, the merged record's fill the gaps, and the
    # list (segmentation's copy, from customer.updated) follows.
    assert "custom_fields" in merge["changed_fields"]
    assert db["customers"].find_one({"_id": primary})["custom_fields"] == {
        "tier": "gold", "visits": 3}
    wait_until(lambda: _listed_values(reader, primary) == {"tier": "gold", "visits": 3},
               timeout=20, message="the list shows the values the merge gave the primary")

    listed = _ok(reader.get("/merges", params={"customer_id": other}))
    assert [m["merge_id"] for m in listed["items"]] == [merge_id]
    assert _ok(reader.get(f"/merges/{merge_id}"))["snapshots"][other]["status"] == "active"

    answer = _ok(writer.post(f"/merges/{merge_id}/unmerge"))
    [restored] = answer["restored"]
    assert restored["customer_id"] == other and sorted(restored["orders_back"]) == other_orders
    assert restored["notes_back"] == 1 and restored["reminders_back"] == 1
    assert answer["fields_back"] == ["first_name", "custom_fields"]
    assert answer["orders_stayed"] == []
    _problem(writer.post(f"/merges/{merge_id}/unmerge"), 409, "merge_id")

    restored_doc = db["customers"].find_one({"_id": other})
    assert restored_doc["status"] == "active" and "merged_into" not in restored_doc
    assert set(_order_owners(db, other_orders).values()) == {other}
    assert [n["note_id"] for n in _ok(reader.get(f"/customers/{other}/notes"))] == [
        note["note_id"]]
    assert _ok(reader.get(f"/merges/{merge_id}"))["state"] == "unmerged"
    events.wait_for(lambda got: any(e["data"].get("merge_id") == merge_id
                                    for e in events.of_type("customer.unmerged")), timeout=20)
    [unmerged] = events.of_type("customer.unmerged")
    assert unmerged["data"] == {"customer_id": primary, "restored_customer_id": other,
                                "merge_id": merge_id, "orders_since": []}
    wait_until(lambda: any(e["data"]["customer_id"] == other
                           and e["occurred_at"] >= unmerged["occurred_at"]
                           for e in events.of_type("customer.updated")),
               timeout=20, message="the restored record's details published")
    assert db["customers"].find_one({"_id": primary})["custom_fields"] == {"tier": "gold"}
    assert restored_doc["custom_fields"] == {"tier": "silver", "visits": 3}
    wait_until(lambda: (_listed_values(reader, primary), _listed_values(reader, other)) == (
        {"tier": "gold"}, {"tier": "silver", "visits": 3}), timeout=20,
        message="the list shows each record's own values again")
    assert_driven(system, MERGE_ROUTES)


def _listed_values(reader, customer_id: str) -> dict | None:
    """A customer's custom field values as the customer list (segmentation) holds them."""
    rows = [r for r in _ok(reader.get("/customers", params={"limit": 100}))["items"]
            if r["customer_id"] == customer_id]
    return rows[0]["custom_fields"] if rows else None
