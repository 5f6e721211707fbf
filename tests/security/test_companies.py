"""Companies, attacked at customer_sync's and segmentation's RPC doors: hostile names, domains,
VAT ids, addresses, custom values and ids (operators, control characters, megabytes), another
store's company or customer, and oversized lists. Each is refused naming its field, with a
bounded answer, and nothing is stored."""
from __future__ import annotations

import json

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm.companies import Companies
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.segmentation import directory
from services.segmentation.company_stats import company_stats
from services.segmentation.repository import SegmentationStorage
from shared.errors import Conflict, NotFound, ValidationError
from tests import payloads

STORE, OTHER = "store-a", "store-b"
MEGA = "x" * 1_000_000
HOSTILE_IDS = ["co_" + "0" * 23, "co_" + "G" * 24, {"$ne": None}, ["co_" + "0" * 24], 7,
               "co_" + "0" * 24 + "\n", "../co_" + "0" * 24, MEGA, "", None]


@pytest.fixture
def world():
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    for store_id in (STORE, OTHER):
        storage.stores.save(Store(store_id, "http://127.0.0.1:9", "whsec-12345678", "ck", "cs"))
    sync = CustomerSync(storage)
    custom = CustomFields(storage, sync)
    companies = Companies(storage, sync, custom.company_definitions, sync.company_matching)
    sync.apply(STORE, "customer", "created", payloads.customer(42, "ada@acme.example"),
               correlation_id="c1")
    sync.apply(OTHER, "customer", "created", payloads.customer(43, "bob@acme.example"),
               correlation_id="c2")
    return storage, custom, companies


def stored(storage) -> tuple[int, list]:
    customers = sorted((d["_id"], d.get("company_id"), d["version"])
                       for d in storage.customers.collection.find())
    return storage.companies.collection.count_documents({}), customers


def bounded(error) -> None:
    assert len(str(error)) < 5_000
    assert len(json.dumps(error.details, default=str)) < 5_000


@pytest.mark.parametrize("data, field", [
    ({"name": MEGA}, "name"),
    ({"name": "Acme\x00"}, "name"),
    ({"name": "Acme\r\nBcc: x@evil.example"}, "name"),
    ({"name": ["Acme"]}, "name"),
    ({"name": {"$gt": ""}}, "name"),
    ({"name": "A", "domain": MEGA}, "domain"),
    ({"name": "A", "domain": "acme.example/../x"}, "domain"),
    ({"name": "A", "domain": ".*"}, "domain"),
    ({"name": "A", "domain": {"$regex": ".*"}}, "domain"),
    ({"name": "A", "domain": "acme.example\n"}, "domain"),
    ({"name": "A", "domain": "hotmail.com"}, "domain"),
    ({"name": "A", "domain": "proton.me"}, "domain"),
    ({"name": "A", "vat_id": MEGA}, "vat_id"),
    ({"name": "A", "vat_id": "DE<script>"}, "vat_id"),
    ({"name": "A", "vat_id": 123456789}, "vat_id"),
    ({"name": "A", "address": {"city": MEGA}}, "address"),
    ({"name": "A", "address": {"city": "Berlin\x00"}}, "address"),
    ({"name": "A", "address": {"$set": {"x": 1}}}, "address"),
    ({"name": "A", "address": "Berlin"}, "address"),
    ({"name": "A", "address": {"country": "D\x00"}}, "address"),
    ({"name": "A", "group": "../admin"}, "group"),
    ({"name": "A", "group": MEGA}, "group"),
    ({"name": "A", "custom_fields": {"$where": "1"}}, "custom_fields.$where"),
    ({"name": "A", "custom_fields": {MEGA: 1}}, None),
    ({"name": "A", "custom_fields": {f"k{i}": 1 for i in range(10_000)}}, None),
    ({"name": "A", "custom_fields": "all"}, "custom_fields"),
    ({"name": "A", "store_id": OTHER}, "store_id"),
    ({"name": "A", "_id": "co_" + "0" * 24}, "_id"),
    ({"name": "A", "version": 99}, "version"),
    ({"name": "A", "deleting": True}, "deleting"),
])
def test_a_hostile_company_is_refused_naming_its_field_and_nothing_is_stored(world, data,
                                                                             field):
    storage, _, companies = world
    before = stored(storage)
    with pytest.raises(ValidationError) as refused:
        companies.create(STORE, data, "alice")
    bounded(refused.value)
    if field is not None:
        assert field in refused.value.details["fields"]
    assert stored(storage) == before


def test_a_hostile_change_is_refused_and_the_company_stays_as_it_was(world):
    storage, _, companies = world
    made = companies.create(STORE, {"name": "Acme", "domain": "acme.example"}, "a").answer
    for changes in ({"name": MEGA}, {"domain": "gmail.com"}, {"company_id": "co_" + "1" * 24},
                    {"store_id": OTHER}, {"member_count": 0}, {"name": None}, [], "x", {}):
        with pytest.raises(ValidationError) as refused:
            companies.update(STORE, made["company_id"], changes, "a")
        bounded(refused.value)
    assert companies.get(STORE, made["company_id"]) == made


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_company_ids_are_refused_before_any_lookup(world, bad):
    storage, _, companies = world
    customer_id = storage.customers.by_woo_id(STORE, 42)["_id"]
    before = stored(storage)
    for call in (lambda: companies.get(STORE, bad),
                 lambda: companies.update(STORE, bad, {"name": "B"}, "a"),
                 lambda: companies.delete(STORE, bad, "a"),
                 lambda: companies.names(STORE, [bad])):
        with pytest.raises(ValidationError) as refused:
            call()
        bounded(refused.value)
    if bad is not None:  # None is "no company": a valid answer
        with pytest.raises(ValidationError):
            companies.set_customer_company(STORE, customer_id, bad, "a")
    assert stored(storage) == before


@pytest.mark.parametrize("bad", [{"$ne": None}, MEGA, "", None, ["x"], "c1\x00"])
def test_hostile_customer_ids_are_refused(world, bad):
    storage, _, companies = world
    company = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    before = stored(storage)
    with pytest.raises(ValidationError) as refused:
        companies.set_customer_company(STORE, bad, company, "a")
    bounded(refused.value)
    assert stored(storage) == before


def test_another_stores_company_and_customer_are_not_found_and_untouched(world):
    storage, _, companies = world
    ours = companies.create(STORE, {"name": "Ours"}, "a").answer["company_id"]
    theirs = companies.create(OTHER, {"name": "Theirs"}, "a").answer["company_id"]
    our_customer = storage.customers.by_woo_id(STORE, 42)["_id"]
    their_customer = storage.customers.by_woo_id(OTHER, 43)["_id"]
    before = stored(storage)
    for call in (lambda: companies.get(STORE, theirs),
                 lambda: companies.update(STORE, theirs, {"name": "Mine"}, "a"),
                 lambda: companies.delete(STORE, theirs, "a"),
                 lambda: companies.set_customer_company(STORE, our_customer, theirs, "a"),
                 lambda: companies.set_customer_company(STORE, their_customer, ours, "a"),
                 lambda: companies.set_customer_company(OTHER, our_customer, None, "a")):
        with pytest.raises(NotFound):
            call()
    assert stored(storage) == before
    assert companies.names(STORE, [ours, theirs]) == {ours: "Ours"}
    assert [c["company_id"] for c in companies.list(STORE)["items"]] == [ours]


def test_a_domain_taken_in_the_store_is_a_conflict_that_stores_nothing(world):
    storage, _, companies = world
    companies.create(STORE, {"name": "Acme", "domain": "acme.example"}, "a")
    before = stored(storage)
    with pytest.raises(Conflict) as taken:
        companies.create(STORE, {"name": "Copy", "domain": "acme.example"}, "a")
    assert taken.value.details["fields"] == {"domain": ["taken"]}
    assert stored(storage) == before


@pytest.mark.parametrize("filters, page", [
    ({"q": MEGA}, None), ({"q": {"$regex": ".*"}}, None), ({"q": "a\x00"}, None),
    ({"name": "x"}, None), ("q", None), (None, {"size": 101}), (None, {"size": 0}),
    (None, {"size": True}), (None, {"cursor": "not-ours"}), (None, {"cursor": MEGA}),
    (None, {"cursor": 5}), (None, {"skip": 10}),
])
def test_hostile_list_filters_and_pages_are_refused(world, filters, page):
    _, _, companies = world
    with pytest.raises(ValidationError) as refused:
        companies.list(STORE, filters, page)
    bounded(refused.value)


def test_a_search_text_is_matched_as_text_not_as_a_pattern(world):
    _, _, companies = world
    companies.create(STORE, {"name": "Acme"}, "a")
    assert companies.list(STORE, {"q": ".*"})["items"] == []
    assert companies.list(STORE, {"q": "(a+)+$"})["items"] == []


def test_company_names_takes_at_most_two_hundred_ids(world):
    _, _, companies = world
    with pytest.raises(ValidationError) as refused:
        companies.names(STORE, ["co_" + f"{n:024x}" for n in range(201)])
    bounded(refused.value)
    with pytest.raises(ValidationError):
        companies.names(STORE, "co_" + "0" * 24)


@pytest.mark.parametrize("settings", [{"match_email_domain": "true"},
                                      {"match_email_domain": 1},
                                      {"match_email_domain": True, "$set": {}},
                                      {MEGA: True}, None, []])
def test_hostile_matching_settings_are_refused_and_nothing_changes(world, settings):
    storage, _, companies = world
    with pytest.raises(ValidationError) as refused:
        companies.set_matching(STORE, settings, "a")
    bounded(refused.value)
    assert companies.get_matching(STORE) == {"match_email_domain": False}
    assert companies.matching.pending_sweep() is None


def test_a_definition_cannot_apply_to_anything_else(world):
    storage, custom, _ = world
    for bad in ("order", "Company", "", None, ["company"], MEGA):
        with pytest.raises(ValidationError) as refused:
            custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text",
                                  "applies_to": bad}, "a")
        assert "applies_to" in refused.value.details["fields"]
    assert custom.list(STORE) == []


# -- segmentation ------------------------------------------------------------------------------
@pytest.fixture
def profiles():
    storage = SegmentationStorage(mongomock_adapter.client()["segmentation"])
    storage.ensure_indexes()
    return storage.profiles


@pytest.mark.parametrize("bad", [["co_" + f"{n:024x}" for n in range(101)], [{"$ne": None}],
                                 ["co_" + "0" * 24 + "\n"], [MEGA], MEGA, None, {"$in": []}])
def test_company_stats_refuses_hostile_or_too_many_ids(profiles, bad):
    with pytest.raises(ValidationError) as refused:
        company_stats(profiles, STORE, bad)
    bounded(refused.value)


@pytest.mark.parametrize("bad", [{"$ne": None}, {"$regex": "."}, MEGA, "co_" + "0" * 24 + "\n",
                                 ["co_" + "0" * 24]])
def test_the_customer_list_refuses_a_hostile_company_filter(profiles, bad):
    with pytest.raises(ValidationError) as refused:
        directory.search_customers(profiles, STORE, {"company_id": bad})
    bounded(refused.value)
