"""MongoDB access: the one place that turns MONGO_URI into a database, and the nameko
dependency provider that hands each worker a service's repositories (never a raw handle).
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Callable, Generic, Protocol, TypeVar

from nameko.extensions import DependencyProvider
from pymongo import MongoClient
from pymongo.database import Database

from shared.config import Config, from_nameko
from shared.container import named_dependencies
from shared.tls import mongo_tls_options

log = logging.getLogger(__name__)

# URI schemes served by a development adapter instead of pymongo, and the module serving each.
# The module is imported only when MONGO_URI names its scheme: the product never loads it
# otherwise, and a production image (which does not ship it) refuses such a URI by name.
ADAPTERS: dict[str, str] = {"mongomock": "devdoubles.mongomock_adapter"}


def adapter(uri: str) -> ModuleType | None:
    """The development adapter serving `uri`, or None for a real MongoDB. Raises ValueError,
    naming MONGO_URI, where the adapter is not installed."""
    scheme = uri.partition("://")[0]
    module = ADAPTERS.get(scheme)
    if module is None:
        return None
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(
            f"MONGO_URI is {scheme}://, served by the development package {module}, which this "
            f"installation lacks ({exc}): use a mongodb:// URI") from exc


def connect(uri: str, **options: object) -> MongoClient:
    """A client for `uri`; a development scheme (`mongomock://`) goes to its adapter.
    `options` are MongoClient's (TLS files: `shared.tls.mongo_tls_options`)."""
    served_by = adapter(uri)
    if served_by is not None:
        return served_by.connect(uri, **options)
    # tz_aware: stored times read back aware. Fail fast at start-up rather than on the first
    # request.
    return MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True, **options)


def service_database(config: Config, service_name: str) -> Database:
    """The database a service owns: one per service, named `<prefix><service>`."""
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


# The attribute names a service's MongoStorage goes by where a provider needing it is not told
# another: `app` where a bootstrap builds the service, `storage` where it holds repositories.
STORAGE_NAMES = ("app", "storage")


def declared_storage(container, name: str | None, needed_by: str) -> MongoStorage:
    """The service's MongoStorage declared as attribute `name` (`app` or `storage` when None).
    Providers that need the service's database take their peer by the name the service gives
    it, so the wiring is written in the service and a second storage is never picked by type."""
    names = (name,) if name else STORAGE_NAMES
    found = named_dependencies(
        container, names, needed_by, one_of=True, what="the service's MongoStorage",
        advice='declare it, or name the attribute that holds it with storage="..."')
    service = container.service_name
    if len(found) > 1:
        raise RuntimeError(
            f"{service}: {needed_by} finds both {' and '.join(repr(n) for n in sorted(found))}: "
            "name the one that holds the service's MongoStorage with storage=\"...\"")
    [(attr, provider)] = found.items()
    if not isinstance(provider, MongoStorage):
        raise RuntimeError(f"{service}: {needed_by} needs attribute {attr!r} to be a "
                           f"MongoStorage, but it is a {type(provider).__name__}")
    return provider
