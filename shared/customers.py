"""Whether a customer exists in a store, for every write that names one.

A write naming a customer who does not exist must not create a record for them (a phantom
loyalty account, tag or consent) but answer `NotFound`. customer_sync is the authority on a
store's customers: it records each one in the same request that the shop's webhook, the
backfill or an import brings. The other services learn of customers from events, which can
lag a moment behind (a customer created a second ago may not have reached segmentation yet),
so a service first looks in what it holds itself (anything there came from customer_sync's
events) and asks customer_sync over RPC about anyone it does not know yet.
"""
from __future__ import annotations

from typing import Callable, Iterable

import eventlet

# The contact fields `customer.*` events carry, and which a merge chooses between.
CONTACT_FIELDS = ("email", "first_name", "last_name", "phone", "company", "billing", "shipping",
                  "birthday")
# How many records one merge may fold into its primary (docs/merging.md).
MAX_MERGED = 10
from nameko.exceptions import UnknownService

from shared.errors import NotFound, Unavailable, ValidationError

CUSTOMER_ID_MAX_LENGTH = 64  # customer_sync's ids are 32 hex digits; room for imported ones
MAX_CUSTOMERS_PER_CHECK = 1000  # the most one write may name, as customer_sync's bulk actions

AskCustomerSync = Callable[[str, list[str]], list[str]]


def valid_customer_id(value: object, field: str = "customer_id") -> str:
    """A customer id as every service accepts it: a non-empty printable string of at most
    CUSTOMER_ID_MAX_LENGTH characters; anything else is refused before any lookup or write."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be a non-empty string",
                              {"fields": {field: ["required"]}})
    if len(value) > CUSTOMER_ID_MAX_LENGTH:
        raise ValidationError(f"{field} must be at most {CUSTOMER_ID_MAX_LENGTH} characters",
                              {"fields": {field: ["too long"]}})
    if not value.isprintable():
        raise ValidationError(f"{field} must be printable text", {"fields": {field: ["invalid"]}})
    return value


def valid_customer_ids(values: object, field: str = "customer_ids") -> list[str]:
    """1..MAX_CUSTOMERS_PER_CHECK ids, each valid, duplicates dropped (first kept)."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values or len(values) > MAX_CUSTOMERS_PER_CHECK:
        raise ValidationError(f"{field} must be a list of 1 to {MAX_CUSTOMERS_PER_CHECK} ids",
                              {"fields": {field: ["required"]}})
    return list(dict.fromkeys(valid_customer_id(v, field) for v in values))


def not_found(store_id: str, customer_id: str) -> NotFound:
    return NotFound(f"no customer {customer_id} in store {store_id}",
                    {"fields": {"customer_id": ["not found"]}, "customer_id": customer_id})


class CustomerCheck:
    """Answers which of the named customers exist, asking customer_sync only about those the
    calling service does not already hold."""

    def __init__(self, ask_customer_sync: AskCustomerSync) -> None:
        self.ask_customer_sync = ask_customer_sync

    @classmethod
    def over_rpc(cls, proxy, settings) -> "CustomerCheck":
        """The check every data service uses: customer_sync asked through its RpcProxy
        within `CUSTOMER_CHECK_TIMEOUT_SECONDS`."""
        return cls(customer_sync_over_rpc(proxy, settings.float("CUSTOMER_CHECK_TIMEOUT_SECONDS")))

    def existing(self, store_id: str, customer_ids: Iterable[str],
                 held_here: Callable[[str], bool]) -> set[str]:
        ids = list(customer_ids)
        unknown = [c for c in ids if not held_here(c)]
        known = set(ids) - set(unknown)
        if unknown:
            known |= set(self.ask_customer_sync(store_id, unknown)) & set(unknown)
        return known

    def require(self, store_id: str, customer_id: object,
                held_here: Callable[[str], bool]) -> str:
        """The valid id of an existing customer, or ValidationError / NotFound (nothing is
        written by the caller then)."""
        customer_id = valid_customer_id(customer_id)
        if not self.existing(store_id, [customer_id], held_here):
            raise not_found(store_id, customer_id)
        return customer_id


def customer_sync_over_rpc(proxy, timeout_seconds: float) -> AskCustomerSync:
    """Asks customer_sync's `known_customers` through a nameko RpcProxy, within a deadline: a
    customer_sync that is down or slow makes the write a 503 (nothing changed), never a hang
    and never a write for someone who may not exist."""

    def ask(store_id: str, customer_ids: list[str]) -> list[str]:
        try:
            reply = proxy.known_customers.call_async(store_id, customer_ids)
            with eventlet.Timeout(timeout_seconds):
                return reply.result()
        except UnknownService:
            raise Unavailable("customer_sync is not running: cannot check the customer; "
                              "nothing changed") from None
        except eventlet.Timeout:
            raise Unavailable(f"customer_sync did not answer in {timeout_seconds:g}s: cannot "
                              "check the customer; nothing changed") from None

    return ask
