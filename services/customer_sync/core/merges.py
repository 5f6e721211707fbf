"""Manual merges of duplicate customer records, and undoing a merge.

A person picks the primary record and which contact fields win; the merged records retire
(status "merged", no match keys) and their orders, notes, reminders and timeline move to the
primary. One merge is several documents and MongoDB here has no transactions, so it goes in
steps, each safe to repeat:

1. the merge record is written "planned" with a snapshot of every record;
2. each merged record is claimed (`merge_claim`, by compare-and-set on its version), so no
   other merge can take it;
3. the primary's write is the moment the merge happens: its winning fields, its
   customer.updated and one customer.merged per merged record (the outbox, in the same write),
   and a `pending_merge_id` marker;
4. core/merge_steps.py retires the merged records and moves their documents, then clears the
   marker. A crash before 4 ends is finished by the next touch of the primary.

A lost race at 2 or 3 releases the claims and starts again from fresh reads; a claim whose
merge never reached step 3 (a crash) is released by the next merge that meets it, once old.

An unmerge starts by moving the record to "unmerging", then hands back, record by record, by
the rules of docs/merging.md, each step repeatable: calling it again after a crash (or while
another call is at it) finishes it, and once it has ended another is a Conflict.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable

from pymongo.errors import DuplicateKeyError

from services.customer_sync.core import merge_rules
from services.customer_sync.core.changes import CONTACT_FIELDS
from services.customer_sync.core.merge_steps import MOVED_KINDS, finish_merge, move, taken_by_primary
from services.customer_sync.core.sync import CustomerSync, customer_event_data, stable_event_id
from services.customer_sync.core.written import Written, written
from services.customer_sync.crm.field_rules import (DEFAULT_APPLIES_TO, MAX_FIELDS, VALUES_FIELD,
                                                    applies_to, fits)
from services.customer_sync.crm.timeline import entry_id, make_entry
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import PageSchema, load, require_text
from shared.customers import MAX_MERGED, not_found, valid_customer_id
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import Event, build_event
from shared.paging import decode_cursor, encode_cursor
from shared.times import as_utc, iso, utcnow

# Where the merge record notes the primary's fields an unmerge put back and kept.
PRIMARY_FIELDS = "primary_fields"

# Fewer tries than shared.conflicts.CONFLICT_RETRIES: a person waits on the answer, and a
# Conflict asks them to try again rather than spinning.
_MAX_RETRIES = 10
# A claim older than this whose merge never reached its primary was left by a crash.
CLAIM_LEASE = timedelta(minutes=2)
# Orders that reached the primary since a merge, looked at by one unmerge.
MAX_ORDERS_SINCE = 5000


def _error(field: str, message: str) -> ValidationError:
    return ValidationError(f"{field} {message}", {"fields": {field: [message]}})


# What a merge id may be (the gateway checks the same in the path).
_MERGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

class CustomerMerges:
    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.sync = sync
        self.clock = clock

    # -- merge -----------------------------------------------------------------------------
    def merge_customers(self, store_id: str, primary_id: Any, merged_ids: Any,
                        field_choices: Any, actor: str) -> Written:
        """Merge 1..10 records into the primary; answers the merge and which shop accounts
        remain (WooCommerce has no merge: each registered record keeps its account there)."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        primary_id = valid_customer_id(primary_id, "primary_id")
        merged_ids = self._merged_ids_arg(merged_ids, primary_id)
        choices = self._choices_arg(store_id, field_choices, [primary_id, *merged_ids])
        merge_id = uuid.uuid4().hex
        correlation_id = f"staff-merge-{merge_id[:16]}"
        for _ in range(_MAX_RETRIES):
            primary = self._mergeable(store_id, primary_id, "primary_id")
            merged = [self._mergeable(store_id, m, "merged_ids") for m in merged_ids]
            plan = merge_rules.plan_fields(primary, merged, choices)
            now = self.clock()
            self.storage.merges.plan({
                "_id": merge_id, "store_id": store_id, "kind": "manual",
                "primary_id": primary_id, "merged_ids": merged_ids,
                "snapshots": {d["_id"]: merge_rules.snapshot(d) for d in [primary, *merged]},
                "field_choices": plan.sources, "field_changes": plan.changes, "moved": {},
                "created_at": now, "created_by": actor})
            if not self._claim(merged, merge_id):
                continue
            events = self._merge_events(store_id, primary, merged, plan, merge_id,
                                        correlation_id)
            entries = [make_entry(entry_id(merge_id, "merged", m["_id"]), primary_id,
                                  "customer.merged", "Another customer record was merged into "
                                  "this one", actor, {"merged_customer_id": m["_id"],
                                                      "merge_id": merge_id}, now)
                       for m in merged]
            if plan.changes:
                entries.append(make_entry(
                    entry_id(merge_id, "fields"), primary_id, "customer.merge_fields",
                    f"Details taken in the merge: {', '.join(plan.changes)}", actor,
                    {"changed_fields": list(plan.changes), "merge_id": merge_id}, now))
            if self.storage.customers.update(primary_id, primary["version"],
                                             {**plan.values, "pending_merge_id": merge_id},
                                             events, entries=entries):
                # The merge happened: even a record released as stale meanwhile goes on.
                self.storage.merges.move_state(merge_id, ["planned", "abandoned"], "pending")
                break
            self._release(merged_ids, merge_id)
        else:
            self._release(merged_ids, merge_id)
            self.storage.merges.move_state(merge_id, ["planned"], "abandoned")
            raise Conflict("the records kept changing; ask again")
        finish_merge(self.storage, store_id, merge_id, self.clock())
        record = self.storage.merges.get(store_id, merge_id)
        touched = [(self.storage.customers.collection.name, primary_id)]
        return written(self._view(record, detailed=True), touched)

    def _merged_ids_arg(self, value: Any, primary_id: str) -> list[str]:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_MERGED:
            raise _error("merged_ids", f"must be a list of 1 to {MAX_MERGED} ids")
        ids = [valid_customer_id(v, "merged_ids") for v in value]
        if len(set(ids)) != len(ids):
            raise _error("merged_ids", "must not name a record twice")
        if primary_id in ids:
            raise _error("merged_ids", "must not name the primary")
        return ids

    def _choices_arg(self, store_id: str, value: Any, ids: list[str]) -> dict[str, str]:
        """Contact fields, and `custom_fields.<key>` for the store's custom fields, each to
        the record whose value wins."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _error("field_choices", "must be an object")
        if len(value) > len(CONTACT_FIELDS) + MAX_FIELDS:
            raise _error("field_choices", "names more fields than a record has")
        defined = None
        for name, chosen in value.items():
            if isinstance(name, str) and name.startswith(merge_rules.VALUE_CHOICE):
                if defined is None:
                    defined = {d["key"] for d in self.storage.custom_fields.all(store_id)}
                if name[len(merge_rules.VALUE_CHOICE):] not in defined:
                    raise _error("field_choices",
                                 f"{name[:80]} names no custom field of this store")
            elif name not in CONTACT_FIELDS:
                raise _error("field_choices",
                             f"names a field that is not one of {', '.join(CONTACT_FIELDS)} "
                             "or custom_fields.<key>")
            if not isinstance(chosen, str) or chosen not in ids:
                raise _error("field_choices", f"{name} must name the primary or a merged record")
        return dict(value)

    def _mergeable(self, store_id: str, customer_id: str, field: str) -> dict:
        """A live record no other merge holds: NotFound (unknown or erased), Conflict (merged,
        deleted, or being merged)."""
        for _ in range(3):
            doc = self.storage.customers.get(store_id, customer_id)
            if doc is None or doc.get("status") == "erased":
                raise not_found(store_id, customer_id)
            if doc.get("pending_merge") or doc.get("pending_merge_id"):
                self.sync.resume_merge(store_id, doc)
                continue
            if doc.get("merge_claim") and not self._release_stale_claim(store_id, doc):
                raise Conflict(f"customer {customer_id} is being merged",
                               {"fields": {field: ["being merged"]}, "customer_id": customer_id})
            if doc.get("merge_claim"):
                continue
            if doc.get("status") != "active":
                into = f" into {doc['merged_into']}" if doc.get("merged_into") else ""
                raise Conflict(f"customer {customer_id} is {doc.get('status')}{into}",
                               {"fields": {field: [f"not active ({doc.get('status')})"]},
                                "customer_id": customer_id})
            return doc
        raise Conflict("the records kept changing; ask again")

    def _release_stale_claim(self, store_id: str, doc: dict) -> bool:
        """Release a claim left by a merge that crashed before its primary took it."""
        record = self.storage.merges.get(store_id, doc["merge_claim"])
        if record is not None and (record.get("state") in ("pending", "done")
                                   or taken_by_primary(self.storage, record)):
            finish_merge(self.storage, store_id, record["_id"], self.clock())
            return True
        if record is not None and as_utc(record["created_at"]) + CLAIM_LEASE > self.clock():
            return False  # a merge in progress
        self.storage.customers.release_merge_claims([doc["_id"]], doc["merge_claim"])
        if record is not None:
            self.storage.merges.move_state(record["_id"], ["planned"], "abandoned")
        return True

    def _claim(self, merged: list[dict], merge_id: str) -> bool:
        for doc in merged:
            if not self.storage.customers.claim_for_merge(doc["_id"], doc["version"], merge_id):
                self._release([d["_id"] for d in merged], merge_id)
                return False
        return True

    def _release(self, ids: list[str], merge_id: str) -> None:
        self.storage.customers.release_merge_claims(ids, merge_id)

    def _event(self, event_type: str, store_id: str, data: dict, correlation_id: str,
               *id_parts: object) -> Event:
        return build_event(event_type, store_id=store_id, data=data,
                           correlation_id=correlation_id, causation_id=correlation_id,
                           event_id=stable_event_id(store_id, event_type, *id_parts),
                           occurred_at=self.clock())

    def _merge_events(self, store_id: str, primary: dict, merged: list[dict],
                      plan: merge_rules.FieldPlan, merge_id: str, correlation_id: str
                      ) -> list[Event]:
        events = []
        if plan.changes:
            after = {**primary, **plan.values}
            events.append(self._event("customer.updated", store_id,
                                      {**customer_event_data(after),
                                       "changed_fields": list(plan.changes)},
                                      correlation_id, primary["_id"], "merge", merge_id))
        for doc in merged:
            events.append(self._event("customer.merged", store_id,
                                      {"customer_id": primary["_id"],
                                       "merged_customer_id": doc["_id"], "merge_id": merge_id,
                                       "kind": "manual"},
                                      correlation_id, primary["_id"], doc["_id"], merge_id))
        return events

    # -- unmerge ---------------------------------------------------------------------------
    def unmerge(self, store_id: str, merge_id: Any, actor: str) -> Written:
        """Undo a merge by the rules of docs/merging.md; answers what went where. A merge
        already undone is a Conflict; one whose undoing was cut short is finished."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        record = self._record(store_id, merge_id)
        if record["state"] == "pending":
            finish_merge(self.storage, store_id, record["_id"], self.clock())
            record = self._record(store_id, merge_id)
        if record["state"] == "unmerged":
            raise Conflict(f"merge {record['_id']} was already undone",
                           {"fields": {"merge_id": ["already unmerged"]}})
        if record["state"] == "done":
            self._check_undoable(store_id, record)
            if not self.storage.merges.move_state(
                    record["_id"], ["done"], "unmerging",
                    {"unmerged_at": self.clock(), "unmerged_by": actor}):
                raise Conflict(f"merge {record['_id']} is being undone",
                               {"fields": {"merge_id": ["already unmerged"]}})
            record = self._record(store_id, merge_id)
        elif record["state"] != "unmerging":
            raise Conflict(f"merge {record['_id']} was never made",
                           {"fields": {"merge_id": [record["state"]]}})
        elif record.get("personal_data_erased"):  # erased while its undoing was cut short
            raise Conflict("a record of this merge was erased; it cannot be undone",
                           {"fields": {"merge_id": ["erased"]}})
        touched = self._hand_back(store_id, record)
        answer = self._unmerge_answer(store_id, self._record(store_id, merge_id))
        self.storage.merges.move_state(record["_id"], ["unmerging"], "unmerged",
                                       {"unmerge_answer": answer})
        return written(answer, touched)

    def _record(self, store_id: str, merge_id: Any) -> dict:
        if not isinstance(merge_id, str) or not _MERGE_ID.match(merge_id):
            raise _error("merge_id", "must be 1 to 64 letters, digits, '-' or '_'")
        record = self.storage.merges.get(store_id, merge_id)
        if record is not None and taken_by_primary(self.storage, record):
            finish_merge(self.storage, store_id, merge_id, self.clock())
            record = self.storage.merges.get(store_id, merge_id)
        if record is None or record.get("state") in ("planned", "abandoned"):
            raise NotFound(f"no merge {merge_id} in store {store_id}",
                           {"fields": {"merge_id": ["not found"]}})
        return record

    def _check_undoable(self, store_id: str, record: dict) -> None:
        """The primary must still be a live record, and the merged ones still merged by this
        merge (erasing a record ends what can be handed back to it)."""
        primary = self.storage.customers.get(store_id, record["primary_id"])
        if primary is None or primary.get("status") != "active":
            status = primary.get("status") if primary else "gone"
            raise Conflict(f"the primary record is {status}: undo the later change first",
                           {"fields": {"merge_id": [f"primary {status}"]}})
        if record.get("personal_data_erased"):
            raise Conflict("a record of this merge was erased; it cannot be undone",
                           {"fields": {"merge_id": ["erased"]}})

    def _hand_back(self, store_id: str, record: dict) -> list:
        merge_id, primary_id = record["_id"], record["primary_id"]
        customers = self.storage.customers
        touched = []
        since = as_utc(record["created_at"])
        moved = record.get("moved") or {}
        for restored_id in record["merged_ids"]:
            restored = customers.get(store_id, restored_id)
            if restored is None or restored.get("status") in ("deleted", "erased"):
                continue  # deleted at the shop since: nothing goes back to it
            # What moved at the merge, and what arrived since that is the restored record's own.
            back = {kind: [e["id"] for e in moved.get(kind, []) if e["from"] == restored_id]
                    for kind in MOVED_KINDS}
            own = [o["_id"] for o in self.storage.orders.collection.find(
                {"store_id": store_id, "customer_id": primary_id,
                 "first_seen_at": {"$gte": since}},
                {"_id": 1, "woo_customer_id": 1, "billing": 1})
                .sort([("first_seen_at", 1), ("_id", 1)]).limit(MAX_ORDERS_SINCE)
                if o["_id"] not in back["orders"]
                and merge_rules.belongs_to_restored(o, record["snapshots"][restored_id])]
            move(self.storage, merge_id, store_id, primary_id, restored_id, "returned_since",
                 {"orders": own})
            move(self.storage, merge_id, store_id, primary_id, restored_id, "returned", back)
            record = self.storage.merges.get(store_id, merge_id)  # with what went back
            if self._restore_record(store_id, record, restored_id):
                touched.append((customers.collection.name, restored_id))
        if self._restore_primary_fields(store_id, record):
            touched.append((customers.collection.name, primary_id))
        return touched

    def _restore_record(self, store_id: str, record: dict, restored_id: str) -> bool:
        merge_id = record["_id"]
        correlation_id = f"staff-unmerge-{merge_id[:16]}"
        customers = self.storage.customers
        orders_since = [self._order_id(e["id"])
                        for e in (record.get("returned_since") or {}).get("orders", [])
                        if e["to"] == restored_id]
        for _ in range(_MAX_RETRIES):
            doc = customers.get(store_id, restored_id)
            if doc is None or doc.get("status") != "merged" or doc.get("merge_id") != merge_id:
                return False  # restored already (a repeat), or no longer ours to restore
            after = {**doc, "status": "active"}
            values = self._values_back(store_id, record["snapshots"][restored_id], doc)
            if values is not None:
                after[VALUES_FIELD] = values
            events = [
                self._event("customer.unmerged", store_id,
                            {"customer_id": record["primary_id"],
                             "restored_customer_id": restored_id, "merge_id": merge_id,
                             "orders_since": orders_since},
                            correlation_id, restored_id, merge_id),
                self._event("customer.updated", store_id,
                            {**customer_event_data(after),
                             "changed_fields": [*CONTACT_FIELDS, VALUES_FIELD]},
                            correlation_id, restored_id, "unmerge", merge_id)]
            entry = make_entry(entry_id(merge_id, "restored", restored_id), restored_id,
                               "customer.unmerged", "Merge undone: this record stands alone "
                               "again", record.get("unmerged_by") or "system",
                               {"merge_id": merge_id, "primary_id": record["primary_id"]},
                               self.clock())
            fields: dict = {"status": "active"}
            if values is not None:
                fields[VALUES_FIELD] = values
            guest_key = record["snapshots"][restored_id].get("guest_email_key")
            if guest_key and not doc.get("registered"):
                fields["guest_email_key"] = guest_key
            unset = ["merged_into", "merge_id", "merged_at"]
            try:
                if customers.update(restored_id, doc["version"], fields, events, unset,
                                    entries=[entry]):
                    return True
            except DuplicateKeyError:  # another guest holds the email now: it keeps it
                fields.pop("guest_email_key")
                if customers.update(restored_id, doc["version"], fields, events, unset,
                                    entries=[entry]):
                    return True
        raise Conflict("the record kept changing; ask again")

    def _values_back(self, store_id: str, snap: dict, doc: dict) -> dict | None:
        """A restored record's custom field values as the merge found them, but for those
        today's definitions refuse (a field deleted since, or defined again with another type
        or limits); None when it holds just those already (or the merge was recorded before
        values were kept)."""
        if VALUES_FIELD not in snap:
            return None
        values, _ = self._fitting(store_id, snap[VALUES_FIELD] or {})
        return None if values == (doc.get(VALUES_FIELD) or {}) else values

    def _fitting(self, store_id: str, values: dict, checked: Any = None
                 ) -> tuple[dict, list[str]]:
        """`values` without those of the `checked` keys (all by default) that today's
        customer definitions refuse, and the keys taken out."""
        definitions = {d["key"]: d for d in self.storage.custom_fields.all(store_id)
                       if applies_to(d) == DEFAULT_APPLIES_TO}
        kept, dropped = dict(values), []
        for key in sorted(values if checked is None else checked):
            if key in kept and not fits(definitions.get(key), kept[key]):
                del kept[key]
                dropped.append(key)
        return kept, dropped

    def _restore_primary_fields(self, store_id: str, record: dict) -> bool:
        """Put back the primary's fields that still hold what the merge gave them, once."""
        merge_id = record["_id"]
        customers = self.storage.customers
        for _ in range(_MAX_RETRIES):
            primary = customers.get(store_id, record["primary_id"])
            if primary is None or merge_id in (primary.get("unmerged_ids") or []):
                return False
            field_changes = record.get("field_changes") or {}
            restore, kept = merge_rules.fields_to_restore(field_changes, primary)
            dropped: list[str] = []
            if VALUES_FIELD in restore:  # a value put back must pass today's definition
                now = primary.get(VALUES_FIELD) or {}
                restore[VALUES_FIELD], dropped = self._fitting(
                    store_id, restore[VALUES_FIELD],
                    [k for k, v in restore[VALUES_FIELD].items() if now.get(k) != v])
            # What this attempt puts back and keeps, noted before its write, is what the
            # answer reports (custom_fields can be in both: some values back, one edited).
            self.storage.merges.note(merge_id, {PRIMARY_FIELDS: {
                "back": [name for name in field_changes if name in restore], "kept": kept,
                "values_dropped": dropped}})
            events, entries = [], []
            changed = [name for name in restore if name in merge_rules.MERGED_FIELDS]
            if changed:
                after = {**primary, **restore}
                events.append(self._event(
                    "customer.updated", store_id,
                    {**customer_event_data(after), "changed_fields": changed},
                    f"staff-unmerge-{merge_id[:16]}", primary["_id"], "unmerge", merge_id))
                entries.append(make_entry(
                    entry_id(merge_id, "fields-back"), primary["_id"], "customer.unmerge_fields",
                    f"Details given back at the unmerge: {', '.join(changed)}",
                    record.get("unmerged_by") or "system",
                    {"changed_fields": changed, "merge_id": merge_id}, self.clock()))
            fields = {**restore,
                      "unmerged_ids": [*(primary.get("unmerged_ids") or []), merge_id]}
            if customers.update(primary["_id"], primary["version"], fields, events,
                                entries=entries):
                return bool(events)
        raise Conflict("the primary kept changing; ask again")

    def _unmerge_answer(self, store_id: str, record: dict) -> dict:
        orders = self.storage.orders.collection
        primary_id = record["primary_id"]
        returned = record.get("returned") or {}
        since = record.get("returned_since") or {}
        restored = []
        for restored_id in record["merged_ids"]:
            def ids(source: dict, kind: str) -> list:
                return [e["id"] for e in source.get(kind, []) if e["to"] == restored_id]
            doc = self.storage.customers.get(store_id, restored_id) or {}
            snap_values = record["snapshots"][restored_id].get(VALUES_FIELD) or {}
            restored.append({
                "customer_id": restored_id, "status": doc.get("status"),
                "values_dropped": self._fitting(store_id, snap_values)[1],
                "orders_back": [self._order_id(i) for i in ids(returned, "orders")],
                "orders_since": [self._order_id(i) for i in ids(since, "orders")],
                **{f"{kind}_back": len(ids(returned, kind))
                   for kind in ("notes", "reminders", "timeline")}})
        moved_orders = {e["id"] for e in (record.get("moved") or {}).get("orders", [])}
        handed = {e["id"] for kind in ("returned", "returned_since")
                  for e in (record.get(kind) or {}).get("orders", [])}
        stayed = []
        for order in orders.find({"store_id": store_id, "_id": {"$in": sorted(moved_orders - handed)}},
                                 {"_id": 1, "customer_id": 1}):
            stayed.append({"order_id": self._order_id(order["_id"]), "customer_id": order["customer_id"],
                           "reason": "moved at the merge, and no longer with the primary"})
        arrived = orders.find({"store_id": store_id, "customer_id": primary_id,
                               "first_seen_at": {"$gte": as_utc(record["created_at"])},
                               "_id": {"$nin": sorted(handed)}}, {"_id": 1})
        for order in arrived.sort([("first_seen_at", 1), ("_id", 1)]).limit(MAX_ORDERS_SINCE):
            stayed.append({"order_id": self._order_id(order["_id"]), "customer_id": primary_id,
                           "reason": "arrived since the merge, not for a restored record's own "
                                     "shop account"})
        reported = record.get(PRIMARY_FIELDS)
        dropped: list[str] = []
        if reported is not None:
            back, kept = reported["back"], reported["kept"]
            dropped = reported.get("values_dropped") or []
        else:  # the primary was gone, or no longer the merge's to restore
            primary = self.storage.customers.get(store_id, primary_id) or {}
            changes = record.get("field_changes") or {}
            kept = [name for name, change in changes.items()
                    if primary.get(name) != change["before"]]
            back = [name for name in changes if name not in kept]
        return {"merge_id": record["_id"], "primary_id": primary_id, "restored": restored,
                "orders_stayed": stayed, "fields_back": back, "fields_kept": kept,
                "values_dropped": dropped}

    @staticmethod
    def _order_id(key: str) -> str:
        return key.split(":", 1)[1] if ":" in key else key

    # -- reading ---------------------------------------------------------------------------
    def get(self, store_id: str, merge_id: Any) -> dict:
        store_id = require_text(store_id, "store_id")
        record = self._record(store_id, merge_id)
        if record["state"] == "pending":
            finish_merge(self.storage, store_id, record["_id"], self.clock())
            record = self._record(store_id, merge_id)
        return self._view(record, detailed=True)

    def list(self, store_id: str, customer_id: Any = None, page: Any = None) -> dict:
        """A store's merges, newest first (or those naming one customer)."""
        store_id = require_text(store_id, "store_id")
        if customer_id is not None:
            customer_id = valid_customer_id(customer_id)
        paging = load(PageSchema(), page, "page")
        after = None
        if paging["cursor"]:
            after = self._after(store_id, paging["cursor"])
        docs = self.storage.merges.page(store_id, customer_id, after, paging["size"] + 1)
        more = len(docs) > paging["size"]
        docs = docs[: paging["size"]]
        next_cursor = None
        if more and docs:
            next_cursor = encode_cursor([store_id, iso(docs[-1]["created_at"]), docs[-1]["_id"]])
        return {"items": [self._view(d) for d in docs], "next_cursor": next_cursor}

    @staticmethod
    def _after(store_id: str, cursor: str) -> tuple:
        try:
            value = decode_cursor(cursor)
            if (not isinstance(value, list) or len(value) != 3 or value[0] != store_id
                    or not all(isinstance(v, str) for v in value)):
                raise ValueError("not this store's cursor")
            return datetime.fromisoformat(value[1]), value[2]
        except (ValueError, TypeError):
            raise _error("page", "cursor is not valid") from None

    def _view(self, record: dict, detailed: bool = False) -> dict:
        shop_accounts = [{"customer_id": cid, "woo_customer_id": snap.get("woo_customer_id")}
                         for cid, snap in (record.get("snapshots") or {}).items()
                         if snap.get("registered") and isinstance(snap.get("woo_customer_id"), int)]
        state = {"planned": "pending", "pending": "pending", "done": "merged",
                 "unmerging": "unmerging", "unmerged": "unmerged"}.get(record["state"],
                                                                       record["state"])
        view = {
            "merge_id": record["_id"], "store_id": record["store_id"], "kind": record["kind"],
            "state": state, "primary_id": record["primary_id"],
            "merged_ids": list(record["merged_ids"]),
            "created_at": iso(record.get("created_at")), "created_by": record.get("created_by"),
            "unmerged_at": iso(record.get("unmerged_at")),
            "unmerged_by": record.get("unmerged_by"),
            # WooCommerce has no merge: every registered record keeps its account at the shop.
            "shop_accounts": shop_accounts,
        }
        if detailed:
            moved = record.get("moved") or {}
            view.update(
                field_choices=dict(record.get("field_choices") or {}),
                changed_fields=list((record.get("field_changes") or {}).keys()),
                moved={kind: [self._order_id(e["id"]) if kind == "orders" else e["id"]
                              for e in moved.get(kind, [])] for kind in MOVED_KINDS},
                snapshots={cid: {name: snap.get(name) for name in
                                 (*CONTACT_FIELDS, "registered", "woo_customer_id", "status")}
                           for cid, snap in (record.get("snapshots") or {}).items()},
                personal_data_erased=bool(record.get("personal_data_erased")))
            if record.get("unmerge_answer"):
                view["unmerge"] = record["unmerge_answer"]
        return view

