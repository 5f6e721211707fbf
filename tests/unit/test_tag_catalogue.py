"""The tag catalogue on an in-memory MongoDB: listing with counts, create, rename and delete
through each profile's own write, publishing what tagging publishes."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from services.segmentation.tag_catalogue import TagCatalogue
from shared.errors import Conflict, NotFound, ValidationError
from shared.outbox import OUTBOX_FIELD
from tests.support import Clock

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
STORE = "s1"


@pytest.fixture
def setup(database):
    storage = SegmentationStorage(database)
    storage.ensure_indexes()
    profiles = Profiles(storage, clock=Clock(T0))
    return storage, profiles, TagCatalogue(storage, profiles, clock=Clock(T0))


def owed(storage, *types: str) -> list[tuple[str, str, str]]:
    out = []
    for doc in storage.profiles.collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
        out.extend(e["message"] for e in doc[OUTBOX_FIELD])
    return sorted((m["event_type"], m["data"]["customer_id"], m["data"]["tag"]) for m in out
                  if m["event_type"] in types)


def clear_outbox(storage) -> None:
    storage.profiles.collection.update_many({}, {"$set": {OUTBOX_FIELD: []}})


def tags_of(storage, customer_id: str) -> list[str]:
    return storage.profiles.get(STORE, customer_id)["tag_list"]


def test_the_list_joins_catalogued_and_carried_tags_with_counts(setup):
    storage, profiles, catalogue = setup
    profiles.set_tags(STORE, "c1", add=["gift", "vip-ish"])
    profiles.set_tags(STORE, "c2", add=["gift"])
    profiles.set_tags("s2", "c9", add=["elsewhere"])
    made = catalogue.create(STORE, "Wholesale", "Trade buyers", "alice")
    assert made == {"tag": "wholesale", "description": "Trade buyers", "customers": 0,
                    "catalogued": True}
    assert catalogue.list(STORE) == [
        {"tag": "gift", "description": "", "customers": 2, "catalogued": False},
        {"tag": "vip-ish", "description": "", "customers": 1, "catalogued": False},
        {"tag": "wholesale", "description": "Trade buyers", "customers": 0, "catalogued": True}]
    with pytest.raises(Conflict):
        catalogue.create(STORE, "wholesale", None, "bob")
    with pytest.raises(ValidationError) as refused:
        catalogue.create(STORE, "no spaces", None, "bob")
    assert "tag" in refused.value.args[1]["fields"]
    with pytest.raises(ValidationError) as refused:
        catalogue.create(STORE, "ok", "x" * 501, "bob")
    assert "description" in refused.value.args[1]["fields"]
    assert [t["tag"] for t in catalogue.list(STORE)] == ["gift", "vip-ish", "wholesale"]


def test_a_rename_moves_every_carrier_publishes_once_and_can_be_run_again(setup):
    storage, profiles, catalogue = setup
    for customer in ("c1", "c2"):
        profiles.set_tags(STORE, customer, add=["gift", "keep"])
    profiles.set_tags(STORE, "c3", add=["keep"])
    catalogue.describe(STORE, "gift", "Bought as a present")
    clear_outbox(storage)
    tag, change = catalogue.rename(STORE, "gift", "present", "alice")
    assert change.customers == 2
    assert tag == {"tag": "present", "description": "Bought as a present", "customers": 2,
                   "catalogued": True}
    assert tags_of(storage, "c1") == ["keep", "present"] and tags_of(storage, "c3") == ["keep"]
    assert owed(storage, "customer.tagged", "customer.untagged") == [
        ("customer.tagged", "c1", "present"), ("customer.tagged", "c2", "present"),
        ("customer.untagged", "c1", "gift"), ("customer.untagged", "c2", "gift")]
    assert [t["tag"] for t in catalogue.list(STORE)] == ["keep", "present"]
    with pytest.raises(NotFound):
        catalogue.rename(STORE, "gift", "present", "alice")  # done: nothing carries it
    _, again = catalogue.rename(STORE, "present", "present", "alice")
    assert again.customers == 0


def test_a_rename_onto_a_tag_already_carried_merges_them(setup):
    storage, profiles, catalogue = setup
    profiles.set_tags(STORE, "c1", add=["gift", "present"])
    profiles.set_tags(STORE, "c2", add=["gift"])
    clear_outbox(storage)
    _, change = catalogue.rename(STORE, "gift", "present", "alice")
    assert tags_of(storage, "c1") == ["present"] and tags_of(storage, "c2") == ["present"]
    assert owed(storage, "customer.tagged", "customer.untagged") == [
        ("customer.tagged", "c2", "present"),
        ("customer.untagged", "c1", "gift"), ("customer.untagged", "c2", "gift")]


def test_delete_takes_the_tag_off_everyone_and_says_how_many(setup):
    storage, profiles, catalogue = setup
    for customer in ("c1", "c2", "c3"):
        profiles.set_tags(STORE, customer, add=["spring"])
    profiles.set_tags("s2", "c1", add=["spring"])
    clear_outbox(storage)
    assert catalogue.delete(STORE, "spring", "alice").customers == 3
    assert owed(storage, "customer.untagged") == [
        ("customer.untagged", c, "spring") for c in ("c1", "c2", "c3")]
    assert catalogue.list(STORE) == []
    assert storage.profiles.get("s2", "c1")["tag_list"] == ["spring"]  # another store's
    with pytest.raises(NotFound):
        catalogue.delete(STORE, "spring", "alice")
    with pytest.raises(NotFound):
        catalogue.describe(STORE, "spring", "no such tag any more")
    assert catalogue.list(STORE) == []


def test_a_tag_a_rule_uses_is_not_renamed_or_deleted(setup):
    storage, profiles, catalogue = setup
    profiles.set_tags(STORE, "c1", add=["big-spender"])
    storage.rules.insert_one({"_id": f"{STORE}:r1", "store_id": STORE, "rule_id": "r1",
                              "enabled": True, "match": "all", "conditions": [
                                  {"field": "orders_count", "op": "gte", "value": 5}],
                              "actions": [{"type": "add_tag", "value": "big-spender"}]})
    for attempt in (lambda: catalogue.rename(STORE, "big-spender", "whale", "alice"),
                    lambda: catalogue.delete(STORE, "big-spender", "alice")):
        with pytest.raises(Conflict, match="r1"):
            attempt()
    assert tags_of(storage, "c1") == ["big-spender"]
