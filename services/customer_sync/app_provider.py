"""customer_sync's application as a nameko dependency: built once (bootstrap.py), its one publish
path wired to the service's outbox relay before anything starts, so entrypoints, inbox workers
and backfills publish through the same relay without holding it themselves."""
from __future__ import annotations

from services.customer_sync.bootstrap import CustomerSyncApp, build
from shared.container import named_dependencies
from shared.mongo import MongoStorage


class AppProvider(MongoStorage):
    """`MongoStorage(build)` whose app's `publish` notifies the relay the service declares as
    attribute `outbox`."""

    def __init__(self, outbox: str = "outbox") -> None:
        super().__init__(build)
        self.outbox_name = outbox

    def setup(self) -> None:
        super().setup()
        relay = named_dependencies(self.container, [self.outbox_name], "its app's publish",
                                   what="an outbox relay")[self.outbox_name]
        # The relay's notify only queues refs for its own thread: safe to hand out before it
        # starts, and every provider is set up before any starts.
        app: CustomerSyncApp = self.repositories
        app.wire_outbox(relay.notify)
