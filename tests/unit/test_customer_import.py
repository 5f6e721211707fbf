"""Importing customers from CSV: what the gateway passes on from the file, and what
customer_sync does with each row, on an in-memory MongoDB."""
from __future__ import annotations

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.core.importing import KNOWN_COLUMNS, CustomerImport
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from services.gateway.handlers.transfer import IMPORT_COLUMNS, parse_import

STORE = "s1"


@pytest.fixture
def storage():
    s = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    s.ensure_indexes()
    s.stores.save(Store(STORE, "http://127.0.0.1:9", "whsec-12345678", "ck_x", "cs_x"))
    return s


@pytest.fixture
def importer(storage):
    return CustomerImport(storage, CustomerSync(storage))


def test_the_gateway_passes_on_every_column_the_import_accepts():
    assert set(IMPORT_COLUMNS) == KNOWN_COLUMNS - {"line"}


def test_shipping_columns_from_the_file_reach_the_customer(storage, importer):
    raw = ("email,first_name,shipping_address_1,Shipping City,shipping_postcode,"
           "shipping_country\r\nada@example.org,Ada,1 Quay Street,Leith,EH6 6AA,gb\r\n")
    rows, ignored = parse_import(raw.encode())
    assert ignored == []
    assert rows[0]["shipping_city"] == "Leith"
    answer = importer.run(STORE, rows, True, "alice").answer
    assert answer["summary"]["created"] == 1
    doc = storage.customers.collection.find_one({"email_key": "ada@example.org"})
    assert {k: doc["shipping"][k] for k in ("address_1", "city", "postcode", "country")} == {
        "address_1": "1 Quay Street", "city": "Leith", "postcode": "EH6 6AA", "country": "GB"}


def test_tags_and_groups_cells_are_checked_slugs_reported_for_the_caller(storage, importer):
    rows = [{"line": 2, "email": "ada@example.org", "tags": "VIP, gift ,vip", "groups": "trade"},
            {"line": 3, "email": "bad@example.org", "tags": "no spaces, ok"},
            {"line": 4, "email": "many@example.org", "groups": ",".join(f"g{i}" for i in range(21))}]
    answer = importer.run(STORE, rows, True, "alice").answer
    by_line = {r["line"]: r for r in answer["rows"]}
    assert by_line[2]["outcome"] == "create"
    assert (by_line[2]["tags"], by_line[2]["groups"]) == (["vip", "gift"], ["trade"])
    assert by_line[2]["customer_id"]
    assert by_line[3]["outcome"] == "invalid" and "tags" in by_line[3]["errors"]
    assert by_line[4]["outcome"] == "invalid" and "groups" in by_line[4]["errors"]
    assert storage.customers.collection.count_documents({}) == 1  # refused rows made nothing
