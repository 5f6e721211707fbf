"""loyalty's part in merging customer records (docs/merging-loyalty.md states the rules).

On `customer.merged` the merged record's account is handed to the primary's; on
`customer.unmerged` what remains of it goes back. Two accounts cannot change in one write, so
each side is its own compare-and-set through `Accounts.change`, guarded by the entry key it
leaves on that account, and the parcel a side gives is kept on the giving account: a step a
crash interrupted is finished, exactly once, by the next delivery of either event. A note per
(merge, merged record) says how far the merge got and what moved.
"""
from __future__ import annotations

import logging

from services.loyalty import ledger as lg
from services.loyalty.accounts import Accounts, Outcome, merge_outcomes
from services.loyalty.repository import (ACTIVE, MERGE_APPLIED, MERGED, MERGING, UNMERGED,
                                         UNMERGED_FIRST, UNMERGING)
from shared.customers import valid_customer_id
from shared.errors import NotFound, ValidationError
from shared.events import Event

MERGE_ID_MAX_LENGTH = 200
# customer_sync names at most this many orders since a merge (its MAX_ORDERS_SINCE).
MAX_ORDERS_SINCE = 5000
ORDER_ID_MAX_LENGTH = 64

log = logging.getLogger(__name__)


def merge_key(merge_id: str | None, primary: str, merged: str) -> str:
    """What a merge's effects are keyed by: its merge record and the merged record; a merge
    from before merge records existed by its two customers."""
    return f"{merge_id}:{merged}" if merge_id is not None else f"legacy:{primary}:{merged}"


class Merges:
    """The merge and unmerge use cases over loyalty's accounts and merge notes."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.notes = accounts.storage.merges

    def apply_merge(self, event: Event) -> Outcome:
        """Move the merged record's account to the primary's and close it; a merge whose
        unmerge came first does nothing, and one applied already adds nothing."""
        data, store_id = event.data, event.store_id
        primary, merged = _pair(data["customer_id"], data["merged_customer_id"],
                                "merged_customer_id")
        merge_id = _merge_id(data.get("merge_id"), required=False)
        key = merge_key(merge_id, primary, merged)
        before = self.notes.open(store_id, key, MERGING, {
            "merge_id": merge_id, "primary": primary, "merged": merged,
            "kind": data.get("kind")}, self.accounts.clock())
        if before is not None and before["state"] != MERGING:
            return Outcome()  # applied, being undone, or undone before it came
        return self._finish_merge(store_id, key, primary, merged, event)

    def apply_unmerge(self, event: Event) -> Outcome:
        """Hand back what the merge moved (what remains of its lots, its rewards and credit if
        unused, its orders' states), and the orders since that were the restored record's own
        with what remains of their points, and make the restored record's account active
        again. An unmerge of a merge not applied here leaves a marker, so the late merge does
        nothing."""
        data, store_id = event.data, event.store_id
        primary, restored = _pair(data["customer_id"], data["restored_customer_id"],
                                  "restored_customer_id")
        merge_id = _merge_id(data.get("merge_id"), required=True)
        orders_since = _order_ids(data.get("orders_since"), "orders_since")
        key = merge_key(merge_id, primary, restored)
        now = self.accounts.clock()
        note = self.notes.get(store_id, key) or self.notes.legacy(store_id, primary, restored)
        if note is None:
            note = self.notes.open(store_id, key, UNMERGED_FIRST, {
                "merge_id": merge_id, "primary": primary, "merged": restored, "kind": None}, now)
            if note is None:
                return Outcome()  # the marker: the merge, if it comes, finds it undone
        if note["state"] == UNMERGED_FIRST:
            return Outcome()
        if note.get("forgotten"):
            log.info("unmerge %s of customer %s hands back nothing: an erasure forgot what the "
                     "merge moved", note["merge_key"], restored, extra={"store_id": store_id})
            return Outcome()
        key = note["merge_key"]
        self.notes.move_on(store_id, key, (MERGING, MERGE_APPLIED), UNMERGING, {}, now)
        # The merge may be part-way (its worker crashed): finish it first, each step once.
        outcome = self._finish_merge(store_id, key, primary, restored, event)

        def give_back(account: lg.Account) -> bool:
            if account.has_request(f"unmerge-out:{key}"):
                return False
            account.give_back(key, restored, orders_since)
            return True

        try:
            outcome = merge_outcomes(outcome, self.accounts.change(
                store_id, primary, give_back, cause=event, create=False))
        except NotFound:
            pass  # no account of the primary: nothing to hand back
        parcel = self._parcel(store_id, primary, "unmerge", key)

        def take_back(account: lg.Account) -> bool:
            changed = False
            if parcel is not None and not account.has_request(f"unmerge-in:{key}"):
                account.receive(parcel)
                changed = True
            into = account.doc.get("merged_into") or {}
            if account.doc.get("status") == MERGED and into.get("merge_key") == key:
                account.doc["status"], account.doc["merged_into"] = ACTIVE, None
                changed = True
            return changed

        try:
            outcome = merge_outcomes(outcome, self.accounts.change(
                store_id, restored, take_back, cause=event, create=False))
        except NotFound:
            pass  # the merge moved nothing and made no account: nothing to restore
        self.notes.move_on(store_id, key, (UNMERGING,), UNMERGED,
                           {"handed_back": _summary(parcel)}, now)
        return outcome

    def _finish_merge(self, store_id: str, key: str, primary: str, merged: str,
                      cause: Event) -> Outcome:
        def give(account: lg.Account) -> bool:
            if account.has_request(f"merge-out:{key}"):
                return False
            account.give_for_merge(key, primary)
            # Closed even when nothing moved (a record never seen here): an order event that
            # still names it is credited to the primary, never opens an account of its own.
            account.doc["status"] = MERGED
            account.doc["merged_into"] = {"customer_id": primary, "merge_key": key,
                                          "at": account.now}
            return True

        outcome = self.accounts.change(store_id, merged, give, cause=cause)
        parcel = self._parcel(store_id, merged, "merge", key)
        if parcel is not None:
            def receive(account: lg.Account) -> bool:
                if account.has_request(f"merge-in:{key}"):
                    return False
                account.receive(parcel)
                return True

            outcome = merge_outcomes(outcome, self.accounts.change(
                store_id, primary, receive, cause=cause))
        self.notes.move_on(store_id, key, (MERGING,), MERGE_APPLIED,
                           {"moved": _summary(parcel)}, self.accounts.clock())
        return outcome

    def _parcel(self, store_id: str, customer_id: str, direction: str, key: str) -> dict | None:
        """The parcel the account gave under this merge, None when it gave none (erased)."""
        doc = self.accounts.storage.accounts.get(store_id, customer_id) or {}
        return (doc.get("transfers") or {}).get(lg.transfer_id(direction, key))


def _summary(parcel: dict | None) -> dict:
    """What a note keeps of a parcel: counts and ids, not the lots themselves."""
    if parcel is None:
        return {"points": 0, "credit": 0, "lots": 0, "rewards": [], "orders": 0}
    return {"points": parcel["points"], "credit": parcel["credit"], "lots": len(parcel["lots"]),
            "rewards": [r["reward_id"] for r in parcel["rewards"]],
            "orders": len(parcel["orders"])}


def _pair(primary: object, other: object, field: str) -> tuple[str, str]:
    primary, other = valid_customer_id(primary), valid_customer_id(other, field)
    if primary == other:
        raise ValidationError(f"{field} must name another customer than customer_id",
                              {"fields": {field: ["same as customer_id"]}})
    return primary, other


def _order_ids(value: object, field: str) -> list[str]:
    """Shop order ids as an unmerge names them: a bounded list of short printable ids."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ORDERS_SINCE:
        raise ValidationError(f"{field} must be a list of at most {MAX_ORDERS_SINCE} order ids",
                              {"fields": {field: ["invalid"]}})
    for order_id in value:
        if (not isinstance(order_id, str) or not order_id.strip()
                or len(order_id) > ORDER_ID_MAX_LENGTH or not order_id.isprintable()):
            raise ValidationError(f"{field} must hold order ids of 1-{ORDER_ID_MAX_LENGTH} "
                                  "printable characters", {"fields": {field: ["invalid"]}})
    return list(dict.fromkeys(value))


def _merge_id(value: object, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MERGE_ID_MAX_LENGTH:
        raise ValidationError(f"merge_id must be text of 1-{MERGE_ID_MAX_LENGTH} characters",
                              {"fields": {"merge_id": ["invalid"]}})
    return value
