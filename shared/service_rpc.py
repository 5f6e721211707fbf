"""RPCs every service answers the same way, as mixins for the service classes.

A service class that mixes these in needs `name`, `storage` (MongoStorage) and `settings`
(Settings), as every service here has.
"""
from __future__ import annotations

from nameko.rpc import rpc

from shared.errors import EXPECTED_ERRORS
from shared.health import readiness
from shared.messaging.parking import ParkedMessages
from shared.personal_data import Owners, named_customers, search
from shared.tls import amqp_ssl_options


class HealthRpc:
    """Readiness over RPC: `python -m ops.healthcheck NAME` (compose) asks this."""

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def health(self) -> dict:
        return {**readiness(self.settings.get("AMQP_URI"), self.storage.database,
                            amqp_ssl_options(self.settings)),
                "service": self.name}


class DataOwnerRpc(HealthRpc):
    """What the GDPR contract asks of a data-owning service besides its own erasure: search
    its whole database for a person (the proof), and drop its parked messages about them."""

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
