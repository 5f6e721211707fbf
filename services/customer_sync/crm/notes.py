"""Staff notes about a customer: categorised free text, with an entry on the timeline for each
add, edit and delete (in the same write as the note).

A deleted note keeps its id and dates but loses its text (a soft delete: the "deleted" entry
rides on it, and nothing of what it said stays). Notes are free text about a person, so a GDPR
erasure deletes them outright (privacy/erasure.py).
"""
from __future__ import annotations

import uuid
from typing import Any, Protocol

from marshmallow import RAISE, Schema, fields, validate, ValidationError as MarshmallowError
from pymongo import ASCENDING, DESCENDING

from services.customer_sync.core.written import Written, written
from services.customer_sync.schemas import load, require_text
from services.customer_sync.crm.timeline import (TIMELINE_FIELD, TimelineOwing, entry_id, known_customer,
                                             make_entry)
from shared.errors import Conflict, NotFound, ValidationError
from shared.outbox import OUTBOX_FIELD
from shared.versioned import VersionedRepository
from shared.times import iso, utcnow_ms

CATEGORIES = ("general", "follow-up", "complaint", "feedback", "meeting", "phone-call", "internal")
MAX_TEXT = 10_000
# Fewer tries than shared.conflicts.CONFLICT_RETRIES: a staff member waits on the answer, and
# a Conflict asks them to try again rather than spinning for a queue that retries later.
_MAX_RETRIES = 10


class _Text(fields.String):
    """Text that must say something (not only blanks)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            raise MarshmallowError("must not be blank")
        return text


class NoteSchema(Schema):
    class Meta:
        unknown = RAISE

    category = fields.String(required=True, validate=validate.OneOf(CATEGORIES))
    text = _Text(required=True, validate=validate.Length(min=1, max=MAX_TEXT))


class NoteChangesSchema(Schema):
    class Meta:
        unknown = RAISE

    category = fields.String(validate=validate.OneOf(CATEGORIES))
    text = _Text(validate=validate.Length(min=1, max=MAX_TEXT))


class NoteRepository(TimelineOwing, VersionedRepository):
    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("customer_id", ASCENDING),
                                      ("created_at", DESCENDING)])

    def get(self, store_id: str, note_id: str) -> dict | None:
        return self.collection.find_one({"_id": note_id, "store_id": store_id, "status": "active"},
                                        {OUTBOX_FIELD: 0, TIMELINE_FIELD: 0})

    def for_customer(self, store_id: str, customer_id: str, category: str | None) -> list[dict]:
        query: dict = {"store_id": store_id, "customer_id": customer_id, "status": "active"}
        if category is not None:
            query["category"] = category
        return list(self.collection.find(query, {OUTBOX_FIELD: 0, TIMELINE_FIELD: 0})
                    .sort([("created_at", DESCENDING), ("_id", DESCENDING)]))

    def forget(self, store_id: str, customer_ids: list[str]) -> int:
        return self.collection.delete_many(
            {"store_id": store_id, "customer_id": {"$in": customer_ids}}).deleted_count


def note_view(doc: dict) -> dict:
    return {"note_id": doc["_id"], "customer_id": doc["customer_id"],
            "category": doc["category"], "text": doc["text"], "author": doc["author"],
            "created_at": iso(doc["created_at"]), "updated_at": iso(doc["updated_at"])}


class NoteStorage(Protocol):
    """What the notes use of customer_sync's storage, named here so that this module need not
    import the repository module, which imports this one."""
    customers: Any
    notes: "NoteRepository"


class Notes:
    def __init__(self, storage: NoteStorage, clock=utcnow_ms) -> None:
        self.storage = storage
        self.clock = clock

    def add(self, store_id: str, customer_id: str, note: Any, actor: str) -> Written:
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        data = load(NoteSchema(), note, "note")
        customer = known_customer(self.storage, store_id, customer_id)
        now = self.clock()
        note_id = uuid.uuid4().hex
        doc = {"_id": note_id, "store_id": store_id, "customer_id": customer["_id"],
               "category": data["category"], "text": data["text"], "author": actor,
               "created_at": now, "updated_at": now, "status": "active"}
        entry = make_entry(entry_id(note_id, "added"), customer["_id"], "note.added",
                           f"Note added ({data['category']})", actor,
                           {"note_id": note_id, "category": data["category"]}, now)
        self.storage.notes.insert(doc, [], entries=[entry])
        return self._written(note_view(doc), note_id)

    def list(self, store_id: str, customer_id: str, category: str | None = None) -> list[dict]:
        store_id = require_text(store_id, "store_id")
        if category is not None and category not in CATEGORIES:
            raise ValidationError(f"category must be one of {', '.join(CATEGORIES)}",
                                  {"fields": {"category": ["unknown category"]}})
        customer = known_customer(self.storage, store_id, customer_id)
        return [note_view(d) for d in self.storage.notes.for_customer(store_id, customer["_id"],
                                                                       category)]

    def update(self, store_id: str, note_id: str, changes: Any, actor: str) -> Written:
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        note_id = require_text(note_id, "note_id")
        data = load(NoteChangesSchema(), changes, "changes")
        if not data:
            raise ValidationError("changes must name category or text",
                                  {"fields": {"changes": ["empty"]}})
        for _ in range(_MAX_RETRIES):
            doc = self._note(store_id, note_id)
            changed = sorted(k for k, v in data.items() if doc.get(k) != v)
            if not changed:
                return written(note_view(doc))
            now = self.clock()
            fields_ = {**data, "updated_at": now, "updated_by": actor}
            entry = make_entry(entry_id(note_id, "edited", doc["version"]), doc["customer_id"],
                               "note.edited", f"Note edited ({', '.join(changed)})", actor,
                               {"note_id": note_id, "category": data.get("category", doc["category"]),
                                "changed_fields": changed}, now)
            if self.storage.notes.update(note_id, doc["version"], fields_, entries=[entry]):
                return self._written(note_view({**doc, **fields_}), note_id)
        raise Conflict("the note kept changing; ask again")

    def delete(self, store_id: str, note_id: str, actor: str) -> Written:
        store_id, actor = require_text(store_id, "store_id"), require_text(actor, "actor")
        note_id = require_text(note_id, "note_id")
        for _ in range(_MAX_RETRIES):
            doc = self._note(store_id, note_id)
            now = self.clock()
            entry = make_entry(entry_id(note_id, "deleted"), doc["customer_id"], "note.deleted",
                               f"Note deleted ({doc['category']})", actor,
                               {"note_id": note_id, "category": doc["category"]}, now)
            if self.storage.notes.update(note_id, doc["version"],
                                         {"status": "deleted", "deleted_at": now,
                                          "deleted_by": actor, "updated_at": now},
                                         unset=["text"], entries=[entry]):
                return self._written({"note_id": note_id, "customer_id": doc["customer_id"],
                                      "deleted": True}, note_id)
        raise Conflict("the note kept changing; ask again")

    def _written(self, answer: dict, note_id: str) -> Written:
        """The answer, and the note whose timeline entry the write owes."""
        return written(answer, [(self.storage.notes.collection.name, note_id)])

    def _note(self, store_id: str, note_id: str) -> dict:
        doc = self.storage.notes.get(store_id, note_id)
        if doc is None:
            raise NotFound(f"no note {note_id} in store {store_id}")
        return doc
