"""gdpr's side of merging customer records and undoing it (docs/merging-owners.md).

At a merge the primary's consent for each purpose (a purpose names its channel:
email_marketing, sms_marketing) becomes the most restrictive across the records: a withdrawal
on the merged record withdraws on the primary, a grant on the merged record alone grants
nothing. At the unmerge the restored record still has its own records (they were never
changed), and the primary gets back its pre-merge state for a purpose only where the merge
changed it and nothing changed since. Every change is published as consent.changed, at once.
What changed is kept in a merge receipt written first, so a redelivery, or an unmerge
arriving before its merge, changes nothing more.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from services.gdpr.repository import GdprStorage
from shared.events import Event, build_event
from shared.merge_receipts import MERGED, MOVING, UNMERGED, merge_key
from shared.times import utcnow

_NAMESPACE = uuid.UUID("4f8d2b7a-61c3-4e0f-9a2d-8b5e3c1f7d24")
_TICK = timedelta(milliseconds=1)

DocumentRef = tuple[str, Any]


def _withdrawn(state: dict | None) -> bool:
    """An explicit withdrawal: not granted, and not a grant waiting for its confirmation."""
    return state is not None and state.get("granted") is False and not state.get("pending")


def withdrawals_to_apply(primary: dict, merged: dict) -> dict[str, dict]:
    """The purposes whose withdrawal on the merged record the primary must take, each with
    that withdrawal's state: wherever the primary is not already withdrawn."""
    return {purpose: state for purpose, state in sorted(merged.items())
            if _withdrawn(state) and not _withdrawn(primary.get(purpose))}


Notify = Callable[[Iterable[DocumentRef]], None]


def _nobody(refs: Iterable[DocumentRef]) -> None:
    """No outbox relay to tell (a test, a script): the relay's sweep publishes later."""


class ConsentMerges:
    """The use cases: apply `customer.merged` and `customer.unmerged` to consent records.
    Made once; each call's `notify` (the calling worker's outbox relay) is told of the consent
    record that now owes events, right after the write."""

    def __init__(self, storage: GdprStorage, clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.clock = clock

    def merge(self, event: Event, notify: Notify = _nobody) -> list[str]:
        """The primary's purposes withdrawn by this merge (none, for a redelivery)."""
        store_id, data = event.store_id, event.data
        primary_id, merged_id = data["customer_id"], data["merged_customer_id"]
        if primary_id == merged_id:
            return []
        key = merge_key(data.get("merge_id"), primary_id)
        consents = self.storage.consents
        primary = (consents.get(store_id, primary_id) or {}).get("purposes") or {}
        merged = (consents.get(store_id, merged_id) or {}).get("purposes") or {}
        now = self.clock()
        changes = {}
        for purpose, withdrawal in withdrawals_to_apply(primary, merged).items():
            before = primary.get(purpose)
            at = max(now, before["at"] + _TICK) if before else now
            changes[purpose] = {"before": before, "at": at, "actor": f"merge:{key}",
                                "source": withdrawal.get("source") or "operator"}
        receipt = self.storage.merges.start(store_id, key, merged_id, {
            "primary_id": primary_id, "kind": data.get("kind"), "state": MOVING,
            "consent": changes, "started_at": now})
        if receipt["state"] != MOVING:
            return []  # applied already, or its unmerge came first
        withdrawn = []
        for purpose, change in sorted(receipt["consent"].items()):
            change_id = f"merge:{key}:{merged_id}:{purpose}"
            entry = {"change_id": change_id, "purpose": purpose, "granted": False,
                     "at": change["at"], "source": change["source"], "actor": change["actor"],
                     "pending": False,
                     "note": f"withdrawn on {merged_id}, merged into this record"}
            if consents.record(store_id, primary_id, purpose, entry,
                               [self._event(store_id, primary_id, change_id, entry)]):
                withdrawn.append(purpose)
        if receipt["consent"]:  # a duplicate delivery at once may find its events owed still
            notify([(consents.collection.name, consents.key(store_id, primary_id))])
        self.storage.merges.set_state(receipt["_id"], MERGED, self.clock())
        return withdrawn

    def unmerge(self, event: Event, notify: Notify = _nobody) -> list[str]:
        """The primary's purposes given back their pre-merge state (none, for a redelivery
        or where the primary's consent changed since the merge)."""
        store_id, data = event.store_id, event.data
        primary_id, restored_id = data["customer_id"], data["restored_customer_id"]
        merges, consents = self.storage.merges, self.storage.consents
        receipt = merges.to_hand_back(store_id, data, self.clock())
        if receipt is None:
            return []
        now = self.clock()
        restored = []
        held = (consents.get(store_id, primary_id) or {}).get("purposes") or {}
        for purpose, change in sorted((receipt.get("consent") or {}).items()):
            before = change["before"]
            change_id = f"unmerge:{receipt['merge_key']}:{restored_id}:{purpose}"
            current = held.get(purpose) or {}
            at = max(now, current["at"] + _TICK) if current.get("at") else now
            state = None if before is None else {**before, "at": at,
                                                 "actor": f"unmerge:{receipt['merge_key']}"}
            entry = {"change_id": change_id, "purpose": purpose,
                     "granted": bool(before and before.get("granted")), "at": at,
                     "source": (before or {}).get("source") or "operator",
                     "actor": f"unmerge:{receipt['merge_key']}",
                     "pending": bool(before and before.get("pending")),
                     "note": f"as before the merge of {restored_id}, now undone"}
            if consents.restore(store_id, primary_id, purpose,
                                {"actor": change["actor"], "at": change["at"]}, state, entry,
                                [self._event(store_id, primary_id, change_id, entry)]):
                restored.append(purpose)
        if receipt.get("consent"):
            notify([(consents.collection.name, consents.key(store_id, primary_id))])
        merges.set_state(receipt["_id"], UNMERGED, self.clock())
        return restored

    @staticmethod
    def _event(store_id: str, customer_id: str, change_id: str, entry: dict) -> Event:
        return build_event("consent.changed", store_id=store_id, event_id=str(uuid.uuid5(
            _NAMESPACE, f"consent:{store_id}:{customer_id}:{change_id}")), data={
            "customer_id": customer_id, "purpose": entry["purpose"],
            "granted": entry["granted"], "pending": entry["pending"],
            "source": entry["source"], "changed_at": entry["at"].isoformat(),
            "origin": "gdpr", "note": entry["note"]})
