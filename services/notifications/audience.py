"""Who notifications may name: a contact held here (made from customer_sync's events) says a
customer is one; customer_sync answers for anyone not heard of yet."""
from __future__ import annotations

from services.notifications.repository import ERASED, NotificationsStorage
from shared.customers import CustomerCheck, not_found, valid_customer_id, valid_customer_ids
from shared.errors import NotFound


def existing(check: CustomerCheck, storage: NotificationsStorage, store_id: str,
             customer_ids: list[str]) -> set[str]:
    """Which of the ids are customers of the store."""
    def held_here(customer_id: str) -> bool:
        contact = storage.contacts.get(store_id, customer_id)
        return contact is not None and contact.get("status") != ERASED

    return check.existing(store_id, customer_ids, held_here)


def require_customer(check: CustomerCheck, storage: NotificationsStorage, store_id: str,
                     customer_id: object) -> str:
    """The checked id of a customer of the store, or NotFound."""
    customer_id = valid_customer_id(customer_id)
    if not existing(check, storage, store_id, [customer_id]):
        raise not_found(store_id, customer_id)
    return customer_id


def require_audience(check: CustomerCheck, storage: NotificationsStorage, store_id: str,
                     audience: object) -> None:
    """A bulk send to a list of customers names only the store's customers: an unknown id
    is refused, naming it, before anything is scheduled (never silently left out)."""
    if not isinstance(audience, dict) or "customer_ids" not in audience:
        return
    ids = valid_customer_ids(audience["customer_ids"], "audience.customer_ids")
    known = existing(check, storage, store_id, ids)
    missing = [c for c in ids if c not in known]
    if missing:
        shown = ", ".join(missing[:10]) + (" and more" if len(missing) > 10 else "")
        raise NotFound(f"no customers {shown} in store {store_id}: nothing was sent",
                       {"fields": {"audience.customer_ids": ["not found"]},
                        "customer_ids": missing})
