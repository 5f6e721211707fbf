"""The customer list's `custom.<key>=value` filter: segmentation keeps each customer's custom
field values from `customer.*` events and matches the text asked for against the typed value;
the export writes a `custom.<key>` column a field, which the import reads back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devdoubles import mongomock_adapter
from services.gateway.handlers.transfer import export_row, parse_import
from services.segmentation import directory
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from shared.errors import ValidationError
from shared.events import build_event, contract
from tests.support import Clock

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
STORE = "s1"


def customer(customer_id: str, values: dict, at: datetime,
             event_type: str = "customer.created"):
    data = {**contract(event_type).sample, "customer_id": customer_id,
            "email": f"{customer_id}@example.com", "custom_fields": values}
    return build_event(event_type, store_id=STORE, data=data, occurred_at=at)


@pytest.fixture
def profiles():
    storage = SegmentationStorage(mongomock_adapter.client()["segmentation"])
    storage.ensure_indexes()
    profiles = Profiles(storage, clock=Clock(T0))
    for customer_id, values in (("c1", {"tier": "gold", "visits": 3, "vip": True}),
                                ("c2", {"tier": "silver", "visits": 3.5, "vip": False}),
                                ("c3", {})):
        profiles.apply_customer_event(customer(customer_id, values, T0))
    return profiles


def found(profiles, **custom) -> list[str]:
    page = directory.search_customers(profiles.storage.profiles, STORE, {"custom": custom},
                                      {"field": "name", "direction": "asc"}, {"size": 50})
    return sorted(item["customer_id"] for item in page["items"])


def test_the_filter_matches_text_numbers_and_booleans(profiles):
    assert found(profiles, tier="gold") == ["c1"]
    assert found(profiles, visits="3") == ["c1"]
    assert found(profiles, visits="3.5") == ["c2"]
    assert found(profiles, vip="true") == ["c1"] and found(profiles, vip="false") == ["c2"]
    assert found(profiles, tier="gold", vip="false") == []
    assert found(profiles, tier="bronze") == []


def test_a_later_event_replaces_the_values_the_list_holds(profiles):
    profiles.apply_customer_event(customer("c1", {"tier": "silver"}, T0 + timedelta(hours=1),
                                           "customer.updated"))
    assert found(profiles, tier="silver") == ["c1", "c2"]
    assert found(profiles, visits="3") == []


@pytest.mark.parametrize("custom", [{"Tier!": "x"}, {"tier": ""}, {"tier": "x" * 201},
                                    {f"k{i}": "x" for i in range(11)}, {}])
def test_an_odd_filter_is_refused(profiles, custom):
    with pytest.raises(ValidationError):
        found(profiles, **custom)


def test_the_export_column_reads_back_in_the_import():
    row = export_row({"customer_id": "c1", "email": "c1@example.com",
                      "custom_fields": {"tier": "gold", "vip": False, "visits": 3}},
                     ["tier", "vip", "visits", "since"])
    assert {k: v for k, v in row.items() if k.startswith("custom.")} == {
        "custom.tier": "gold", "custom.vip": "false", "custom.visits": "3", "custom.since": ""}
    header = ",".join(row)
    line = ",".join(str(v) for v in row.values())
    [read] = parse_import(f"{header}\n{line}\n".encode())[0]
    assert {k: v for k, v in read.items() if k.startswith("custom.")} == {
        "custom.tier": "gold", "custom.vip": "false", "custom.visits": "3", "custom.since": ""}
