"""The in-memory MongoDB behind `MONGO_URI=mongomock://NAME`, loaded by `shared.mongo.connect`
only when the URI asks for it.

Every client is tz-aware, as production's pymongo client is, so stored times read back aware
whichever database a test or a service runs on; and mongomock gets the speed-ups of
`devdoubles.mongomock_speedups` before any client is made.
"""
from __future__ import annotations

import logging
import threading

import mongomock

from devdoubles import mongomock_speedups

log = logging.getLogger(__name__)

SCHEME = "mongomock://"
# What the service runner says at start-up about a database served here.
DESCRIPTION = "data lives in memory and is lost at exit"

_servers: dict[str, mongomock.MongoClient] = {}
_lock = threading.Lock()


def _name(uri: str) -> str:
    return uri[len(SCHEME):].strip("/") or "default"


def client() -> mongomock.MongoClient:
    """A private in-memory server, configured as the services' ones (tests' own databases)."""
    mongomock_speedups.install()
    return mongomock.MongoClient(tz_aware=True)


def connect(uri: str, **options: object) -> mongomock.MongoClient:
    """The in-memory server NAME of `mongomock://NAME`, shared by every caller in this process
    (so a test and the services it starts see the same data). There is no connection, so TLS
    options are refused rather than ignored: MONGO_TLS_* files set with it are a mistake."""
    if options:
        raise ValueError(f"MONGO_TLS_* files are set but MONGO_URI is mongomock:// (in memory, "
                         f"no connection to secure): {sorted(options)}")
    name = _name(uri)
    with _lock:
        if name not in _servers:
            log.warning("using the in-memory database %r: its data is lost at exit", name)
            _servers[name] = client()
        return _servers[name]


def forget(uri: str) -> None:
    """Drop the in-memory server of `uri`, so the next connect starts empty (tests use a fresh
    one each)."""
    with _lock:
        _servers.pop(_name(uri), None)
