"""The GDPR erasure handler and export RPC every data-owning service inherits from
shared.service_rpc.DataOwnerRpc: one shape, each service answering only what it holds."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from nameko.containers import ServiceContainer
from nameko.events import EventHandler

from services.registry import load_all
from shared.erasure import ErasureReceipts
from shared.errors import NotFound
from shared.events import build_event
from shared.outbox import OUTBOX_FIELD
from shared.service_rpc import DataOwnerRpc

# Every data owner answers through the inherited handler and export.
INHERITING = ("customer_sync", "loyalty", "notifications", "segmentation")


def _data_owners() -> dict[str, type]:
    return {name: cls for name, cls in load_all().items() if issubclass(cls, DataOwnerRpc)}


def test_every_data_owner_consumes_the_erasure_request_on_its_own_queue():
    """nameko binds the inherited entrypoint to each service's container, so the queue (named
    after the service and the method) is what it was when each service declared its own."""
    owners = _data_owners()
    assert set(INHERITING) == set(owners)
    for name, cls in owners.items():
        container = ServiceContainer(cls, {"AMQP_URI": "amqp://guest:guest@127.0.0.1:5672//"})
        [handler] = [e for e in container.entrypoints if isinstance(e, EventHandler)
                     and e.event_type == "gdpr.erasure_requested"]
        EventHandler.setup(handler)  # nameko's own: names the queue, declares nothing
        assert handler.queue.name == (
            f"evt-gdpr-gdpr.erasure_requested--{name}.on_erasure_requested")
        assert [e.method_name for e in container.entrypoints
                if e.method_name == "export_customer"] == ["export_customer"]
    for name in INHERITING:
        assert owners[name].on_erasure_requested is DataOwnerRpc.on_erasure_requested
        assert owners[name].export_customer is DataOwnerRpc.export_customer


class _Owner(DataOwnerRpc):
    """A data owner holding one person, recording what the mixin asks of it."""

    name = "owner"

    def __init__(self, database, held: dict | None) -> None:
        self.storage = SimpleNamespace(database=database,
                                       erasures=ErasureReceipts(database["erasures"]))
        self.outbox = MagicMock()
        self.held = held
        self.erased: list[tuple] = []

    def erase_person(self, store_id, customer_ids, request_id, email) -> dict:
        self.erased.append((store_id, customer_ids, request_id, email))
        return {"things": len(customer_ids)}

    def export_person(self, store_id, customer_id):
        return self.held

    def _drop_parked(self, matches) -> int:
        return sum(1 for body in ({"store_id": "s1", "data": {"customer_id": "c1"}},
                                  {"store_id": "s1", "data": {"customer_id": "c2"}})
                   if matches(body))


def test_the_erasure_handler_erases_once_and_confirms_every_time_asked(database):
    owner = _Owner(database, None)
    request = build_event("gdpr.erasure_requested", store_id="s1",
                          data={"request_id": "req-1", "customer_ids": ["c1"],
                                "email": "ada@example.com"})
    owner.on_erasure_requested(request)
    owner.on_erasure_requested(build_event("gdpr.erasure_requested", store_id="s1",
                                           data=request.data))
    assert owner.erased == [("s1", ["c1"], "req-1", "ada@example.com")]
    assert owner.outbox.notify.call_args_list == [(([("erasures", "s1:req-1")],),)] * 2
    owed = [e["message"] for e in owner.storage.erasures.get("s1", "req-1")[OUTBOX_FIELD]]
    assert [m["event_type"] for m in owed] == ["gdpr.erasure_completed"] * 2
    assert owed[0]["event_id"] == owed[1]["event_id"]
    assert owed[1]["data"] == {"request_id": "req-1", "service": "owner",
                               "customer_ids": ["c1"],
                               "counts": {"things": 1, "parked_messages": 1}}


def test_the_export_names_the_service_writes_times_and_hides_owed_events(database):
    naive = datetime(2026, 3, 1, 12, 30)
    aware = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    owner = _Owner(database, {"contact": {"seen_at": naive, OUTBOX_FIELD: [{"x": 1}]},
                              "orders": [{"order_id": "7", "at": aware}], "rfm": None})
    assert owner.export_customer("s1", "c1") == {
        "service": "owner", "contact": {"seen_at": "2026-03-01T12:30:00+00:00"},
        "orders": [{"order_id": "7", "at": "2026-03-02T08:00:00+00:00"}], "rfm": None}


def test_the_export_of_someone_not_held_is_not_found(database):
    with pytest.raises(NotFound) as refused:
        _Owner(database, None).export_customer("s1", "c9")
    assert str(refused.value) == "no customer c9 in store s1"
