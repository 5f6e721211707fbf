"""Staff reminders about a customer ("call back on Friday"): open until completed, listed by
when they are due, per customer or store-wide. Each add, completion and deletion puts an entry
on the customer's timeline in the same write. A deleted reminder loses its text (soft delete);
a GDPR erasure deletes the person's reminders outright (privacy/erasure.py).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Protocol

from marshmallow import RAISE, Schema, fields, validate
from pymongo import ASCENDING

from services.customer_sync.crm.notes import _Text
from services.customer_sync.core.written import Written, written
from services.customer_sync.schemas import load, require_text
from services.customer_sync.crm.timeline import (TIMELINE_FIELD, TimelineOwing, entry_id, known_customer,
                                             make_entry)
from shared.errors import Conflict, NotFound
from shared.events.fields import UtcDateTime
from shared.outbox import OUTBOX_FIELD
from shared.versioned import VersionedRepository
from shared.times import iso, utcnow_ms

STATUSES = ("open", "done")
MAX_TEXT = 2000
MAX_LISTED = 1000
# Fewer tries than shared.conflicts.CONFLICT_RETRIES: a staff member waits on the answer, and
# a Conflict asks them to try again rather than spinning for a queue that retries later.
_MAX_RETRIES = 10




class ReminderSchema(Schema):
    class Meta:
        unknown = RAISE

    due_at = UtcDateTime(required=True, format="iso")
    text = _Text(required=True, validate=validate.Length(min=1, max=MAX_TEXT))
    assignee = fields.String(load_default=None, allow_none=True,
                             validate=validate.Length(min=1, max=200))


class ReminderFilterSchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(STATUSES))
    due_before = UtcDateTime(load_default=None, allow_none=True, format="iso")


class ReminderRepository(TimelineOwing, VersionedRepository):
    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("status", ASCENDING),
                                      ("due_at", ASCENDING)])
        self.collection.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING),
                                      ("due_at", ASCENDING)])

    def get(self, store_id: str, reminder_id: str) -> dict | None:
        return self.collection.find_one(
            {"_id": reminder_id, "store_id": store_id, "status": {"$in": list(STATUSES)}},
            {OUTBOX_FIELD: 0, TIMELINE_FIELD: 0})

    def find(self, store_id: str, customer_id: str | None, status: str | None,
             due_before: datetime | None, limit: int) -> list[dict]:
        query: dict = {"store_id": store_id,
                       "status": status if status is not None else {"$in": list(STATUSES)}}
        if customer_id is not None:
            query["customer_id"] = customer_id
        if due_before is not None:
            query["due_at"] = {"$lt": due_before}
        return list(self.collection.find(query, {OUTBOX_FIELD: 0, TIMELINE_FIELD: 0})
                    .sort([("due_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def forget(self, store_id: str, customer_ids: list[str]) -> int:
        return self.collection.delete_many(
            {"store_id": store_id, "customer_id": {"$in": customer_ids}}).deleted_count


def reminder_view(doc: dict) -> dict:
    return {"reminder_id": doc["_id"], "customer_id": doc["customer_id"],
            "due_at": iso(doc["due_at"]), "text": doc["text"], "assignee": doc.get("assignee"),
            "status": doc["status"], "created_by": doc["created_by"],
            "created_at": iso(doc["created_at"]), "completed_at": iso(doc.get("completed_at")),
            "completed_by": doc.get("completed_by")}


class ReminderStorage(Protocol):
    """What the reminders use of customer_sync's storage, named here so that this module need
    not import the repository module, which imports this one."""
    customers: Any
    reminders: "ReminderRepository"


class Reminders:
    def __init__(self, storage: ReminderStorage, clock=utcnow_ms) -> None:
        self.storage = storage
        self.clock = clock

    def add(self, store_id: str, customer_id: str, reminder: Any, actor: str) -> Written:
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        data = load(ReminderSchema(), reminder, "reminder")
        customer = known_customer(self.storage, store_id, customer_id)
        now = self.clock()
        reminder_id = uuid.uuid4().hex
        due = data["due_at"].astimezone(timezone.utc)
        doc = {"_id": reminder_id, "store_id": store_id, "customer_id": customer["_id"],
               "due_at": due, "text": data["text"], "assignee": data.get("assignee"),
               "status": "open", "created_by": actor, "created_at": now,
               "completed_at": None, "completed_by": None}
        entry = make_entry(entry_id(reminder_id, "added"), customer["_id"], "reminder.added",
                           f"Reminder set for {due.isoformat()}", actor,
                           {"reminder_id": reminder_id, "due_at": due.isoformat(),
                            "assignee": data.get("assignee")}, now)
        self.storage.reminders.insert(doc, [], entries=[entry])
        return self._written(reminder_view(doc), reminder_id)

    def list(self, store_id: str, customer_id: str | None = None, status: str | None = "open",
             due_before: str | None = None) -> list[dict]:
        store_id = require_text(store_id, "store_id")
        criteria = load(ReminderFilterSchema(), {"status": status, "due_before": due_before},
                        "filters")
        if customer_id is not None:
            customer_id = known_customer(self.storage, store_id, customer_id)["_id"]
        docs = self.storage.reminders.find(store_id, customer_id, criteria["status"],
                                           criteria["due_before"], MAX_LISTED)
        return [reminder_view(d) for d in docs]

    def complete(self, store_id: str, reminder_id: str, actor: str) -> Written:
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        reminder_id = require_text(reminder_id, "reminder_id")
        for _ in range(_MAX_RETRIES):
            doc = self._reminder(store_id, reminder_id)
            if doc["status"] == "done":
                return written(reminder_view(doc))  # asked twice: done once
            now = self.clock()
            fields_ = {"status": "done", "completed_at": now, "completed_by": actor}
            entry = make_entry(entry_id(reminder_id, "completed"), doc["customer_id"],
                               "reminder.completed", "Reminder completed", actor,
                               {"reminder_id": reminder_id}, now)
            if self.storage.reminders.update(reminder_id, doc["version"], fields_, entries=[entry]):
                return self._written(reminder_view({**doc, **fields_}), reminder_id)
        raise Conflict("the reminder kept changing; ask again")

    def delete(self, store_id: str, reminder_id: str, actor: str) -> Written:
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        reminder_id = require_text(reminder_id, "reminder_id")
        for _ in range(_MAX_RETRIES):
            doc = self._reminder(store_id, reminder_id)
            now = self.clock()
            entry = make_entry(entry_id(reminder_id, "deleted"), doc["customer_id"],
                               "reminder.deleted", "Reminder deleted", actor,
                               {"reminder_id": reminder_id}, now)
            if self.storage.reminders.update(reminder_id, doc["version"],
                                             {"status": "deleted", "deleted_at": now,
                                              "deleted_by": actor},
                                             unset=["text"], entries=[entry]):
                return self._written({"reminder_id": reminder_id,
                                      "customer_id": doc["customer_id"], "deleted": True},
                                     reminder_id)
        raise Conflict("the reminder kept changing; ask again")

    def _written(self, answer: dict, reminder_id: str) -> Written:
        """The answer, and the reminder whose timeline entry the write owes."""
        return written(answer, [(self.storage.reminders.collection.name, reminder_id)])

    def _reminder(self, store_id: str, reminder_id: str) -> dict:
        doc = self.storage.reminders.get(store_id, reminder_id)
        if doc is None:
            raise NotFound(f"no reminder {reminder_id} in store {store_id}")
        return doc
