"""shared.customers: who a write may name, asked of customer_sync only when not held here."""
from __future__ import annotations

import eventlet
import pytest
from nameko.exceptions import UnknownService

from shared.customers import (CUSTOMER_ID_MAX_LENGTH, MAX_CUSTOMERS_PER_CHECK, CustomerCheck,
                              customer_sync_over_rpc, valid_customer_id, valid_customer_ids)
from shared.errors import NotFound, Unavailable, ValidationError


class CustomerSyncStandIn:
    """Answers `known_customers` from a set and counts the questions."""

    def __init__(self, customers: set[str]) -> None:
        self.customers = customers
        self.asked: list[list[str]] = []

    def __call__(self, store_id: str, customer_ids: list[str]) -> list[str]:
        self.asked.append(list(customer_ids))
        return [c for c in customer_ids if c in self.customers]


def test_a_customer_held_here_is_not_asked_about_and_an_unknown_one_is():
    customer_sync = CustomerSyncStandIn({"c-synced"})
    check = CustomerCheck(customer_sync)

    assert check.require("s1", "c-local", held_here=lambda c: c == "c-local") == "c-local"
    assert customer_sync.asked == []
    assert check.require("s1", "c-synced", held_here=lambda c: False) == "c-synced"
    assert customer_sync.asked == [["c-synced"]]


def test_a_customer_nobody_knows_is_not_found_naming_them():
    check = CustomerCheck(CustomerSyncStandIn(set()))
    with pytest.raises(NotFound) as refused:
        check.require("s1", "c-ghost", held_here=lambda c: False)
    assert str(refused.value) == "no customer c-ghost in store s1"
    assert refused.value.details["customer_id"] == "c-ghost"


def test_existing_asks_once_for_every_unknown_id_and_ignores_ids_it_did_not_ask_about():
    customer_sync = CustomerSyncStandIn({"b", "z"})
    check = CustomerCheck(customer_sync)
    assert check.existing("s1", ["a", "b", "c"], held_here=lambda c: c == "a") == {"a", "b"}
    assert customer_sync.asked == [["b", "c"]]


@pytest.mark.parametrize("value, reason", [
    (None, "required"), ("", "required"), ("   ", "required"), (42, "required"),
    ("x" * (CUSTOMER_ID_MAX_LENGTH + 1), "too long"), ("c\n1", "invalid"), ("c\x00", "invalid"),
])
def test_a_bad_customer_id_is_refused_naming_the_field(value, reason):
    with pytest.raises(ValidationError) as refused:
        valid_customer_id(value)
    assert refused.value.details["fields"] == {"customer_id": [reason]}


def test_an_id_of_the_longest_allowed_length_passes():
    assert valid_customer_id("x" * CUSTOMER_ID_MAX_LENGTH) == "x" * CUSTOMER_ID_MAX_LENGTH


def test_id_lists_are_bounded_and_deduplicated():
    assert valid_customer_ids(["b", "a", "b"]) == ["b", "a"]
    for bad in ([], [str(i) for i in range(MAX_CUSTOMERS_PER_CHECK + 1)], {"a": 1}, ["ok", ""]):
        with pytest.raises(ValidationError):
            valid_customer_ids(bad)


class _Reply:
    def __init__(self, result=None, wait: float = 0.0) -> None:
        self._result, self._wait = result, wait

    def result(self):
        eventlet.sleep(self._wait)
        return self._result


class _Proxy:
    """nameko's RpcProxy shape: proxy.known_customers.call_async(...).result()."""

    def __init__(self, reply=None, error: Exception | None = None) -> None:
        self.known_customers = self
        self._reply, self._error = reply, error

    def call_async(self, *args):
        if self._error is not None:
            raise self._error
        return self._reply


def test_customer_sync_answers_over_rpc():
    ask = customer_sync_over_rpc(_Proxy(_Reply(["c1"])), timeout_seconds=1)
    assert ask("s1", ["c1", "c2"]) == ["c1"]


def test_customer_sync_not_running_or_too_slow_is_unavailable_not_a_hang():
    with pytest.raises(Unavailable, match="not running"):
        customer_sync_over_rpc(_Proxy(error=UnknownService("customer_sync")), 1)("s1", ["c1"])
    with pytest.raises(Unavailable, match="did not answer in 0.05s"):
        customer_sync_over_rpc(_Proxy(_Reply(["c1"], wait=5)), 0.05)("s1", ["c1"])


# -- customer_sync's side of the question ------------------------------------------------------

def test_customer_sync_knows_its_own_store_s_customers_and_not_the_erased():
    from devdoubles import mongomock_adapter

    from services.customer_sync.core.queries import CustomerQueries
    from services.customer_sync.repository import CustomerSyncStorage, Store
    from services.customer_sync.core.sync import CustomerSync
    from tests import payloads

    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    for store in ("s1", "s2"):
        storage.stores.save(Store(store, "https://shop.example", "whsec-12345678", "ck", "cs"))
    sync = CustomerSync(storage)
    sync.apply("s1", "customer", "created", payloads.customer(woo_id=1, email="a@x.example"),
               correlation_id="wh-1")
    sync.apply("s1", "customer", "created", payloads.customer(woo_id=2, email="b@x.example"),
               correlation_id="wh-2")
    sync.apply("s2", "customer", "created", payloads.customer(woo_id=3, email="c@x.example"),
               correlation_id="wh-3")
    queries = CustomerQueries(storage)
    ada, bea = (queries.find_customer("s1", e)["customer_id"] for e in ("a@x.example", "b@x.example"))
    other_store = queries.find_customer("s2", "c@x.example")["customer_id"]
    storage.customers.collection.update_one({"_id": bea}, {"$set": {"status": "erased"}})

    assert queries.known_customers("s1", [other_store, "ghost", ada, bea]) == [ada]
    with pytest.raises(ValidationError):
        queries.known_customers("s1", ["x" * (CUSTOMER_ID_MAX_LENGTH + 1)])
