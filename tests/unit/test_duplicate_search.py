"""Possible duplicates of a store's customers, on an in-memory MongoDB: keys written with every
change of a customer, older customers given theirs in batches, groups scored and paged."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.core.duplicate_search import DuplicateSearch
from services.customer_sync.core.duplicates import EMAIL, NAME_POSTCODE, PHONE, hashed_key
from services.customer_sync.core.stores import StoreAdmin
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.privacy.erasure import CustomerErasure
from services.customer_sync.repository import CustomerSyncStorage, Store
from shared.errors import ValidationError
from shared.paging import decode_cursor, encode_cursor
from tests import payloads
from tests.support import Clock

STORE, OTHER = "s1", "s2"


@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    for store_id in (STORE, OTHER):
        s.stores.save(Store(store_id, "https://shop.example/", "whsec-12345678", "ck", "cs",
                            country="DE"))
    return s


@pytest.fixture
def search(storage):
    return DuplicateSearch(storage)


def add(storage, customer_id: str, store_id: str = STORE, status: str = "active", **fields):
    """A customer document as customer_sync writes them (through the repository)."""
    billing = {"first_name": fields.get("first_name", ""), "last_name": fields.get("last_name", ""),
               "postcode": fields.pop("postcode", ""), "country": fields.pop("country", ""),
               "phone": fields.get("phone", "")}
    doc = {"_id": customer_id, "store_id": store_id, "status": status, "registered": False,
           "email": "", "first_name": "", "last_name": "", "phone": "", "billing": billing,
           "date_created": datetime(2026, 1, 1, tzinfo=timezone.utc), **fields}
    assert storage.customers.insert(doc, [])


def test_keys_are_written_with_webhook_customers_and_orders(storage):
    sync = CustomerSync(storage)
    sync.apply(STORE, "customer", "created",
               payloads.customer(42, "Ada@Example.com",
                                 billing=payloads.address("Ada@Example.com", phone="030 1234567",
                                                          country="DE", postcode="10115")),
               correlation_id="c1")
    doc = storage.customers.by_woo_id(STORE, 42)
    assert doc["match_keys"] == {EMAIL: hashed_key(EMAIL, "ada@example.com"),
                                 PHONE: hashed_key(PHONE, "+49301234567"),
                                 NAME_POSTCODE: hashed_key(NAME_POSTCODE, "DE|10115|ada lovelace")}
    # The shop changes the phone: the keys follow.
    sync.apply(STORE, "customer", "updated",
               payloads.customer(42, "Ada@Example.com", modified="2026-03-05T10:00:00",
                                 billing=payloads.address("Ada@Example.com", phone="+33 6 12 34 56 78",
                                                          country="DE", postcode="10115")),
               correlation_id="c2")
    assert storage.customers.by_woo_id(STORE, 42)["match_keys"][PHONE] == \
        hashed_key(PHONE, "+33612345678")
    # A guest's first order creates it with its keys too.
    sync.apply(STORE, "order", "created",
               payloads.order(7001, 0, email="guest@example.com",
                              billing=payloads.address("guest@example.com", phone="0301234567",
                                                       country="", postcode="")),
               correlation_id="c3")
    guest = storage.customers.guest_by_email(STORE, "guest@example.com")
    assert guest["match_keys"][PHONE] == hashed_key(PHONE, "+49301234567")  # the store's country


class _CountingCustomers:
    """The customers collection, counting what goes through it: `rereads`, the documents read
    back by id and version; `read`, the documents its finds and aggregations go through."""

    def __init__(self, collection) -> None:
        self._collection, self.rereads, self.read = collection, 0, 0

    def find_one(self, query=None, *args, **kwargs):
        if isinstance(query, dict) and set(query) == {"_id", "version"}:
            self.rereads += 1
        return self._collection.find_one(query, *args, **kwargs)

    def find(self, *args, **kwargs):
        return _CountedCursor(self, self._collection.find(*args, **kwargs))

    def aggregate(self, pipeline, *args, **kwargs):
        """An aggregation reads all that its first $match selects, before grouping it."""
        if pipeline and "$match" in pipeline[0]:
            self.read += self._collection.count_documents(pipeline[0]["$match"])
        return self._collection.aggregate(pipeline, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._collection, name)


class _CountedCursor:
    """A cursor of `_CountingCustomers`, counting each document as it is read."""

    def __init__(self, counter: _CountingCustomers, cursor) -> None:
        self.counter, self.cursor = counter, cursor

    def sort(self, *a, **k):
        return _CountedCursor(self.counter, self.cursor.sort(*a, **k))

    def batch_size(self, *a, **k):
        return _CountedCursor(self.counter, self.cursor.batch_size(*a, **k))

    def limit(self, *a, **k):
        return _CountedCursor(self.counter, self.cursor.limit(*a, **k))

    def __iter__(self):
        for doc in self.cursor:
            self.counter.read += 1
            yield doc


def test_webhook_contact_changes_keep_their_keys_without_reading_the_customer_again(storage):
    sync = CustomerSync(storage)
    sync.apply(STORE, "customer", "created",
               payloads.customer(42, "ada@example.com",
                                 billing=payloads.address("ada@example.com", phone="030 1234567",
                                                          country="DE", postcode="10115")),
               correlation_id="c1")
    counting = _CountingCustomers(storage.customers.collection)
    storage.customers.collection = counting
    sync.apply(STORE, "customer", "updated",
               payloads.customer(42, "ada@example.com", modified="2026-03-05T10:00:00",
                                 billing=payloads.address("ada@example.com", phone="030 7654321",
                                                          country="DE", postcode="10115")),
               correlation_id="c2")
    sync.apply(STORE, "order", "created",
               payloads.order(7001, 0, email="guest@example.com",
                              billing=payloads.address("guest@example.com", phone="0301111111",
                                                       country="DE")),
               correlation_id="c3")
    sync.apply(STORE, "order", "created",
               payloads.order(7002, 0, email="guest@example.com",
                              billing=payloads.address("guest@example.com", phone="0302222222",
                                                       country="DE"),
                              date_created_gmt="2026-03-09T09:00:00"),
               correlation_id="c4")
    assert counting.rereads == 0
    assert storage.customers.by_woo_id(STORE, 42)["match_keys"][PHONE] == \
        hashed_key(PHONE, "+49307654321")
    assert storage.customers.guest_by_email(STORE, "guest@example.com")["match_keys"][PHONE] == \
        hashed_key(PHONE, "+49302222222")


def test_older_customers_get_their_keys_in_batches(storage):
    clock = Clock(datetime(2026, 5, 1, tzinfo=timezone.utc))
    search = DuplicateSearch(storage, clock)
    for i in range(7):
        storage.customers.collection.insert_one(
            {"_id": f"old{i}", "store_id": STORE, "status": "active", "version": 1,
             "email": "same@example.com"})
    storage.customers.collection.insert_one(
        {"_id": "gone", "store_id": STORE, "status": "erased", "version": 1})
    assert search.find(STORE)["groups"] == []
    assert search.add_missing_keys(batch=5) is True        # some may be left
    assert search.add_missing_keys(batch=5) is False       # two were left: the pass is over
    assert storage.customers.count_missing_match_keys() == 0
    assert "match_keys" not in storage.customers.collection.find_one({"_id": "gone"})
    [group] = search.find(STORE)["groups"]
    assert [c["customer_id"] for c in group["customers"]] == [f"old{i}" for i in range(7)]
    # Every write gives keys: the collection is looked through again only an hour later, for
    # what an instance of an older version may have written meanwhile.
    storage.customers.collection.insert_one(
        {"_id": "written-by-an-older-instance", "store_id": STORE, "status": "active",
         "version": 1})
    assert search.add_missing_keys(batch=5) is False
    assert storage.customers.count_missing_match_keys() == 1
    clock.now += timedelta(hours=1)
    assert search.add_missing_keys(batch=5) is False
    assert storage.customers.count_missing_match_keys() == 0


def test_a_pass_moves_forward_and_never_reads_a_customer_twice(storage, monkeypatch):
    for i in range(12):
        storage.customers.collection.insert_one(
            {"_id": f"old{i:02d}", "store_id": STORE, "status": "active", "version": 1})
    looked_after = []
    add_keys = storage.customers.add_missing_match_keys

    def recorded(after_id, limit=500):
        looked_after.append(after_id)
        return add_keys(after_id, limit)

    monkeypatch.setattr(storage.customers, "add_missing_match_keys", recorded)
    search = DuplicateSearch(storage)
    while search.add_missing_keys(batch=5):
        pass
    assert looked_after == [None, "old04", "old09"]
    assert storage.customers.count_missing_match_keys() == 0


def test_a_record_no_longer_live_keeps_no_keys(storage, search):
    add(storage, "a", email="x@example.com")
    add(storage, "b", email="x@example.com")
    doc = storage.customers.get(STORE, "b")
    assert storage.customers.update("b", doc["version"], {"status": "deleted"})
    assert storage.customers.get(STORE, "b")["match_keys"] == {}
    add(storage, "c", status="merged", email="x@example.com")
    assert storage.customers.get(STORE, "c")["match_keys"] == {}
    assert search.find(STORE)["groups"] == []


def test_a_guest_merged_into_a_registered_customer_loses_its_keys(storage, search):
    """The guest who ordered first and the registered customer who later takes their email
    are one person once merged: the retired guest is no candidate."""
    sync = CustomerSync(storage)
    sync.apply(STORE, "order", "created", payloads.order(1, customer_id=0), correlation_id="c1")
    guest_id = storage.orders.get(STORE, "1")["customer_id"]
    assert storage.customers.get(STORE, guest_id)["match_keys"]
    sync.apply(STORE, "customer", "created", payloads.customer(email="ada@other.example"),
               correlation_id="c2")
    sync.apply(STORE, "customer", "updated", payloads.customer(modified="2026-03-01T11:00:00"),
               correlation_id="c3")
    guest = storage.customers.get(STORE, guest_id)
    assert guest["status"] == "merged" and not guest.get("match_keys")
    assert search.find(STORE)["groups"] == []


def test_groups_say_what_matched_and_are_scored(storage, search):
    # a and b: the same email (case differs) and the same phone in two notations.
    add(storage, "a", email="Kim@Example.com", phone="+49 30 1234567", registered=True)
    add(storage, "b", email="kim@example.com ", phone="030 1234567", country="DE")
    # c and d: the same phone only; e and f: the same name and postcode only.
    add(storage, "c", email="c@example.com", phone="+44 7700 900123")
    add(storage, "d", email="d@example.com", phone="07700 900123", country="GB")
    add(storage, "e", first_name="Jo", last_name="Bloggs", postcode="n1 9gu", country="GB")
    add(storage, "f", first_name="JO ", last_name="bloggs", postcode="N19GU", country="GB")
    # Not candidates: another store's, and records no longer live.
    add(storage, "g", store_id=OTHER, email="kim@example.com")
    add(storage, "h", status="merged", email="kim@example.com")
    add(storage, "i", status="deleted", phone="+447700900123")

    groups = search.find(STORE)["groups"]
    assert [(g["match"], g["matched"], g["score"], [c["customer_id"] for c in g["customers"]])
            for g in groups] == [
        (EMAIL, [EMAIL, PHONE], 105, ["a", "b"]),
        (PHONE, [PHONE], 80, ["c", "d"]),
        (NAME_POSTCODE, [NAME_POSTCODE], 60, ["e", "f"]),
    ]
    a = groups[0]["customers"][0]
    assert a == {"customer_id": "a", "kind": "registered", "first_name": "", "last_name": "",
                 "email": "Kim@Example.com", "phone": "+49 30 1234567", "postcode": "",
                 "country": "", "orders_count": 0, "date_created": "2026-01-01T00:00:00+00:00"}
    assert groups[0]["customers"][1]["kind"] == "guest"
    # The phone group of a and b is the email group: listed once, unless phones are asked for.
    by_phone = search.find(STORE, match=PHONE)["groups"]
    assert [[c["customer_id"] for c in g["customers"]] for g in by_phone] == [["a", "b"], ["c", "d"]] \
        or [[c["customer_id"] for c in g["customers"]] for g in by_phone] == [["c", "d"], ["a", "b"]]
    assert {g["score"] for g in by_phone} == {105, 80}


def test_orders_are_counted_for_each_record(storage, search):
    add(storage, "a", email="x@example.com")
    add(storage, "b", email="x@example.com")
    for n in range(3):
        storage.orders.collection.insert_one({"_id": f"{STORE}:{n}", "store_id": STORE,
                                              "customer_id": "b"})
    [group] = search.find(STORE)["groups"]
    assert [c["orders_count"] for c in group["customers"]] == [0, 3]


def test_an_erased_customer_loses_its_keys_and_leaves_its_group(storage, search):
    add(storage, "a", email="x@example.com")
    add(storage, "b", email="x@example.com")
    CustomerErasure(storage).erase(STORE, ["b"], None, "req-1")
    doc = storage.customers.collection.find_one({"_id": "b"})
    assert "match_keys" not in doc
    assert search.find(STORE)["groups"] == []


def test_paging_loses_and_repeats_no_group(storage, search):
    rng = random.Random(7)
    expected = set()
    for n in range(23):
        kind = rng.choice(["email", "phone", "name"])
        for member in range(rng.choice([2, 3])):
            cid = f"g{n:02d}m{member}"
            if kind == "email":
                add(storage, cid, email=f"p{n}@example.com")
            elif kind == "phone":
                add(storage, cid, phone=f"+4930{n:07d}")
            else:
                add(storage, cid, first_name="Sam", last_name=f"N{n}", postcode="10115")
        expected.add(n)
    add(storage, "single", email="alone@example.com")
    seen, cursor, pages = [], None, 0
    while True:
        page = search.find(STORE, cursor=cursor, limit=4)
        seen.extend(g["group_id"] for g in page["groups"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 23
    assert pages == 6
    whole = search.find(STORE, limit=200)["groups"]
    assert [g["group_id"] for g in whole] == seen
    scores = [g["score"] for g in whole]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("kwargs, field", [
    ({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"limit": "5"}, "limit"),
    ({"limit": True}, "limit"), ({"match": "zip"}, "match"), ({"cursor": "%%%"}, "cursor"),
    ({"cursor": encode_cursor([OTHER, None, EMAIL, "0" * 32])}, "cursor"),
    ({"cursor": encode_cursor([STORE, PHONE, PHONE, "0" * 32])}, "cursor"),  # made for another filter
    ({"cursor": encode_cursor({"a": 1})}, "cursor"),
])
def test_bad_arguments_are_refused_naming_the_argument(search, kwargs, field):
    with pytest.raises(ValidationError) as raised:
        search.find(STORE, **kwargs)
    assert field in raised.value.details["fields"]


def test_a_cursor_names_its_store_and_no_personal_data(storage, search):
    for cid in ("a", "b", "c", "d"):
        add(storage, cid, email=f"{'x' if cid < 'c' else 'y'}@example.com")
    page = search.find(STORE, limit=1)
    decoded = decode_cursor(page["next_cursor"])
    assert decoded[0] == STORE and "example" not in page["next_cursor"] + str(decoded)
    with pytest.raises(ValidationError):
        search.find(OTHER, cursor=page["next_cursor"], limit=1)


def test_the_key_walk_yields_each_shared_key_once_in_key_order_with_its_size(storage):
    # Three records share one email, two another, one is alone; the last run of the walk
    # counts too, and `after` starts past a key.
    for n, email in enumerate(["a@x.example", "a@x.example", "a@x.example", "b@x.example",
                               "c@x.example", "c@x.example"]):
        add(storage, f"c{n}", email=email, email_key=email)
    add(storage, "gone", status="merged", email="c@x.example", email_key="c@x.example")
    keys = {hashed_key(EMAIL, e): e for e in ("a@x.example", "c@x.example")}
    walked = list(storage.customers.shared_match_keys(STORE, EMAIL, None))
    assert [(keys[k], size) for k, size in walked] == sorted(
        [("a@x.example", 3), ("c@x.example", 2)], key=lambda row: hashed_key(EMAIL, row[0]))
    first_key = walked[0][0]
    assert list(storage.customers.shared_match_keys(STORE, EMAIL, first_key)) == walked[1:]
    assert list(storage.customers.shared_match_keys(OTHER, EMAIL, None)) == []


def test_a_page_reads_the_keys_only_as_far_as_its_groups(storage, search):
    # 400 records alone and two pairs whose keys sort early among them (chosen so): the first
    # page (one group) reads the keys up to the second pair, which tells it there is more,
    # not the store.
    singles = [f"p{n}@x.example" for n in range(400)]
    for n, email in enumerate(singles):
        add(storage, f"single{n:03d}", email=email, email_key=email)
    cut = sorted(hashed_key(EMAIL, e) for e in singles)[40]
    twins = [e for e in (f"twin{n}@x.example" for n in range(200))
             if hashed_key(EMAIL, e) < cut][:2]
    for n, email in enumerate(twins):
        add(storage, f"dup{n}a", email=email, email_key=email)
        add(storage, f"dup{n}b", email=email, email_key=email)
    counting = _CountingCustomers(storage.customers.collection)
    storage.customers.collection = counting
    page = search.find(STORE, limit=1, match=EMAIL)
    assert len(page["groups"]) == 1 and page["next_cursor"] is not None
    # The walk's reads, and each group's members (two finds of two records).
    assert counting.read <= 40 + 4 + 1 + 2 * 2
    rest = search.find(STORE, cursor=page["next_cursor"], limit=1, match=EMAIL)
    assert len(rest["groups"]) == 1 and rest["next_cursor"] is None
    assert {m["customer_id"] for g in page["groups"] + rest["groups"] for m in g["customers"]} == {
        "dup0a", "dup0b", "dup1a", "dup1b"}


def _register(storage, country: str | None) -> None:
    StoreAdmin(storage, default_reconcile_minutes=10).register({
        "store_id": STORE, "shop_url": "https://shop.example/", "webhook_secret": "whsec-12345678",
        "consumer_key": "ck", "consumer_secret": "cs", "country": country})


def _keys_left(search) -> int:
    batches = 0
    while search.add_missing_keys(batch=2):
        batches += 1
        assert batches < 50
    return batches


def test_a_store_country_change_computes_its_customers_phone_keys_again(storage, search):
    # National numbers were read as German; the store says it is in France: the customers
    # without a billing country of their own get French numbers, the others keep theirs,
    # and another store's customers are left alone.
    for n in range(5):
        add(storage, f"nat{n}", phone=f"030 123456{n}")
    add(storage, "own", phone="030 1234567", country="DE")
    add(storage, "elsewhere", store_id=OTHER, phone="030 1234567")
    _keys_left(search)
    _register(storage, "DE")  # the same country again: nothing to do
    assert storage.stores.pending_rekey() is None
    _register(storage, "FR")
    assert storage.stores.pending_rekey()["_id"] == STORE
    assert _keys_left(search) == 4  # six live customers two a batch, and the batch finding the end
    assert storage.stores.pending_rekey() is None
    keys = {d["_id"]: d["match_keys"].get(PHONE) for d in storage.customers.collection.find()}
    assert keys["nat3"] == hashed_key(PHONE, "+33301234563")
    assert keys["own"] == hashed_key(PHONE, "+49301234567")
    assert keys["elsewhere"] == hashed_key(PHONE, "+49301234567")


def test_a_country_changed_again_mid_walk_starts_the_walk_over(storage, search):
    for n in range(5):
        add(storage, f"nat{n}", phone=f"030 123456{n}")
    _keys_left(search)
    _register(storage, "FR")
    assert search.add_missing_keys(batch=2)  # nat0 and nat1 become French
    _register(storage, "AT")
    _keys_left(search)
    keys = {d["_id"]: d["match_keys"].get(PHONE) for d in storage.customers.collection.find()}
    assert keys == {f"nat{n}": hashed_key(PHONE, f"+4330123456{n}") for n in range(5)}
