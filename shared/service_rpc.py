"""RPCs (and the GDPR erasure handler) every service answers the same way, as mixins for the
service classes.

A service class that mixes these in needs `name`, `storage` (MongoStorage) and `settings`
(Settings), as every service here has.
"""
from __future__ import annotations

from nameko.rpc import rpc

from shared.customers import not_found
from shared.erasure import confirm_erasure
from shared.errors import EXPECTED_ERRORS
from shared.events import Event
from shared.health import readiness
from shared.messaging.handlers import event_handler
from shared.messaging.parking import ParkedMessages
from shared.outbox import OUTBOX_FIELD
from shared.personal_data import Owners, named_customers, search
from shared.times import iso_everywhere
from shared.tls import amqp_ssl_options


class HealthRpc:
    """Readiness over RPC: `python -m ops.healthcheck NAME` (compose) asks this."""

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def health(self) -> dict:
        return {**readiness(self.settings.get("AMQP_URI"), self.storage.database,
                            amqp_ssl_options(self.settings)),
                "service": self.name}


class DataOwnerRpc(HealthRpc):
    """What the GDPR contract asks of every data-owning service, answered the same way by
    each: forget a person when gdpr asks and confirm with counts, export everything held
    about them, search the whole database for them (the proof), and drop parked messages
    about them.

    A service answers only its own part: `erase_person` (what it forgets, as counts) and
    `export_person` (what it holds, or None). Besides `name`, `storage` and `settings`, it
    needs `outbox` (an OutboxRelayProvider) and `storage.erasures` (shared.erasure's
    ErasureReceipts), in a collection its outbox relay watches."""

    # The queue is per service (`evt-gdpr-gdpr.erasure_requested--<name>.on_erasure_requested`):
    # nameko finds this entrypoint on every class that inherits it and binds it to its own
    # container, so each service still consumes its own copy of the request.
    @event_handler("gdpr", "gdpr.erasure_requested")
    def on_erasure_requested(self, event: Event) -> None:
        """Erase once per request, drop parked messages about the person and owe
        `gdpr.erasure_completed` in the receipt's write (shared.erasure), then publish it."""
        data = event.data
        receipts = self.storage.erasures
        receipt = confirm_erasure(
            self.name, receipts, event,
            lambda: self.erase_person(event.store_id, list(data["customer_ids"]),
                                      data["request_id"], data.get("email")),
            self._drop_parked)
        self.outbox.notify([(receipts.collection.name, receipt)])

    def erase_person(self, store_id: str, customer_ids: list[str], request_id: str,
                     email: str | None) -> dict:
        """Erase or anonymise this service's slice of the person and answer counts per kind
        of record. Must be idempotent: a crash before the receipt is written runs it again.
        `email` finds what is held by address only; a service that names people by id alone
        leaves it."""
        raise NotImplementedError(f"{type(self).__name__} must say how it erases a person")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def export_customer(self, store_id: str, customer_id: str) -> dict:
        """Everything this service holds about one person (GDPR access and portability),
        times as ISO-8601 text; NotFound when it holds nothing about them."""
        held = self.export_person(store_id, customer_id)
        if held is None:
            raise not_found(store_id, customer_id)
        return {"service": self.name, **iso_everywhere(held, drop=(OUTBOX_FIELD,))}

    def export_person(self, store_id: str, customer_id: str) -> dict | None:
        """What this service holds about the person as a dict of JSON values and datetimes
        (the answer's keys after `service`), or None when it holds nothing about them."""
        raise NotImplementedError(f"{type(self).__name__} must say how it exports a person")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def search_personal_data(self, store_id: str, terms: list, tied_terms: list | None = None,
                             customer_ids: list | None = None) -> dict:
        """Every document of this service holding any of the terms (an erasure's proof); a
        phone or a name (`tied_terms`) only where it is about the erased `customer_ids`."""
        return search(self.storage.database, store_id, terms, self.name, tied_terms,
                      customer_ids, self._document_owners())

    def _document_owners(self) -> Owners:
        """Whose each document is; a service that names people otherwise than by
        `customer_id` answers its own."""
        return named_customers

    def _drop_parked(self, matches) -> int:
        """shared.erasure.DropParked for this service's own parked queue."""
        dropped = ParkedMessages(self.settings.get("AMQP_URI"),
                                 amqp_ssl_options(self.settings)).drop_where(
            self.name, lambda parked: matches(parked.body))
        return len(dropped)
