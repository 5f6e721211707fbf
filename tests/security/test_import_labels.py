"""Import's tags, groups and mode, attacked: cells that are not slugs (operators, dots, a
megabyte of one name, thousands of commas) and an unknown mode are refused naming the field,
with a bounded message, and nothing is stored for the row."""
from __future__ import annotations

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from shared.errors import ValidationError

STORE = "s1"
HOSTILE = ["$where", "a.b", "x" * 1_000_000, "," * 100_000 + "ok," + "y" * 70,
           "<script>", "vip\x00", "é-accent", ",".join(f"t{i}" for i in range(5_000))]


@pytest.fixture
def importer():
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    storage.stores.save(Store(STORE, "http://127.0.0.1:9", "whsec-12345678", "ck", "cs"))
    return storage, CustomerImport(storage, CustomerSync(storage))


@pytest.mark.parametrize("field", ["tags", "groups"])
def test_hostile_label_cells_are_refused_by_name_and_store_nothing(importer, field):
    storage, run = importer
    rows = [{"line": i + 2, "email": f"p{i}@example.org", field: cell}
            for i, cell in enumerate(HOSTILE)]
    written = run.run(STORE, rows, True, "mallory", "upsert")
    for row in written.answer["rows"]:
        assert row["outcome"] == "invalid", row["line"]
        assert list(row["errors"]) == [field]
        assert len(str(row["errors"])) < 400
    assert written.touched == () and storage.customers.collection.count_documents({}) == 0


def test_an_unknown_mode_is_refused_before_any_row_is_read(importer):
    storage, run = importer
    for mode in ("merge", None, 1, {"$ne": "create"}):
        with pytest.raises(ValidationError) as refused:
            run.run(STORE, [{"line": 2, "email": "a@example.org"}], True, "mallory", mode)
        assert "mode" in refused.value.args[1]["fields"]
    assert storage.customers.collection.count_documents({}) == 0
