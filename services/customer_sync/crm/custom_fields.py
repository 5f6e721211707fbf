"""Custom fields: a store defines its own customer fields (crm/field_rules.py says what a
definition and a value may be), and staff set each customer's values, which ride on the
customer document and in `customer.*` events so other services can use them."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Callable

from services.customer_sync.core.sync import CustomerSync, customer_event_data
from services.customer_sync.core.written import DocumentRef, Written, written
from services.customer_sync.crm.field_rules import (DEFAULT_APPLIES_TO, MAX_FIELDS,
                                                    VALUES_FIELD, applies_to,
                                                    changed_definition, check_values,
                                                    load_definition)
from services.customer_sync.crm.timeline import entry_id, known_customer, make_entry
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import require_text
from shared.conflicts import CONFLICT_RETRIES
from shared.errors import Conflict, NotFound, ValidationError
from shared.times import iso, utcnow


def definition_view(doc: dict) -> dict:
    return {"key": doc["key"], "label": doc["label"], "type": doc["type"],
            "options": doc.get("options"), "required": bool(doc.get("required")),
            "min": doc.get("min"), "max": doc.get("max"), "max_length": doc.get("max_length"),
            "applies_to": applies_to(doc),
            "created_at": iso(doc.get("created_at")), "updated_at": iso(doc.get("updated_at"))}


log = logging.getLogger(__name__)

# Customers (or companies) read at a time while a deleted field's values are taken off them,
# and the reads one call makes at most, so that a deletion answers well within the RPC timeout
# (the background sweep carries on where it stopped).
DELETE_BATCH = 200
DELETE_ROUNDS = 10

_DEFINITION_FIELDS = ("label", "type", "options", "required", "min", "max", "max_length")


class CustomFields:
    """Definitions per store, and customers' values checked against them."""

    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync,
                 clock: Callable[[], datetime] = utcnow,
                 delete_batch: int = DELETE_BATCH, delete_rounds: int = DELETE_ROUNDS) -> None:
        """`delete_batch`: holders read at a time while a deleted field's values go;
        `delete_rounds`: reads a deletion call makes at most."""
        self.storage = storage
        self.sync = sync
        self.clock = clock
        self.delete_batch = delete_batch
        self.delete_rounds = delete_rounds

    # -- definitions ------------------------------------------------------------------------
    def definitions(self, store_id: str, of: str = DEFAULT_APPLIES_TO) -> dict[str, dict]:
        """The store's definitions by key that check the values of `of` ("customer" or
        "company"), as the rules read them."""
        return {d["key"]: d for d in self.storage.custom_fields.all(store_id)
                if applies_to(d) == of}

    def company_definitions(self, store_id: str) -> dict[str, dict]:
        return self.definitions(store_id, "company")

    def list(self, store_id: str) -> list[dict]:
        store_id = require_text(store_id, "store_id")
        return [definition_view(d) for d in self.storage.custom_fields.all(store_id)]

    def create(self, store_id: str, definition: Any, actor: str) -> dict:
        """A new field; Conflict when the key is taken, ValidationError past MAX_FIELDS."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        data = load_definition(definition)
        repo = self.storage.custom_fields
        if repo.count(store_id) >= MAX_FIELDS:
            raise _too_many()
        now = self.clock()
        doc = {**data, "store_id": store_id, "created_at": now, "updated_at": now,
               "created_by": actor, "updated_by": actor}
        if not repo.insert(doc):
            raise Conflict(f"the store has a custom field {data['key']} already",
                           {"fields": {"key": ["taken"]}})
        if repo.count(store_id) > MAX_FIELDS:  # two made at once past the bound: undo ours
            repo.remove(store_id, data["key"])
            raise _too_many()
        return definition_view(doc)

    def update(self, store_id: str, key: str, changes: Any, actor: str) -> dict:
        """Change a definition; its type only while no customer or company has a value, and
        nothing while it is being deleted (else Conflict).
        Values already held stay as they are until they are next written."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        repo = self.storage.custom_fields
        for _ in range(CONFLICT_RETRIES):
            current = self._definition(store_id, key)
            if current.get("deleting"):
                raise Conflict(f"the custom field {current['key']} is being deleted",
                               {"fields": {"key": ["being deleted"]}})
            after = changed_definition(
                {k: current.get(k) for k in ("key", *_DEFINITION_FIELDS)}, changes)
            if after["type"] != current["type"] and repo.values_exist(store_id, current["key"]):
                raise Conflict(f"customers or companies hold values of {current['key']}: its "
                               "type cannot change (delete the field to start again)",
                               {"fields": {"type": ["values exist"]}})
            fields = {k: after[k] for k in _DEFINITION_FIELDS}
            fields.update(updated_at=self.clock(), updated_by=actor)
            if repo.update(store_id, current["key"], current["version"], fields):
                return definition_view({**current, **fields})
        raise Conflict("the custom field kept changing; ask again")

    def delete(self, store_id: str, key: str, actor: str) -> Written:
        """Remove the field and every customer's and company's value of it, each customer's
        removal with its `customer.updated` in the same write, `delete_batch` holders a read,
        at most `delete_rounds` reads a call. The field is marked first and removed last, so
        a call that stops short (a large store, holders that kept changing, a crash) answers
        `finishing` and asking again, or the background sweep, finishes the job."""
        store_id = require_text(store_id, "store_id")
        require_text(actor, "actor")
        current = self._definition(store_id, key)
        if not current.get("deleting"):
            self.storage.custom_fields.mark_deleting(store_id, current["key"])
        removed, touched, done = self.finish_deletion(store_id, current["key"])
        if done:
            return written({"key": current["key"], "deleted": True, "values_removed": removed},
                           touched)
        return written({"key": current["key"], "deleted": False, "finishing": True,
                        "values_removed": removed}, touched)

    def finish_deletion(self, store_id: str, key: str) -> tuple[int, list[DocumentRef], bool]:
        """Take a field being deleted off its holders, a bounded number of batches, and remove
        it once none is left: the values removed, the customers written, and whether the field
        is gone. Stops early when a whole batch changed meanwhile rather than spin."""
        repo = self.storage.custom_fields
        correlation_id = f"staff-field-delete-{uuid.uuid4().hex[:16]}"
        removed, touched = 0, []
        for _ in range(self.delete_rounds):
            holders = repo.holders(store_id, key, self.delete_batch)
            if holders:
                done = [(self.storage.customers.collection.name, doc["_id"]) for doc in holders
                        if self._remove_value(store_id, doc, key, correlation_id)]
                touched += done
            else:
                holders = repo.company_holders(store_id, key, self.delete_batch)
                if not holders:
                    repo.remove(store_id, key)
                    return removed, touched, True
                done = [doc["_id"] for doc in holders if repo.remove_company_value(doc, key)]
            removed += len(done)
            if not done:
                log.warning("a custom field's holders kept changing while it was deleted",
                            extra={"store_id": store_id, "key": key})
                break
        return removed, touched, False

    def sweep(self) -> tuple[bool, list[DocumentRef]]:
        """One bounded step of a field deletion left unfinished (the call stopped short or
        crashed): whether more may be left, and the customers written."""
        for doc in self.storage.custom_fields.deleting(limit=1):
            removed, touched, done = self.finish_deletion(doc["store_id"], doc["key"])
            # No progress (every holder changed meanwhile): wait for the next round, not spin.
            return bool(removed) or done, touched
        return False, []

    def _remove_value(self, store_id: str, doc: dict, key: str, correlation_id: str) -> bool:
        """One customer's value of a field being deleted, gone with its event (a record that
        is not live, merged or deleted, announces nothing); False when the customer changed
        since it was read (the next batch reads it again)."""
        kept = {k: v for k, v in (doc.get(VALUES_FIELD) or {}).items() if k != key}
        events = []
        if doc.get("status") == "active":
            events.append(self.sync._event(
                "customer.updated", store_id,
                {**customer_event_data({**doc, VALUES_FIELD: kept}),
                 "changed_fields": [VALUES_FIELD]},
                correlation_id, doc["_id"], doc["version"], VALUES_FIELD, "deleted", key))
        return self.storage.customers.update(doc["_id"], doc["version"], {VALUES_FIELD: kept},
                                             events, read=doc)

    # -- values -----------------------------------------------------------------------------
    def set_values(self, store_id: str, customer_id: str, values: Any, actor: str) -> Written:
        """Replace the customer's values with `values` (absent or null: no value), checked
        against the store's definitions; nothing is stored unless all of them pass. Publishes
        `customer.updated` naming `custom_fields` when they changed."""
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        customers = self.storage.customers
        correlation_id = f"staff-fields-{uuid.uuid4().hex[:16]}"
        for _ in range(CONFLICT_RETRIES):
            doc = known_customer(self.storage, store_id, customer_id)
            if doc.get("status") != "active":
                raise NotFound(f"no customer {customer_id} in store {store_id}")
            kept = check_values(self.definitions(store_id), values)
            old = doc.get(VALUES_FIELD) or {}
            if kept == old:
                return written({"customer_id": doc["_id"], VALUES_FIELD: old, "changed": False})
            changed = sorted(k for k in {*old, *kept} if old.get(k) != kept.get(k))
            after = {**doc, VALUES_FIELD: kept}
            event = self.sync._event(
                "customer.updated", store_id,
                {**customer_event_data(after), "changed_fields": [VALUES_FIELD]},
                correlation_id, doc["_id"], doc["version"], VALUES_FIELD)
            entry = make_entry(entry_id(doc["_id"], VALUES_FIELD, doc["version"]), doc["_id"],
                               "customer.custom_fields_changed",
                               f"Custom fields changed ({', '.join(changed)})", actor,
                               {"changed_keys": changed}, self.clock())
            if customers.update(doc["_id"], doc["version"], {VALUES_FIELD: kept},
                                [event], entries=[entry]):
                return written({"customer_id": doc["_id"], VALUES_FIELD: kept, "changed": True},
                               [(customers.collection.name, doc["_id"])])
        raise Conflict("the customer kept changing; ask again")

    def _definition(self, store_id: str, key: Any) -> dict:
        key = require_text(key, "key")
        doc = self.storage.custom_fields.get(store_id, key)
        if doc is None:
            raise NotFound(f"no custom field {key[:64]} in store {store_id}")
        return doc


def _too_many() -> ValidationError:
    return ValidationError(f"a store has at most {MAX_FIELDS} custom fields",
                           {"fields": {"key": [f"at most {MAX_FIELDS} fields a store"]}})
