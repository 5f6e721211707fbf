"""GDPR erasure in segmentation: forget a person's profiles, drop their parked messages, and
confirm to the gdpr service with what was erased.

The confirmation is owed in the same write as the erasure receipt, so it is published however
the process stops; a request asked again (the gdpr service retries when it has not heard back)
is answered again with the counts first recorded.
"""
from __future__ import annotations

import json
import uuid
from typing import Callable, Iterable

from shared.events import Event, build_event
from services.segmentation.profiles import ProfileChange, Profiles

SERVICE = "segmentation"
_NAMESPACE = uuid.UUID("5d1c8b0e-4f4e-4c5a-9e61-7f0f3b8f2d11")

# Drops this service's parked messages that the predicate selects; answers how many it dropped.
DropParked = Callable[[Callable[[dict], bool]], int]


def mentions(body: dict, store_id: str, customer_ids: Iterable[str], email: str | None) -> bool:
    """Whether a parked message's body is about the person: their store and one of their ids
    in its data, or their email anywhere in it."""
    if not isinstance(body, dict):
        return False
    if email and email.strip().lower() in json.dumps(body, default=str).lower():
        return True
    if body.get("store_id") != store_id:
        return False
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    ids = set(customer_ids)
    return any(data.get(name) in ids for name in ("customer_id", "merged_customer_id"))


def handle_erasure_requested(profiles: Profiles, event: Event, drop_parked: DropParked
                             ) -> ProfileChange:
    store_id, data = event.store_id, event.data
    request_id, customer_ids = data["request_id"], list(data["customer_ids"])
    receipts = profiles.storage.erasures
    receipt = receipts.get(store_id, request_id)
    if receipt is not None:
        counts = receipt["counts"]
    else:
        counts = profiles.erase(store_id, customer_ids, request_id)
        counts["parked_messages"] = drop_parked(
            lambda body: mentions(body, store_id, customer_ids, data.get("email")))
    event_id = str(uuid.uuid5(_NAMESPACE, f"{store_id}:{request_id}:{SERVICE}"))
    confirmation = build_event(
        "gdpr.erasure_completed", store_id=store_id, event_id=event_id,
        correlation_id=event.correlation_id, causation_id=event.event_id,
        data={"request_id": request_id, "service": SERVICE, "customer_ids": customer_ids,
              "counts": counts})
    key = receipts.record(store_id, request_id, counts, [confirmation])
    return ProfileChange(["gdpr.erasure_completed"], [(receipts.collection.name, key)])
