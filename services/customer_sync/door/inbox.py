"""Applying recorded webhook deliveries after they were answered.

A delivery that cannot be applied (its content refused, or an error on every attempt) is
quarantined, never dropped: WooCommerce will not send it again, so it is kept, counted
(metrics, store and system health) and replayed by an operator once the cause is fixed
(`companion quarantine`, quarantine.py).
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from pymongo.errors import PyMongoError

from services.customer_sync.privacy.anonymise import redact_payload
from services.customer_sync.core.normalise import NormalisationError, parse_body
from services.customer_sync.repository import CustomerSyncStorage, delivery_correlation_id
from services.customer_sync.core.sync import ApplyResult, CustomerSync
from shared.logs import log_context
from shared.metrics import count_quarantined

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 10


class InboxProcessor:
    """Claims one delivery, applies it through the same path as backfill, marks it done."""

    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync) -> None:
        self.storage = storage
        self.sync = sync

    def process(self, key: str) -> ApplyResult | None:
        delivery = self.storage.inbox.claim(key, LEASE)
        if delivery is None:
            return None  # done already, or another worker holds it
        correlation_id = delivery_correlation_id(key)
        with log_context(store_id=delivery["store_id"], correlation_id=correlation_id):
            try:
                payload = delivery_payload(delivery)
                result = self.sync.apply(
                    delivery["store_id"], delivery["resource"], delivery["action"],
                    payload, correlation_id=correlation_id,
                )
            except NormalisationError as exc:
                self._quarantine(delivery, key, str(exc), correlation_id)
                return None
            except PyMongoError:
                log.exception("database error applying a delivery; it will be retried")
                self._fail_safely(key, "database error", retry=True,
                                  attempts=delivery.get("attempts", 1))
                return None
            except Exception as exc:  # a bug must not lose the delivery: retry, then quarantine
                log.exception("applying a delivery failed (attempt %s)", delivery.get("attempts"))
                error = f"{type(exc).__name__}: {exc}"
                if delivery.get("attempts", 1) < MAX_ATTEMPTS:
                    self.storage.inbox.fail(key, error, retry=True,
                                            attempts=delivery.get("attempts", 1))
                else:
                    self._quarantine(delivery, key, error, correlation_id)
                return None
            redacted = None
            if result.personal_data_dropped:
                # About an erased person: keep the delivery (duplicates stay recognised), not
                # what it said about them.
                redacted = json.dumps(redact_payload(delivery["resource"], payload))
            self.storage.inbox.finish(key, result.outcome, redacted)
            log.info("applied %s %s: %s", delivery["topic"], delivery["resource_id"], result.outcome,
                     extra={"events": result.events})
            return result

    def _quarantine(self, delivery: dict, key: str, error: str, correlation_id: str) -> None:
        """Keep the delivery for an operator; its quarantine id is the correlation id its log
        lines carry."""
        log.error("delivery quarantined as %s: %s", correlation_id, error)
        self.storage.inbox.fail(key, error, retry=False, quarantine_id=correlation_id)
        count_quarantined(delivery["store_id"])

    def _fail_safely(self, key: str, error: str, retry: bool, attempts: int) -> None:
        try:
            self.storage.inbox.fail(key, error, retry=retry, attempts=attempts)
        except PyMongoError:
            pass  # the lease expires and the sweep picks the delivery up again


def delivery_payload(delivery: dict) -> dict:
    """The JSON body of a recorded delivery, read as the door read it."""
    return parse_body(delivery["body"])
