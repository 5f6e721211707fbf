"""notifications' side of merging customer records and undoing it (docs/merging-owners.md).

A merged contact leaves every audience (bulk sends, workflows, date rules) and receives
nothing: its status says so, and every audience and send decision reads only active
contacts. Its pending scheduled sends move to the primary, but one for a workflow step (or a
bulk send) the primary already has pending is cancelled instead, so the person is not told
the same thing twice. An unmerge makes the contact its own again and hands back the moved
sends still pending. What moved is in a merge receipt written first, so a redelivery, or an
unmerge arriving before its merge, changes nothing more.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from services.notifications.repository import ACTIVE, NotificationsStorage
from shared.events import Event
from shared.merge_receipts import MERGED, MOVING, UNMERGED, merge_key
from shared.times import utcnow

MERGED_DUPLICATE = "merged duplicate"


def duplicate_key(send: dict) -> tuple:
    """What makes two pending sends the same message to one person: the same workflow and
    step (workflows send one step today, step 0), or the same bulk send."""
    if send.get("workflow_id"):
        return ("workflow", send["workflow_id"], send.get("step", 0))
    return ("bulk", send.get("bulk_id"))


class ContactMerges:
    """The use cases: apply `customer.merged` and `customer.unmerged`."""

    def __init__(self, storage: NotificationsStorage,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.clock = clock

    def merge(self, event: Event) -> dict:
        """What moved and what was cancelled (nothing, for a redelivery)."""
        store_id, data = event.store_id, event.data
        primary_id, merged_id = data["customer_id"], data["merged_customer_id"]
        if primary_id == merged_id:
            return {"moved": 0, "cancelled": 0}
        key = merge_key(data.get("merge_id"), primary_id)
        contact = self.storage.contacts.get(store_id, merged_id)
        receipt = self.storage.merges.start(store_id, key, merged_id, {
            "primary_id": primary_id, "kind": data.get("kind"), "state": MOVING,
            "contact_status": (contact or {}).get("status", ACTIVE),
            "moved_sends": [], "cancelled_sends": [], "started_at": self.clock()})
        if receipt["state"] != MOVING:
            return {"moved": 0, "cancelled": 0}  # applied already, or its unmerge came first
        self.storage.contacts.mark_merged(store_id, merged_id, primary_id)
        sends = self.storage.sends
        held = {duplicate_key(s) for s in sends.pending_of(store_id, primary_id)}
        moved, cancelled = [], []
        for send in sends.pending_of(store_id, merged_id):
            if duplicate_key(send) in held:
                if sends.cancel_pending(send["_id"], merged_id, MERGED_DUPLICATE, key):
                    cancelled.append(send["_id"])
            elif sends.move_pending(send["_id"], merged_id, primary_id, key):
                held.add(duplicate_key(send))
                moved.append(send["_id"])
        self.storage.merges.add(receipt["_id"], {"moved_sends": moved,
                                                 "cancelled_sends": cancelled})
        self.storage.merges.set_state(receipt["_id"], MERGED, self.clock())
        return {"moved": len(moved), "cancelled": len(cancelled)}

    def unmerge(self, event: Event) -> dict:
        """How many moved sends went back (nothing, for a redelivery)."""
        store_id, data = event.store_id, event.data
        primary_id, restored_id = data["customer_id"], data["restored_customer_id"]
        merges = self.storage.merges
        receipt = merges.to_hand_back(store_id, data, self.clock())
        if receipt is None:
            return {"returned": 0}
        self.storage.contacts.restore(store_id, restored_id, primary_id,
                                      receipt.get("contact_status") or ACTIVE)
        returned = self.storage.sends.hand_back(store_id, primary_id, restored_id,
                                                receipt["merge_key"])
        merges.set_state(receipt["_id"], UNMERGED, self.clock())
        return {"returned": returned}
