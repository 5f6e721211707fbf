"""A MongoDB stand-in that speaks the wire protocol, backed by mongomock: a real TCP server that
the real pymongo driver talks to, so a database outlives the processes that use it.

Why: the system tests run every service as its own OS process. With `MONGO_URI=mongomock://`
each process keeps its database in its own memory, and a `kill -9` would take the service's
data with it. No MongoDB server can be installed on the machines here; this one holds every
database in one process that the tests never kill, and the services reach it through pymongo
exactly as they would reach mongod (`MONGO_URI=mongodb://127.0.0.1:PORT`).

    python -m tests.fakes.mongo_server --port 27018      # prints "mongo_server ready on ..."

or in-process: `MongoWireServer(port=0).start()` and its `.uri`.

What it speaks:

* OP_MSG (2013): flagBits, a kind-0 body and kind-1 document sequences (`documents`,
  `updates`, `deletes`), an optional checksum (skipped, not verified). With `moreToCome` set
  (w=0 writes) the command runs and nothing is answered. `exhaustAllowed` is accepted and not
  used: every reply is a plain one, which the protocol allows (the driver then sends getMore).
* OP_QUERY (2004) on `<db>.$cmd` for the driver's first handshake, answered with OP_REPLY (1).
  No compression is advertised, so none is used.
* As a standalone server, maxWireVersion 17 (MongoDB 6.0): sessions exist (the driver sends
  `lsid`, ignored), retryable writes and transactions do not (the driver uses neither against a
  standalone). No authentication, no TLS.

Commands: hello/isMaster/ismaster, ping, buildInfo, endSessions, listDatabases,
listCollections, create, drop, dropDatabase, find (filter, sort, projection, skip, limit,
batchSize, singleBatch; hint ignored) with cursors, getMore, killCursors, insert, update (update
operators, replacement, pipeline; upsert, multi), delete (limit 0/1), findAndModify, aggregate,
count, distinct, createIndexes, listIndexes, dropIndexes. Anything else answers
`CommandNotFound` (59). Write concerns and read concerns are accepted and ignored: every write is
applied in memory before it is answered. A lock serialises commands; each connection has its own
thread.

Errors reach the driver as a server's would: a write that breaks a unique index is a
`writeErrors` entry with code 11000 (pymongo raises DuplicateKeyError or BulkWriteError), an
ordered batch stops at its first error, findAndModify's duplicate is a command error 11000, and
other mongomock failures are `ok: 0` with their code.

Where it differs from MongoDB (mongomock's limits show through; none matters to this project's
queries, which its storage tests check against this server):

* duplicate-key errors do not name the index: no `keyPattern`/`keyValue`, a generic errmsg;
* mongomock's query language: no `$text`, `$where`, collation, `arrayFilters` (answered as an
  error), no `$jsonSchema` validation; aggregation stages as far as mongomock has them;
* mongomock failures without a code answer code 2 (BadValue), unsupported features 115
  (CommandNotSupported), where MongoDB would have accepted the command;
* a cursor reads mongomock lazily, so a document changed between batches is seen as changed (as
  in MongoDB) but no snapshot isolation is promised either way; idle cursors die after 10
  minutes, as in MongoDB;
* TTL indexes expire on access (mongomock), not by a background monitor every 60 s;
* a collection left with neither documents nor secondary indexes stops being listed
  (mongomock), where MongoDB keeps it until dropped;
* `listDatabases` sizes are 0; there is no `collStats`/`dbStats`/`serverStatus`;
* data lives in memory only: stopping the server loses it (killing its clients does not).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from devdoubles import mongomock_adapter

log = logging.getLogger(__name__)

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
CHECKSUM_PRESENT, MORE_TO_COME, EXHAUST_ALLOWED = 1 << 0, 1 << 1, 1 << 16
MAX_BSON_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH = 100_000
DEFAULT_FIRST_BATCH = 101
CURSOR_IDLE_SECONDS = 600
MAX_WIRE_VERSION = 17  # MongoDB 6.0

# Decode what the driver sent without reinterpreting it: UUIDs stay Binary (the driver chose
# their subtype), times are aware UTC as the project's clients read them, out-of-range times
# survive as DatetimeMS.
DECODE = CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED,
                      datetime_conversion=DatetimeConversion.DATETIME_AUTO)
ENCODE = CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED)

# Fields of a command that say how to run it, not what to do: sessions, cluster time, read
# preference, write/read concern, API version. Accepted and ignored (see the module doc).
_GENERIC = {"$db", "lsid", "$clusterTime", "$readPreference", "writeConcern", "readConcern",
            "txnNumber", "autocommit", "startTransaction", "apiVersion", "apiStrict",
            "apiDeprecationErrors", "comment", "maxTimeMS", "$query"}

_CODE_NAMES = {2: "BadValue", 11000: "DuplicateKey", 26: "NamespaceNotFound",
               27: "IndexNotFound", 43: "CursorNotFound", 48: "NamespaceExists",
               59: "CommandNotFound", 85: "IndexOptionsConflict", 115: "CommandNotSupported",
               14: "TypeMismatch", 9: "FailedToParse"}


class CommandError(Exception):
    """An `ok: 0` answer."""

    def __init__(self, code: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg

    def reply(self) -> dict:
        return {"ok": 0.0, "errmsg": self.errmsg, "code": self.code,
                "codeName": _CODE_NAMES.get(self.code, "UnknownError")}


def _error_code(exc: BaseException) -> int:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code:
        return code
    if isinstance(exc, NotImplementedError):
        return 115
    return 2


def _command_error(exc: BaseException) -> CommandError:
    from pymongo.errors import CollectionInvalid

    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, CollectionInvalid):
        return CommandError(48, str(exc))
    return CommandError(_error_code(exc), f"{type(exc).__name__}: {exc}")


def _write_error(index: int, exc: BaseException) -> dict:
    code = _error_code(exc)
    if code == 11000:
        message = "E11000 duplicate key error (mongo_server: the index is not named)"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return {"index": index, "code": code, "errmsg": message}


class _Cursor:
    def __init__(self, cursor_id: int, ns: str, documents: Iterator[dict],
                 limit: int = 0) -> None:
        self.id = cursor_id
        self.ns = ns
        self.documents = documents
        self.left = limit or None  # documents still owed, when a limit applies
        self.used = time.monotonic()


class MongoWire:
    """The commands, over one mongomock client: transport-free, so tests can call `run`."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            client = mongomock_adapter.client()
        self.client = client
        self.lock = threading.RLock()
        self.cursors: dict[int, _Cursor] = {}
        self.connections = itertools.count(1)
        self.commands: dict[str, Callable[[str, dict], dict]] = {
            "hello": self._hello, "ismaster": self._hello, "isMaster": self._hello,
            "ping": lambda db, cmd: {}, "buildInfo": self._build_info,
            "buildinfo": self._build_info, "endSessions": lambda db, cmd: {},
            "listDatabases": self._list_databases, "listCollections": self._list_collections,
            "create": self._create, "drop": self._drop, "dropDatabase": self._drop_database,
            "find": self._find, "getMore": self._get_more, "killCursors": self._kill_cursors,
            "insert": self._insert, "update": self._update, "delete": self._delete,
            "findAndModify": self._find_and_modify, "findandmodify": self._find_and_modify,
            "aggregate": self._aggregate, "count": self._count, "distinct": self._distinct,
            "createIndexes": self._create_indexes, "listIndexes": self._list_indexes,
            "dropIndexes": self._drop_indexes, "deleteIndexes": self._drop_indexes,
        }

    # ------------------------------------------------------------------ dispatch
    def run(self, db: str, command: dict) -> dict:
        """One command's answer (always a document with `ok`)."""
        if not command:
            return CommandError(59, "no command given").reply()
        name = next(iter(command))
        handler = self.commands.get(name)
        if handler is None:
            return CommandError(59, f"no such command: '{name}'").reply()
        try:
            with self.lock:
                self._expire_cursors()
                answer = handler(db, command)
        except Exception as exc:  # every failure is an answer, never a dropped connection
            if not isinstance(exc, CommandError):
                log.debug("command %s failed", name, exc_info=True)
            return _command_error(exc).reply()
        answer.setdefault("ok", 1.0)
        return answer

    def _collection(self, db: str, command: dict, name: str) -> Any:
        coll = command.get(name)
        if not isinstance(coll, str) or not coll:
            raise CommandError(2, f"collection name has invalid type {type(coll).__name__}")
        return self.client[db][coll]

    # ------------------------------------------------------------------ handshake and admin
    def _hello(self, db: str, command: dict) -> dict:
        answer = {
            "helloOk": True, "isWritablePrimary": True, "ismaster": True,
            "maxBsonObjectSize": MAX_BSON_SIZE, "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": MAX_WRITE_BATCH, "localTime": datetime.now(timezone.utc),
            "logicalSessionTimeoutMinutes": 30, "connectionId": next(self.connections),
            "minWireVersion": 0, "maxWireVersion": MAX_WIRE_VERSION, "readOnly": False,
        }
        if "hello" in command:
            del answer["ismaster"]
        else:
            del answer["isWritablePrimary"]
        return answer

    def _build_info(self, db: str, command: dict) -> dict:
        return {"version": "6.0.0", "versionArray": [6, 0, 0, 0], "gitVersion": "mongo_server",
                "bits": 64, "maxBsonObjectSize": MAX_BSON_SIZE, "modules": [],
                "storageEngines": ["mongomock"]}

    def _list_databases(self, db: str, command: dict) -> dict:
        from mongomock.filtering import filter_applies

        rows = [{"name": name, "sizeOnDisk": 0, "empty": False}
                for name in sorted(self.client.list_database_names())]
        if command.get("filter"):
            rows = [r for r in rows if filter_applies(command["filter"], r)]
        if command.get("nameOnly"):
            return {"databases": [{"name": r["name"]} for r in rows]}
        return {"databases": rows, "totalSize": 0}

    def _list_collections(self, db: str, command: dict) -> dict:
        from mongomock.filtering import filter_applies

        rows = []
        for name in sorted(self.client[db].list_collection_names()):
            row = {"name": name, "type": "collection", "options": {},
                   "info": {"readOnly": False},
                   "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
            if command.get("filter") and not filter_applies(command["filter"], row):
                continue
            rows.append({"name": name, "type": "collection"} if command.get("nameOnly") else row)
        return self._first_batch(f"{db}.$cmd.listCollections", iter(rows), command.get("cursor"))

    def _create(self, db: str, command: dict) -> dict:
        name = command["create"]
        if name in self.client[db].list_collection_names():
            raise CommandError(48, f"Collection {db}.{name} already exists.")
        self.client[db].create_collection(name)
        return {}

    def _drop(self, db: str, command: dict) -> dict:
        name = command["drop"]
        if name not in self.client[db].list_collection_names():
            raise CommandError(26, "ns not found")
        indexes = len(list(self.client[db][name].list_indexes()))
        self.client[db].drop_collection(name)
        return {"ns": f"{db}.{name}", "nIndexesWas": indexes}

    def _drop_database(self, db: str, command: dict) -> dict:
        self.client.drop_database(db)
        return {"dropped": db}

    # ------------------------------------------------------------------ reads and cursors
    def _first_batch(self, ns: str, documents: Iterator[dict], cursor_options: Any,
                     limit: int = 0, single_batch: bool = False) -> dict:
        size = (cursor_options or {}).get("batchSize") if isinstance(cursor_options, dict) else None
        cursor = _Cursor(random.getrandbits(62) + 1, ns, documents, limit)
        batch = self._batch(cursor, size if size is not None else DEFAULT_FIRST_BATCH)
        alive = not single_batch and not self._exhausted(cursor)
        if alive:
            self.cursors[cursor.id] = cursor
        return {"cursor": {"firstBatch": batch, "id": Int64(cursor.id if alive else 0), "ns": ns}}

    def _batch(self, cursor: _Cursor, size: int | None) -> list:
        """Up to `size` documents (None or 0 in a getMore: as many as 16 MB holds), each
        encoded once."""
        batch, total = [], 0
        while size is None or size == 0 or len(batch) < size:
            if cursor.left is not None and cursor.left <= 0:
                break
            try:
                doc = next(cursor.documents)
            except StopIteration:
                cursor.left = 0
                break
            raw = RawBSONDocument(bson.encode(doc, codec_options=ENCODE))
            batch.append(raw)
            total += len(raw.raw)
            if cursor.left is not None:
                cursor.left -= 1
            if total >= MAX_BSON_SIZE:
                break
        cursor.used = time.monotonic()
        return batch

    @staticmethod
    def _exhausted(cursor: _Cursor) -> bool:
        if cursor.left is not None and cursor.left <= 0:
            return True
        try:  # peek, so a cursor whose last document went out closes now, as MongoDB's does
            doc = next(cursor.documents)
        except StopIteration:
            return True
        cursor.documents = itertools.chain([doc], cursor.documents)
        return False

    def _expire_cursors(self) -> None:
        cutoff = time.monotonic() - CURSOR_IDLE_SECONDS
        for cursor_id in [i for i, c in self.cursors.items() if c.used < cutoff]:
            del self.cursors[cursor_id]

    def _find(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "find")
        sort = command.get("sort")
        limit = int(command.get("limit") or 0)
        single = bool(command.get("singleBatch")) or limit < 0
        cursor = collection.find(command.get("filter") or {}, projection=command.get("projection"),
                                 skip=int(command.get("skip") or 0), limit=abs(limit),
                                 sort=list(sort.items()) if sort else None)
        options = {"batchSize": command["batchSize"]} if "batchSize" in command else None
        return self._first_batch(f"{db}.{collection.name}", iter(cursor), options,
                                 limit=abs(limit), single_batch=single)

    def _get_more(self, db: str, command: dict) -> dict:
        cursor_id = int(command["getMore"])
        cursor = self.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        batch = self._batch(cursor, command.get("batchSize"))
        if self._exhausted(cursor):
            self.cursors.pop(cursor_id, None)
            cursor_id = 0
        return {"cursor": {"nextBatch": batch, "id": Int64(cursor_id), "ns": cursor.ns}}

    def _kill_cursors(self, db: str, command: dict) -> dict:
        killed, missing = [], []
        for cursor_id in command.get("cursors") or []:
            (killed if self.cursors.pop(int(cursor_id), None) else missing).append(cursor_id)
        return {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [],
                "cursorsUnknown": []}

    def _aggregate(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "aggregate")
        documents = list(collection.aggregate(list(command.get("pipeline") or [])))
        return self._first_batch(f"{db}.{collection.name}", iter(documents), command.get("cursor"))

    def _count(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "count")
        options = {k: int(command[k]) for k in ("skip", "limit") if command.get(k)}
        return {"n": collection.count_documents(command.get("query") or {}, **options)}

    def _distinct(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "distinct")
        return {"values": collection.distinct(command["key"], command.get("query") or None)}

    # ------------------------------------------------------------------ writes
    def _insert(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "insert")
        ordered = command.get("ordered", True)
        inserted, errors = 0, []
        for index, document in enumerate(command.get("documents") or []):
            try:
                collection.insert_one(document)
                inserted += 1
            except Exception as exc:  # per statement, as a server reports it
                errors.append(_write_error(index, exc))
                if ordered:
                    break
        answer: dict = {"n": inserted}
        if errors:
            answer["writeErrors"] = errors
        return answer

    @staticmethod
    def _apply_update(collection: Any, query: dict, update: Any, upsert: bool, multi: bool,
                      array_filters: Any = None) -> Any:
        extra = {"array_filters": array_filters} if array_filters else {}
        if isinstance(update, list):  # an aggregation pipeline
            method = collection.update_many if multi else collection.update_one
            return method(query, update, upsert=upsert, **extra)
        if isinstance(update, dict) and update and all(k.startswith("$") for k in update):
            method = collection.update_many if multi else collection.update_one
            return method(query, update, upsert=upsert, **extra)
        if multi:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        return collection.replace_one(query, update, upsert=upsert)

    def _update(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "update")
        ordered = command.get("ordered", True)
        matched = modified = 0
        upserted, errors = [], []
        for index, statement in enumerate(command.get("updates") or []):
            try:
                result = self._apply_update(collection, statement.get("q") or {}, statement.get("u"),
                                            bool(statement.get("upsert")),
                                            bool(statement.get("multi")),
                                            statement.get("arrayFilters"))
            except Exception as exc:
                errors.append(_write_error(index, exc))
                if ordered:
                    break
                continue
            if result.upserted_id is not None:
                upserted.append({"index": index, "_id": result.upserted_id})
                matched += 1
            else:
                matched += result.matched_count
                modified += result.modified_count
        answer: dict = {"n": matched, "nModified": modified}
        if upserted:
            answer["upserted"] = upserted
        if errors:
            answer["writeErrors"] = errors
        return answer

    def _delete(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "delete")
        ordered = command.get("ordered", True)
        deleted, errors = 0, []
        for index, statement in enumerate(command.get("deletes") or []):
            try:
                query = statement.get("q") or {}
                if int(statement.get("limit", 0)) == 1:
                    deleted += collection.delete_one(query).deleted_count
                else:
                    deleted += collection.delete_many(query).deleted_count
            except Exception as exc:
                errors.append(_write_error(index, exc))
                if ordered:
                    break
        answer: dict = {"n": deleted}
        if errors:
            answer["writeErrors"] = errors
        return answer

    def _find_and_modify(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, next(iter(command)))
        query = command.get("query") or {}
        sort = command.get("sort")
        sort = list(sort.items()) if sort else None
        fields = command.get("fields") or None
        remove, new, upsert = bool(command.get("remove")), bool(command.get("new")), \
            bool(command.get("upsert"))
        update = command.get("update")
        if remove and (new or update is not None):
            raise CommandError(9, "Cannot specify both an update and remove=true"
                               if update is not None else "Cannot specify both new=true and remove=true;")
        if not remove and update is None:
            raise CommandError(9, "Either an update or remove=true must be specified")
        existing = collection.find_one(query, projection={"_id": 1}, sort=sort)
        if existing is not None:
            by_id = {"_id": existing["_id"]}
            before = collection.find_one(by_id, projection=fields)
            if remove:
                collection.delete_one(by_id)
                return {"value": before, "lastErrorObject": {"n": 1}}
            self._apply_update(collection, by_id, update, False, False,
                               command.get("arrayFilters"))
            value = collection.find_one(by_id, projection=fields) if new else before
            return {"value": value, "lastErrorObject": {"n": 1, "updatedExisting": True}}
        if remove or not upsert:
            return {"value": None, "lastErrorObject": {"n": 0, "updatedExisting": False}
                    if not remove else {"n": 0}}
        result = self._apply_update(collection, query, update, True, False,
                                    command.get("arrayFilters"))
        value = collection.find_one({"_id": result.upserted_id}, projection=fields) if new else None
        return {"value": value, "lastErrorObject": {"n": 1, "updatedExisting": False,
                                                    "upserted": result.upserted_id}}

    # ------------------------------------------------------------------ indexes
    def _create_indexes(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "createIndexes")
        existed = collection.name in self.client[db].list_collection_names()
        before = len(list(collection.list_indexes())) if existed else 0
        for spec in command.get("indexes") or []:
            options = {k: spec[k] for k in ("unique", "sparse", "partialFilterExpression",
                                             "expireAfterSeconds") if k in spec}
            if "name" in spec:
                options["name"] = spec["name"]
            current = collection.index_information().get(spec.get("name"))
            if current is not None and _same_index(current, spec):
                continue  # MongoDB: creating the same index again is a no-op
            try:
                collection.create_index(list(spec["key"].items()), **options)
            except Exception as exc:
                if getattr(exc, "code", None) == 11000:
                    raise CommandError(11000, "E11000 duplicate key error: cannot build the "
                                       f"unique index {spec.get('name')}") from exc
                if "already exists with different options" in str(exc):
                    raise CommandError(85, str(exc)) from exc
                raise
        after = len(list(collection.list_indexes()))
        return {"createdCollectionAutomatically": not existed, "numIndexesBefore": before or 1,
                "numIndexesAfter": after}

    def _list_indexes(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, "listIndexes")
        if collection.name not in self.client[db].list_collection_names():
            raise CommandError(26, f"ns does not exist: {db}.{collection.name}")
        rows = list(collection.list_indexes())
        return self._first_batch(f"{db}.$cmd.listIndexes.{collection.name}", iter(rows),
                                 command.get("cursor"))

    def _drop_indexes(self, db: str, command: dict) -> dict:
        collection = self._collection(db, command, next(iter(command)))
        if collection.name not in self.client[db].list_collection_names():
            raise CommandError(26, f"ns not found {db}.{collection.name}")
        before = len(list(collection.list_indexes()))
        target = command.get("index")
        if target == "*":
            collection.drop_indexes()
        else:
            if isinstance(target, dict):
                target = next((name for name, info in collection.index_information().items()
                               if list(info["key"]) == list(target.items())), None)
                if target is None:
                    raise CommandError(27, f"can't find index with key: {command.get('index')}")
            try:
                collection.drop_index(target)
            except Exception as exc:
                raise CommandError(27, f"index not found with name [{target}]") from exc
        return {"nIndexesWas": before}


def _same_index(current: dict, spec: dict) -> bool:
    if list(current.get("key") or []) != list(spec["key"].items()):
        return False
    for option in ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds"):
        if bool(current.get(option)) != bool(spec.get(option)) or \
                (spec.get(option) not in (None, False, True) and current.get(option) != spec.get(option)):
            return False
    return True


# ---------------------------------------------------------------------------- the transport
_HEADER = struct.Struct("<iiii")


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\x00", at)
    return data[at:end].decode(), end + 1


def parse_op_msg(payload: bytes) -> tuple[int, dict]:
    """(flagBits, the command with its document sequences folded in as arrays)."""
    (flags,) = struct.unpack_from("<I", payload, 0)
    end = len(payload) - (4 if flags & CHECKSUM_PRESENT else 0)
    at, body, sequences = 4, None, {}
    while at < end:
        kind = payload[at]
        at += 1
        if kind == 0:
            (size,) = struct.unpack_from("<i", payload, at)
            body = bson.decode(payload[at:at + size], codec_options=DECODE)
            at += size
        elif kind == 1:
            (size,) = struct.unpack_from("<i", payload, at)
            section_end = at + size
            name, pos = _cstring(payload, at + 4)
            docs = []
            while pos < section_end:
                (doc_size,) = struct.unpack_from("<i", payload, pos)
                docs.append(bson.decode(payload[pos:pos + doc_size], codec_options=DECODE))
                pos += doc_size
            sequences[name] = docs
            at = section_end
        else:
            raise ValueError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ValueError("OP_MSG without a body section")
    body.update(sequences)
    return flags, body


def _strip(command: dict) -> tuple[str, dict]:
    db = command.get("$db") or "admin"
    if "$query" in command and isinstance(command["$query"], dict):  # legacy wrapping
        command = command["$query"]
    return db, {k: v for k, v in command.items() if k not in _GENERIC}


class _Handler(socketserver.BaseRequestHandler):
    server: "_TcpServer"

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.open_lock:
            self.server.open.add(self.request)

    def finish(self) -> None:
        with self.server.open_lock:
            self.server.open.discard(self.request)

    def handle(self) -> None:
        sock: socket.socket = self.request
        wire = self.server.wire
        while True:
            try:
                header = _read_exact(sock, 16)
            except OSError:
                return
            if header is None:
                return
            length, request_id, _, opcode = _HEADER.unpack(header)
            if length < 16 or length > MAX_MESSAGE_SIZE:
                return
            try:
                payload = _read_exact(sock, length - 16)
            except OSError:  # the client died mid-message (kill -9): its work is simply gone
                return
            if payload is None:
                return
            if opcode == OP_MSG:
                flags, command = parse_op_msg(payload)
                db, command = _strip(command)
                answer = wire.run(db, command)
                if flags & MORE_TO_COME:
                    continue  # an unacknowledged write: the client reads no reply
                body = struct.pack("<IB", 0, 0) + bson.encode(answer, codec_options=ENCODE)
                reply_op = OP_MSG
            elif opcode == OP_QUERY:
                _flags = struct.unpack_from("<i", payload, 0)[0]
                namespace, at = _cstring(payload, 4)
                at += 8  # numberToSkip, numberToReturn
                (size,) = struct.unpack_from("<i", payload, at)
                query = bson.decode(payload[at:at + size], codec_options=DECODE)
                if namespace.endswith(".$cmd"):
                    db, command = _strip({**query, "$db": namespace[:-5]})
                    answer = wire.run(db, command)
                else:
                    answer = CommandError(5739101, "OP_QUERY is only for commands").reply()
                body = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(answer, codec_options=ENCODE)
                reply_op = OP_REPLY
            else:
                log.warning("mongo_server: unsupported opcode %s; closing the connection", opcode)
                return
            reply_id = next(self.server.request_ids)
            try:
                sock.sendall(_HEADER.pack(16 + len(body), reply_id, request_id, reply_op) + body)
            except OSError:
                return


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], wire: MongoWire) -> None:
        self.wire = wire
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        self.request_ids = itertools.count(1)
        super().__init__(address, _Handler)


class MongoWireServer:
    """The server on a local port, in this process (threads per connection)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, client: Any = None) -> None:
        self.wire = MongoWire(client)
        self._server = _TcpServer((host, port), self.wire)
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def client(self) -> Any:
        """The mongomock client holding the data (for comparisons in tests)."""
        return self.wire.client

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the command line's way)."""
        try:
            self._server.serve_forever(poll_interval=0.5)
        finally:
            self._server.server_close()

    def start(self) -> "MongoWireServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="mongo_server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._server.open_lock:
            for sock in list(self._server.open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "MongoWireServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


SWITCH_INTERVAL_SECONDS = 0.0005


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MONGO_SERVER_PORT", 27017)),
                        help="0 picks a free port (printed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # One thread per connection, one lock over the commands: with many clients waiting, each
    # hand-over of the interpreter (5 ms by default) is what a command waits for, not the
    # command. MongoDB serves connections concurrently; a shorter interval comes closer.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)

    def interrupt(signum, frame):  # noqa: ARG001 - SIGTERM and SIGINT stop it alike
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)  # even where a shell started it with SIGINT ignored
    signal.signal(signal.SIGTERM, interrupt)
    server = MongoWireServer(args.host, args.port)
    print(f"mongo_server ready on {server.uri}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
