"""Companies without a broker: the pure rules of a company record, and the use cases (create,
update, list, delete, membership, matching by email domain, merge, erasure, deletion, company
custom fields) on an in-memory MongoDB with a pinned clock."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.core.merges import CustomerMerges
from services.customer_sync.core.queries import CustomerQueries
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.crm import companies as companies_module
from services.customer_sync.crm.companies import Companies
from services.customer_sync.crm.company_rules import (joins_by_domain, load_changes, load_company,
                                                      valid_company_id)
from services.customer_sync.crm.custom_fields import CustomFields
from services.customer_sync.privacy.deletion import CustomerDeletion
from services.customer_sync.privacy.erasure import CustomerErasure
from services.customer_sync.repository import CustomerSyncStorage, Store
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import parse_event
from shared.outbox import OUTBOX_FIELD
from tests import payloads
from tests.support import Clock

STORE = "s1"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


# -- rules -----------------------------------------------------------------------------------
def test_a_company_is_stored_trimmed_upper_cased_and_complete():
    loaded = load_company({"name": "  Acme GmbH ", "domain": "acme.example",
                           "vat_id": "de 123.456-789", "address": {"city": " Berlin ",
                                                                   "country": "de"}})
    assert loaded == {"name": "Acme GmbH", "domain": "acme.example", "vat_id": "DE123456789",
                      "address": {"address_1": "", "address_2": "", "city": "Berlin",
                                  "state": "", "postcode": "", "country": "DE"},
                      "custom_fields": {}, "group": None}
    assert load_company({"name": "Solo"})["address"]["country"] == ""


@pytest.mark.parametrize("data, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "A\x00B"}, "name"),
    ({"name": "A", "domain": "ACME.example"}, "domain"),
    ({"name": "A", "domain": "gmail.com"}, "domain"),
    ({"name": "A", "domain": "gmx.de"}, "domain"),
    ({"name": "A", "domain": "localhost"}, "domain"),
    ({"name": "A", "domain": "acme..example"}, "domain"),
    ({"name": "A", "vat_id": "123456789"}, "vat_id"),
    ({"name": "A", "vat_id": "DE1"}, "vat_id"),
    ({"name": "A", "vat_id": "DE12345678901234"}, "vat_id"),
    ({"name": "A", "address": {"country": "DEU"}}, "address"),
    ({"name": "A", "address": {"planet": "Mars"}}, "address"),
    ({"name": "A", "group": "Wholesale!"}, "group"),
    ({"name": "A", "company_id": "co_" + "0" * 24}, "company_id"),
    ({"name": "A", "member_count": 3}, "member_count"),
])
def test_a_bad_company_is_refused_naming_the_field(data, field):
    with pytest.raises(ValidationError) as refused:
        load_company(data)
    assert field in refused.value.details["fields"]


def test_a_change_names_something_and_null_clears():
    assert load_changes({"domain": None, "vat_id": None}) == {"domain": None, "vat_id": None}
    with pytest.raises(ValidationError):
        load_changes({})
    with pytest.raises(ValidationError) as refused:
        load_changes({"name": None})
    assert "name" in refused.value.details["fields"]


def test_company_ids_are_co_and_24_hex_digits():
    assert valid_company_id("co_" + "a1" * 12) == "co_" + "a1" * 12
    for bad in ("co_" + "A1" * 12, "co_123", "xx_" + "0" * 24, None, 7, "co_" + "0" * 24 + "\n"):
        with pytest.raises(ValidationError):
            valid_company_id(bad)


def test_only_a_live_customer_without_a_company_and_with_a_work_domain_joins():
    live = {"status": "active", "email": "Ada@Acme.Example"}
    assert joins_by_domain(live) == "acme.example"
    assert joins_by_domain({**live, "company_id": "co_" + "0" * 24}) is None
    assert joins_by_domain({**live, "status": "merged"}) is None
    assert joins_by_domain({**live, "email": "ada@gmail.com"}) is None
    assert joins_by_domain({**live, "email": ""}) is None


# -- use cases -------------------------------------------------------------------------------
@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    s.stores.save(Store(STORE, "http://127.0.0.1:9", "whsec-12345678", "ck", "cs"))
    s.stores.save(Store("s2", "http://127.0.0.1:9", "whsec-12345678", "ck", "cs"))
    return s


@pytest.fixture
def sync(storage):
    return CustomerSync(storage, Clock(NOW))


@pytest.fixture
def custom(storage, sync):
    return CustomFields(storage, sync, clock=Clock(NOW))


@pytest.fixture
def companies(storage, sync, custom):
    return Companies(storage, sync, custom.company_definitions, sync.company_matching,
                     clock=Clock(NOW))


def add_customer(sync, storage, woo_id: int, email: str, store_id: str = STORE) -> str:
    sync.apply(store_id, "customer", "created", payloads.customer(woo_id, email),
               correlation_id=f"c{woo_id}")
    doc = storage.customers.by_woo_id(store_id, woo_id)
    storage.customers.collection.update_one({"_id": doc["_id"]}, {"$set": {OUTBOX_FIELD: []}})
    return doc["_id"]


def owed(storage, customer_id: str) -> list:
    doc = storage.customers.collection.find_one({"_id": customer_id})
    return [parse_event(e["message"]) for e in doc[OUTBOX_FIELD]]


def company_entries(storage, customer_id: str) -> list[dict]:
    owed_entries = storage.customers.collection.find_one({"_id": customer_id}).get(
        "timeline_owed") or []
    return [e for e in owed_entries if e["kind"] == "customer.company_changed"]


def test_companies_are_made_shown_and_listed_by_name_then_id(companies):
    made = companies.create(STORE, {"name": "Zeta", "domain": "zeta.example"}, "alice").answer
    assert made["company_id"].startswith("co_") and made["member_count"] == 0
    assert (made["created_at"], made["created_by"], made["group"]) == (NOW.isoformat(),
                                                                       "alice", None)
    for name in ("acme", "Beta", "ACME"):
        companies.create(STORE, {"name": name}, "alice")
    assert companies.get(STORE, made["company_id"]) == made
    first = companies.list(STORE, None, {"size": 2})
    second = companies.list(STORE, None, {"size": 2, "cursor": first["next_cursor"]})
    names = [c["name"] for c in first["items"] + second["items"]]
    assert sorted(names[:2]) == ["ACME", "acme"] and names[2:] == ["Beta", "Zeta"]
    assert second["next_cursor"] is None
    assert [c["name"] for c in companies.list(STORE, {"q": "ZETA.ex"})["items"]] == ["Zeta"]
    assert companies.list("s2")["items"] == []
    with pytest.raises(NotFound):
        companies.get("s2", made["company_id"])


def test_a_domain_is_taken_once_a_store_and_null_frees_it(companies):
    first = companies.create(STORE, {"name": "Acme", "domain": "acme.example"}, "a").answer
    with pytest.raises(Conflict) as taken:
        companies.create(STORE, {"name": "Acme 2", "domain": "acme.example"}, "a")
    assert taken.value.details["fields"] == {"domain": ["taken"]}
    other = companies.create(STORE, {"name": "Other"}, "a").answer
    with pytest.raises(Conflict):
        companies.update(STORE, other["company_id"], {"domain": "acme.example"}, "a")
    companies.create("s2", {"name": "Acme", "domain": "acme.example"}, "a")  # another store
    cleared = companies.update(STORE, first["company_id"], {"domain": None, "name": "Acme AG"},
                               "bob").answer
    assert (cleared["domain"], cleared["name"], cleared["updated_by"]) == (None, "Acme AG", "bob")
    companies.update(STORE, other["company_id"], {"domain": "acme.example"}, "a")


def test_a_store_has_a_bounded_number_of_companies(companies, monkeypatch):
    monkeypatch.setattr(companies_module, "MAX_COMPANIES", 3)
    for n in range(3):
        companies.create(STORE, {"name": f"C{n}"}, "a")
    with pytest.raises(ValidationError):
        companies.create(STORE, {"name": "one more"}, "a")
    assert companies.storage.companies.count(STORE) == 3


def test_joining_a_company_is_published_with_a_timeline_entry(storage, sync, companies):
    customer_id = add_customer(sync, storage, 42, "ada@example.com")
    company = companies.create(STORE, {"name": "Acme"}, "alice").answer
    result = companies.set_customer_company(STORE, customer_id, company["company_id"], "alice")
    assert result.answer == {"customer_id": customer_id, "company_id": company["company_id"],
                             "changed": True}
    assert result.touched == (("customers", customer_id),)
    [event] = owed(storage, customer_id)
    assert event.event_type == "customer.updated"
    assert (event.data["company_id"], event.data["changed_fields"]) == (company["company_id"],
                                                                        ["company_id"])
    [entry] = company_entries(storage, customer_id)
    assert (entry["kind"], entry["summary"]) == ("customer.company_changed", "Joined company Acme")
    assert CustomerQueries(storage).get_customer(STORE, customer_id)["company_id"] == \
        company["company_id"]
    assert companies.get(STORE, company["company_id"])["member_count"] == 1
    again = companies.set_customer_company(STORE, customer_id, company["company_id"], "alice")
    assert again.answer["changed"] is False and len(owed(storage, customer_id)) == 1
    left = companies.set_customer_company(STORE, customer_id, None, "alice")
    assert left.answer == {"customer_id": customer_id, "company_id": None, "changed": True}
    assert owed(storage, customer_id)[-1].data["company_id"] is None


def test_unknown_or_other_stores_customers_and_companies_are_not_found(storage, sync, companies):
    customer_id = add_customer(sync, storage, 42, "ada@example.com")
    theirs = companies.create("s2", {"name": "Theirs"}, "a").answer["company_id"]
    other_customer = add_customer(sync, storage, 43, "bob@example.com", store_id="s2")
    with pytest.raises(NotFound) as company:
        companies.set_customer_company(STORE, customer_id, theirs, "a")
    assert company.value.details["fields"] == {"company_id": ["not found"]}
    ours = companies.create(STORE, {"name": "Ours"}, "a").answer["company_id"]
    with pytest.raises(NotFound) as customer:
        companies.set_customer_company(STORE, other_customer, ours, "a")
    assert customer.value.details["fields"] == {"customer_id": ["not found"]}
    assert storage.customers.get(STORE, customer_id).get("company_id") is None
    assert companies.names(STORE, [ours, theirs, "co_" + "f" * 24]) == {ours: "Ours"}


def test_deleting_a_company_releases_every_member_each_with_its_event(storage, sync, companies,
                                                                      monkeypatch):
    monkeypatch.setattr(companies_module, "RELEASE_BATCH", 2)
    company = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    members = [add_customer(sync, storage, 40 + n, f"p{n}@example.com") for n in range(5)]
    for customer_id in members:
        companies.set_customer_company(STORE, customer_id, company, "a")
        storage.customers.collection.update_one({"_id": customer_id},
                                                {"$set": {OUTBOX_FIELD: []}})
    result = companies.delete(STORE, company, "bob")
    assert result.answer == {"company_id": company, "deleted": True, "members_released": 5}
    assert sorted(ref[1] for ref in result.touched) == sorted(members)
    for customer_id in members:
        [event] = owed(storage, customer_id)
        assert (event.data["company_id"], event.data["changed_fields"]) == (None, ["company_id"])
        assert storage.customers.get(STORE, customer_id)["company_id"] is None
    with pytest.raises(NotFound):
        companies.get(STORE, company)
    with pytest.raises(NotFound):
        companies.delete(STORE, company, "bob")


def test_a_deletion_cut_short_is_finished_by_a_repeat_or_the_sweep(storage, sync, companies,
                                                                   monkeypatch):
    company = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    members = [add_customer(sync, storage, 40 + n, f"p{n}@example.com") for n in range(3)]
    for customer_id in members:
        companies.set_customer_company(STORE, customer_id, company, "a")
    real_write = Companies._write_company
    calls = []

    def crash_after_one(self, *args, **kwargs):
        if calls:
            raise RuntimeError("the process died")
        calls.append(1)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Companies, "_write_company", crash_after_one)
    with pytest.raises(RuntimeError):
        companies.delete(STORE, company, "bob")
    monkeypatch.setattr(Companies, "_write_company", real_write)
    # Being deleted: nobody joins it, nobody sees it, and its members leave.
    with pytest.raises(NotFound):
        companies.get(STORE, company)
    newcomer = add_customer(sync, storage, 50, "new@example.com")
    with pytest.raises(NotFound):
        companies.set_customer_company(STORE, newcomer, company, "a")
    more, touched = companies.sweep()
    assert more is True and len(touched) == 2
    assert storage.companies.get(STORE, company) is None
    assert storage.customers.collection.count_documents({"company_id": company}) == 0
    assert companies.sweep() == (False, [])


def test_an_erasure_and_a_staff_deletion_clear_the_company(storage, sync, companies):
    company = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    erased = add_customer(sync, storage, 42, "ada@example.com")
    deleted_id = CustomerImport(storage, sync).run(
        STORE, [{"line": 2, "email": "guest@example.com"}], True, "a").answer["rows"][0][
        "customer_id"]
    for customer_id in (erased, deleted_id):
        companies.set_customer_company(STORE, customer_id, company, "a")
    CustomerErasure(storage).erase(STORE, [erased], "ada@example.com", "req-1")
    no_shop = SimpleNamespace(close=lambda: None)  # a guest is deleted here only
    CustomerDeletion(storage, sync, lambda store: no_shop).delete(STORE, [deleted_id],
                                                               "anonymise", "a")
    assert "company_id" not in storage.customers.collection.find_one({"_id": erased})
    assert "company_id" not in storage.customers.collection.find_one({"_id": deleted_id})
    assert companies.get(STORE, company)["member_count"] == 0


def test_a_merge_keeps_the_primarys_company_or_takes_one_and_an_unmerge_gives_it_back(
        storage, sync, companies):
    acme = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    beta = companies.create(STORE, {"name": "Beta"}, "a").answer["company_id"]
    primary = add_customer(sync, storage, 42, "ada@example.com")
    merged = add_customer(sync, storage, 43, "ada.l@example.com")
    other = add_customer(sync, storage, 44, "ada.x@example.com")
    companies.set_customer_company(STORE, merged, acme, "a")
    merges = CustomerMerges(storage, sync, Clock(NOW))
    done = merges.merge_customers(STORE, primary, [merged], {}, "alice").answer
    assert storage.customers.get(STORE, primary)["company_id"] == acme
    updated = [e for e in owed(storage, primary) if e.event_type == "customer.updated"]
    assert updated[-1].data["company_id"] == acme and "company_id" in \
        updated[-1].data["changed_fields"]
    merges.unmerge(STORE, done["merge_id"], "alice")
    assert storage.customers.get(STORE, primary).get("company_id") is None
    assert storage.customers.get(STORE, merged)["company_id"] == acme
    # A primary with a company keeps it.
    companies.set_customer_company(STORE, primary, beta, "a")
    companies.set_customer_company(STORE, other, acme, "a")
    merges.merge_customers(STORE, primary, [other], {}, "alice")
    assert storage.customers.get(STORE, primary)["company_id"] == beta


# -- matching by email domain ------------------------------------------------------------------
def test_matching_is_off_by_default_and_a_new_customer_then_joins_nothing(storage, sync,
                                                                          companies):
    companies.create(STORE, {"name": "Acme", "domain": "acme.example"}, "a")
    assert companies.get_matching(STORE) == {"match_email_domain": False}
    customer_id = add_customer(sync, storage, 42, "ada@acme.example")
    assert storage.customers.get(STORE, customer_id).get("company_id") is None


def test_with_matching_on_a_new_or_changed_customer_joins_in_the_same_write(storage, sync,
                                                                           companies):
    acme = companies.create(STORE, {"name": "Acme", "domain": "acme.example"}, "a").answer
    assert companies.set_matching(STORE, {"match_email_domain": True}, "a") == \
        {"match_email_domain": True}
    sync.apply(STORE, "customer", "created", payloads.customer(42, "Ada@ACME.example"),
               correlation_id="c1")
    doc = storage.customers.by_woo_id(STORE, 42)
    assert doc["company_id"] == acme["company_id"]
    [created] = owed(storage, doc["_id"])
    assert (created.event_type, created.data["company_id"]) == ("customer.created",
                                                                acme["company_id"])
    # A registered customer's new email at the company's domain: joins with the change.
    sync.apply(STORE, "customer", "created", payloads.customer(43, "bob@elsewhere.example"),
               correlation_id="c2")
    bob = storage.customers.by_woo_id(STORE, 43)
    assert bob.get("company_id") is None
    storage.customers.collection.update_one({"_id": bob["_id"]}, {"$set": {OUTBOX_FIELD: []}})
    sync.apply(STORE, "customer", "updated", payloads.customer(
        43, "bob@acme.example", modified="2026-03-05T10:00:00"), correlation_id="c3")
    assert storage.customers.get(STORE, bob["_id"])["company_id"] == acme["company_id"]
    [changed] = owed(storage, bob["_id"])
    assert "company_id" in changed.data["changed_fields"]
    # A guest met through an order, and an imported contact, join too.
    sync.apply(STORE, "order", "created", payloads.order(2001, 0, email="carl@acme.example"),
               correlation_id="c4")
    guest = storage.customers.by_email(STORE, "carl@acme.example")
    assert guest["company_id"] == acme["company_id"]
    row = CustomerImport(storage, sync).run(STORE, [{"line": 2, "email": "dora@acme.example"}],
                                            True, "a").answer["rows"][0]
    assert storage.customers.get(STORE, row["customer_id"])["company_id"] == acme["company_id"]


def test_turning_matching_on_sweeps_the_customers_already_there_in_batches(storage, sync,
                                                                           companies):
    acme = companies.create(STORE, {"name": "Acme", "domain": "acme.example"}, "a").answer
    beta = companies.create(STORE, {"name": "Beta"}, "a").answer
    ids = [add_customer(sync, storage, 40 + n, f"p{n}@acme.example") for n in range(5)]
    free = add_customer(sync, storage, 60, "someone@gmail.com")
    kept = add_customer(sync, storage, 61, "kept@acme.example")
    companies.set_customer_company(STORE, kept, beta["company_id"], "a")
    assert companies.sweep() == (False, [])  # nothing asked for
    companies.set_matching(STORE, {"match_email_domain": True}, "a")
    joined = []
    for _ in range(10):
        more, touched = companies.sweep(batch=2)
        joined += [ref[1] for ref in touched]
        if not more:
            break
    assert sorted(joined) == sorted(ids)
    for customer_id in ids:
        assert storage.customers.get(STORE, customer_id)["company_id"] == acme["company_id"]
        [event] = owed(storage, customer_id)
        assert event.data["changed_fields"] == ["company_id"]
    assert storage.customers.get(STORE, free).get("company_id") is None
    assert storage.customers.get(STORE, kept)["company_id"] == beta["company_id"]
    # Turning it on again while on asks for no new sweep; a new domain does.
    companies.set_matching(STORE, {"match_email_domain": True}, "a")
    assert companies.matching.pending_sweep() is None
    companies.update(STORE, beta["company_id"], {"domain": "beta.example"}, "a")
    assert companies.matching.pending_sweep()["_id"] == STORE


def test_matching_settings_are_checked_and_need_a_known_store(companies):
    for bad in ({"match_email_domain": "yes"}, {}, {"match_email_domain": True, "x": 1}, []):
        with pytest.raises(ValidationError):
            companies.set_matching(STORE, bad, "a")
    with pytest.raises(NotFound):
        companies.set_matching("nowhere", {"match_email_domain": True}, "a")
    assert companies.get_matching(STORE) == {"match_email_domain": False}


# -- company custom fields ---------------------------------------------------------------------
def test_company_values_are_checked_against_company_fields_only(storage, sync, custom,
                                                                companies):
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "choice",
                          "options": ["gold"], "applies_to": "company"}, "a")
    custom.create(STORE, {"key": "tea", "label": "Tea", "type": "text"}, "a")
    assert {d["key"]: d["applies_to"] for d in custom.list(STORE)} == {"tier": "company",
                                                                        "tea": "customer"}
    made = companies.create(STORE, {"name": "Acme", "custom_fields": {"tier": "gold"}},
                            "a").answer
    assert made["custom_fields"] == {"tier": "gold"}
    with pytest.raises(ValidationError) as refused:
        companies.create(STORE, {"name": "B", "custom_fields": {"tea": "assam"}}, "a")
    assert "custom_fields.tea" in refused.value.details["fields"]
    with pytest.raises(ValidationError):
        companies.update(STORE, made["company_id"], {"custom_fields": {"tier": "silver"}}, "a")
    customer_id = add_customer(sync, storage, 42, "ada@example.com")
    with pytest.raises(ValidationError):
        custom.set_values(STORE, customer_id, {"tier": "gold"}, "a")
    custom.set_values(STORE, customer_id, {"tea": "assam"}, "a")
    with pytest.raises(ValidationError):  # fixed once made
        custom.update(STORE, "tea", {"applies_to": "company"}, "a")


def test_a_guest_merged_by_the_shops_email_hands_its_company_to_a_record_without_one(
        storage, sync, companies):
    acme = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    registered = add_customer(sync, storage, 42, "ada@example.com")
    sync.apply(STORE, "order", "created", payloads.order(2001, 0, email="ada.work@example.com"),
               correlation_id="o1")
    guest = storage.customers.by_email(STORE, "ada.work@example.com")["_id"]
    companies.set_customer_company(STORE, guest, acme, "a")
    sync.apply(STORE, "customer", "updated", payloads.customer(
        42, "ada.work@example.com", modified="2026-03-05T10:00:00"), correlation_id="c2")
    primary = storage.customers.get(STORE, registered)
    assert primary["company_id"] == acme
    assert storage.customers.get(STORE, guest)["status"] == "merged"
    [updated] = [e for e in owed(storage, registered) if e.event_type == "customer.updated"]
    assert updated.data["company_id"] == acme and "company_id" in updated.data["changed_fields"]
    [record] = storage.merges.collection.find({"primary_id": registered})
    CustomerMerges(storage, sync, Clock(NOW)).unmerge(STORE, record["_id"], "alice")
    assert storage.customers.get(STORE, registered).get("company_id") is None
    assert storage.customers.get(STORE, guest)["company_id"] == acme


def test_registering_the_store_again_keeps_its_matching_option(storage, companies):
    companies.set_matching(STORE, {"match_email_domain": True}, "a")
    storage.stores.save(Store(STORE, "http://127.0.0.1:9", "whsec-87654321", "ck", "cs"))
    storage.stores.forget_cached(STORE)
    assert companies.get_matching(STORE) == {"match_email_domain": True}
    assert companies.matching.enabled(STORE) is True


def test_a_deletion_that_gave_up_on_changing_members_says_it_is_finishing(storage, sync,
                                                                         companies, monkeypatch):
    company = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    member = add_customer(sync, storage, 42, "ada@example.com")
    companies.set_customer_company(STORE, member, company, "a")
    monkeypatch.setattr(Companies, "_write_company", lambda self, *a, **k: False)
    answer = companies.delete(STORE, company, "bob").answer
    assert answer == {"company_id": company, "deleted": False, "finishing": True,
                      "members_released": 0}
    assert storage.companies.get(STORE, company)["deleting"] is True
    assert companies.sweep() == (False, [])  # no progress: the sweep waits a round, not spins
    monkeypatch.undo()
    more, touched = companies.sweep()
    assert more is True and touched == [("customers", member)]
    assert storage.companies.get(STORE, company) is None


def test_a_join_racing_the_companys_deletion_is_undone(storage, sync, companies, monkeypatch):
    customer_id = add_customer(sync, storage, 42, "ada@example.com")
    company = companies.create(STORE, {"name": "Acme"}, "a").answer["company_id"]
    real_live = storage.companies.live

    def deleted_meanwhile(store_id, company_id):
        found = real_live(store_id, company_id)
        monkeypatch.setattr(storage.companies, "live", real_live)
        companies.delete(STORE, company, "bob")  # another request, between read and write
        return found

    monkeypatch.setattr(storage.companies, "live", deleted_meanwhile)
    with pytest.raises(NotFound):
        companies.set_customer_company(STORE, customer_id, company, "a")
    assert storage.customers.get(STORE, customer_id).get("company_id") is None
    joined, left = owed(storage, customer_id)
    assert (joined.data["company_id"], left.data["company_id"]) == (company, None)
    assert [e["summary"] for e in company_entries(storage, customer_id)][-1] == (
        "Left company (the company was deleted)")


def test_a_customer_joined_by_domain_as_the_company_went_is_released_by_the_sweep(
        storage, sync, companies, monkeypatch):
    acme = companies.create(STORE, {"name": "Acme", "domain": "acme.example"},
                            "a").answer["company_id"]
    companies.set_matching(STORE, {"match_email_domain": True}, "a")
    while companies.sweep()[0]:
        pass
    real_by_domains = storage.companies.by_domains

    def deleted_meanwhile(store_id, domains):
        found = real_by_domains(store_id, domains)
        monkeypatch.setattr(storage.companies, "by_domains", real_by_domains)
        companies.delete(STORE, acme, "bob")  # between the webhook's read and its write
        return found

    monkeypatch.setattr(storage.companies, "by_domains", deleted_meanwhile)
    sync.apply(STORE, "customer", "created", payloads.customer(42, "ada@acme.example"),
               correlation_id="c1")
    ada = storage.customers.by_woo_id(STORE, 42)
    assert ada["company_id"] == acme and storage.companies.get(STORE, acme) is None
    storage.customers.collection.update_one({"_id": ada["_id"]}, {"$set": {OUTBOX_FIELD: []}})
    more, touched = companies.sweep()
    assert more is True and touched == [("customers", ada["_id"])]
    assert storage.customers.get(STORE, ada["_id"])["company_id"] is None
    [left] = owed(storage, ada["_id"])
    assert (left.data["company_id"], left.data["changed_fields"]) == (None, ["company_id"])
    assert companies.sweep() == (False, [])


def test_deleting_a_company_field_takes_its_values_off_the_companies(storage, custom, companies):
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text",
                          "applies_to": "company"}, "a")
    made = companies.create(STORE, {"name": "Acme", "custom_fields": {"tier": "gold"}},
                            "a").answer
    # The type guard counts the companies' values too.
    with pytest.raises(Conflict) as refused:
        custom.update(STORE, "tier", {"type": "number"}, "a")
    assert refused.value.details["fields"] == {"type": ["values exist"]}
    answer = custom.delete(STORE, "tier", "a").answer
    assert answer == {"key": "tier", "deleted": True, "values_removed": 1}
    company = storage.companies.get(STORE, made["company_id"])
    assert company["custom_fields"] == {} and company["version"] == 2
    custom.create(STORE, {"key": "tier", "label": "Tier", "type": "text",
                          "applies_to": "company"}, "a")
    assert custom.update(STORE, "tier", {"type": "number"}, "a")["type"] == "number"
