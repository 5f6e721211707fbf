"""MongoDB access: the one place that turns MONGO_URI into a database, and the nameko
dependency provider that hands each worker a service's repositories (never a raw handle).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, Protocol, TypeVar

from nameko.extensions import DependencyProvider
from pymongo import MongoClient
from pymongo.database import Database

from shared.config import Config, from_nameko

log = logging.getLogger(__name__)

MOCK_SCHEME = "mongomock://"
_mock_clients: dict[str, object] = {}
_mock_lock = threading.Lock()


def connect(uri: str, **options: object) -> MongoClient:
    """A client for `uri`. `mongomock://NAME` gives the in-memory server NAME, shared by every
    caller in this process (so a test and the services it starts see the same data).
    `options` are MongoClient's (TLS files: `shared.tls.mongo_tls_options`)."""
    if uri.startswith(MOCK_SCHEME):
        import mongomock

        from shared.mongomock_speedups import install

        install()
        name = uri[len(MOCK_SCHEME):].strip("/") or "default"
        with _mock_lock:
            if name not in _mock_clients:
                log.warning("using the in-memory database %r: its data is lost at exit", name)
                # tz_aware as the real client below, so times read back the same way
                _mock_clients[name] = mongomock.MongoClient(tz_aware=True)
            return _mock_clients[name]  # type: ignore[return-value]
    # Fail fast at start-up rather than on the first request.
    return MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True, **options)


def forget_mock(uri: str) -> None:
    """Drop an in-memory server (tests use a fresh one each)."""
    if uri.startswith(MOCK_SCHEME):
        with _mock_lock:
            _mock_clients.pop(uri[len(MOCK_SCHEME):].strip("/") or "default", None)


def is_mock(uri: str) -> bool:
    return uri.startswith(MOCK_SCHEME)


def service_database(config: Config, service_name: str) -> Database:
    """The database a service owns: one per service, named `<prefix><service>`."""
    from shared.tls import mongo_tls_options

    client = connect(config.get("MONGO_URI"), **mongo_tls_options(config))
    return client[f"{config.get('MONGO_DB_PREFIX')}{service_name}"]


def ping(database: Database) -> bool:
    """Whether the database answers; readiness checks use it."""
    try:
        database.command("ping")
        return True
    except Exception:  # any driver error means "not ready"
        return False


class HasIndexes(Protocol):
    def ensure_indexes(self) -> None: ...


R = TypeVar("R", bound=HasIndexes)


class MongoStorage(DependencyProvider, Generic[R]):
    """Gives workers the service's repository bundle, built once from its own database.

    `factory` takes the service's `Database` and its `Config` and returns an object whose
    `ensure_indexes()` is called at start-up; entrypoints see only that object.
    """

    def __init__(self, factory: Callable[[Database, Config], R]) -> None:
        self.factory = factory
        self.database: Database | None = None
        self.repositories: R | None = None

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.database = service_database(config, self.container.service_name)
        self.repositories = self.factory(self.database, config)
        self.repositories.ensure_indexes()

    def get_dependency(self, worker_ctx) -> R:
        assert self.repositories is not None
        return self.repositories
