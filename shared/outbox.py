"""The transactional outbox without transactions.

A service records the events it owes *in the same document write* as the state change that
caused them (an `outbox` array on that document), so a crash can never separate the two. The
relay publishes pending entries with publisher confirms and then pulls them off; after a crash
the periodic sweep re-publishes whatever is still there. Event ids are stable, so a
re-publish is deduplicated by consumers.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable

from pymongo import ASCENDING
from pymongo.collection import Collection

from shared import metrics
from shared.events import Event, contract
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, events_exchange
from shared.times import utcnow

log = logging.getLogger(__name__)

OUTBOX_FIELD = "outbox"


def outbox_entry(event: Event) -> dict:
    """What is stored per owed event: its envelope and where it goes."""
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "exchange": events_exchange(contract(event.event_type, event.schema_version).source),
        "message": event.to_message(),
        "created_at": utcnow(),
    }


def push_events(events: Iterable[Event]) -> dict:
    """The `$push` clause that appends events to a document's outbox in an update."""
    entries = [outbox_entry(e) for e in events]
    return {OUTBOX_FIELD: {"$each": entries}} if entries else {}


class OutboxRelay:
    """Publishes what the given collections' documents owe, oldest documents first."""

    def __init__(
        self,
        collections: Iterable[Collection],
        publisher: ConfirmingPublisher,
        batch_size: int = 200,
        service: str = "",
    ) -> None:
        self.collections = list(collections)
        self.publisher = publisher
        self.batch_size = batch_size
        self.service = service  # the `service` label of the outbox metrics

    def ensure_indexes(self) -> None:
        for collection in self.collections:
            collection.create_index([(f"{OUTBOX_FIELD}.event_id", ASCENDING)], sparse=True)

    def publish_documents(self, refs: Iterable[tuple[str, Any]]) -> int:
        """Fast path right after writes: publish what the named documents owe, every
        collection's in one confirmed batch (one wait for the broker, not one per collection):
        collections in the order `refs` first names them, each one's documents in the order
        named. `refs` are (collection name, _id) pairs."""
        by_name = {c.name: c for c in self.collections}
        grouped: dict[str, list] = {}
        for name, doc_id in refs:
            grouped.setdefault(name, []).append(doc_id)
        owed: list[tuple[Collection, list[dict]]] = []
        for name, ids in grouped.items():
            collection = by_name[name]
            wanted = list(dict.fromkeys(ids))
            found = {doc["_id"]: doc for doc in collection.find(
                {"_id": {"$in": wanted}, f"{OUTBOX_FIELD}.event_id": {"$exists": True}},
                {OUTBOX_FIELD: 1})}
            docs = [found[i] for i in wanted if i in found]
            if docs:
                owed.append((collection, docs))
        return self._publish(owed)

    def publish_pending(self, limit: int | None = None,
                        older_than: datetime | None = None) -> int:
        """Sweep: publish everything still owed (after a crash or a broker outage). With
        `older_than`, only documents owing an entry written before then: a younger one is
        most likely on its way out through its writer's fast path, in another instance too."""
        query: dict = {f"{OUTBOX_FIELD}.event_id": {"$exists": True}}
        if older_than is not None:
            query[f"{OUTBOX_FIELD}.created_at"] = {"$lt": older_than}
        published = 0
        for collection in self.collections:
            while limit is None or published < limit:
                docs = list(collection.find(query, {OUTBOX_FIELD: 1}).limit(self.batch_size))
                if not docs:
                    break
                count = self._publish([(collection, docs)])
                published += count
                if count == 0:
                    break
        return published

    def _publish(self, owed: list[tuple[Collection, list[dict]]]) -> int:
        """Publish the documents' entries, confirmed a batch at a time, and pull each batch's
        published entries from their documents (one update per collection and batch)."""
        entries: list[tuple[Collection, Any, dict]] = [
            (collection, doc["_id"], entry)
            for collection, docs in owed for doc in docs for entry in doc.get(OUTBOX_FIELD, [])
        ]
        done = 0
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start : start + self.batch_size]
            try:
                self.publisher.publish_batch(
                    [
                        OutgoingMessage(
                            exchange=entry["exchange"],
                            routing_key=entry["event_type"],
                            body=entry["message"],
                            message_id=entry["event_id"],
                        )
                        for _, _, entry in chunk
                    ]
                )
            except Exception:
                metrics.count_publish_failure(self.service, len(chunk))
                raise
            metrics.count_published(self.service, (entry["event_type"] for _, _, entry in chunk))
            by_collection: dict[str, tuple[Collection, list, list]] = {}
            for collection, doc_id, entry in chunk:
                _, doc_ids, event_ids = by_collection.setdefault(
                    collection.name, (collection, [], []))
                doc_ids.append(doc_id)
                event_ids.append(entry["event_id"])
            for collection, doc_ids, event_ids in by_collection.values():
                # Event ids are unique, so one update removes every published entry.
                collection.update_many(
                    {"_id": {"$in": list(dict.fromkeys(doc_ids))}},
                    {"$pull": {OUTBOX_FIELD: {"event_id": {"$in": event_ids}}}},
                )
            done += len(chunk)
        return done
