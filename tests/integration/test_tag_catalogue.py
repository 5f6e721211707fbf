"""The tag catalogue over HTTP with every service on the real broker: listed with counts,
created with a description, renamed (every carrier follows and segmentation publishes their
untagging and tagging), deleted (taken off everyone, counted)."""
from __future__ import annotations

from tests.gateway_system import shop, system  # noqa: F401 - fixtures
from tests.support import wait_until


def test_tags_are_listed_created_renamed_and_deleted_across_customers(system, events):
    events.listen("segmentation")
    (_, first), (_, second) = system.shop_customer(orders=0), system.shop_customer(orders=0)
    writer, reader = system.client("write"), system.client("read")
    for customer_id in (first, second):
        assert writer.post(f"/customers/{customer_id}/tags",
                           json={"tags": ["gift"]}).status_code == 200
    made = writer.post("/tags", json={"tag": "wholesale", "description": "Trade buyers"})
    assert made.status_code == 201, made.text
    assert writer.post("/tags", json={"tag": "wholesale"}).status_code == 409
    refused = writer.post("/tags", json={"tag": "Not A Slug"})
    assert refused.status_code == 400 and "tag" in refused.json()["errors"]
    assert reader.post("/tags", json={"tag": "readers"}).status_code == 403
    assert [(t["tag"], t["customers"], t["description"]) for t in reader.get("/tags").json()] \
        == [("gift", 2, ""), ("wholesale", 0, "Trade buyers")]

    renamed = writer.patch("/tags/gift", json={"new_tag": "present",
                                               "description": "Bought for someone else"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {"tag": "present", "description": "Bought for someone else",
                              "customers": 2, "catalogued": True, "renamed": 2}
    page = reader.get(f"/customers/{first}").json()
    assert [t["tag"] for t in page["tags"]] == ["present"]
    published = events.wait_for(lambda got: len(
        [e for e in got if e["event_type"] in ("customer.tagged", "customer.untagged")
         and e["data"]["tag"] in ("gift", "present")]) >= 6, timeout=20)
    moved = sorted((e["event_type"], e["data"]["customer_id"]) for e in published
                   if e["data"].get("tag") == "present" or (
                       e["event_type"] == "customer.untagged" and e["data"].get("tag") == "gift"))
    assert moved == sorted([("customer.tagged", first), ("customer.tagged", second),
                            ("customer.untagged", first), ("customer.untagged", second)])
    wait_until(lambda: sorted(r["customer_id"] for r in reader.get(
        "/customers?tag=present").json()["items"]) == sorted([first, second]),
        message="the list filters on the new name")
    assert writer.patch("/tags/gift", json={"new_tag": "present"}).status_code == 404

    deleted = writer.delete("/tags/present")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "present",
                                                             "customers": 2}
    assert reader.get(f"/customers/{second}").json()["tags"] == []
    assert [t["tag"] for t in reader.get("/tags").json()] == ["wholesale"]
    assert writer.delete("/tags/present").status_code == 404
