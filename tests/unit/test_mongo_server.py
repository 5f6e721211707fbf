"""The wire-protocol MongoDB stand-in (tests/fakes/mongo_server.py) through the real pymongo
driver: every operation runs on the server and on a plain mongomock database side by side,
and the answers must be equal. Errors must be the exceptions a real server causes.
"""
from __future__ import annotations

import socket
import struct
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import bson
import mongomock
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.binary import UuidRepresentation
from pymongo import (ASCENDING, DESCENDING, DeleteMany, DeleteOne, IndexModel, InsertOne,
                     MongoClient, ReplaceOne, ReturnDocument, UpdateMany, UpdateOne, WriteConcern)
from pymongo.errors import (BulkWriteError, CollectionInvalid, DuplicateKeyError,
                            OperationFailure, WriteError)

from shared.idempotency import Claim, ProcessedEvents
from tests.fakes.mongo_server import MongoWireServer

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def server():
    server = MongoWireServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    client = MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def dbs(client):
    """(the wire server's database, a plain mongomock database), fresh and empty."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield client[name], mongomock.MongoClient(tz_aware=True)[name]
    client.drop_database(name)


def people(n: int) -> list[dict]:
    return [{"_id": i, "name": f"p{i:04d}", "age": 20 + i % 50, "team": ["red", "blue", "green"][i % 3],
             "at": T0 + timedelta(minutes=i), "tags": [f"t{i % 5}", f"t{i % 7}"],
             "address": {"city": ["Lyon", "Gent", "Graz"][i % 3], "zip": f"{1000 + i}"}}
            for i in range(n)]


def both(dbs, action):
    """Run `action(collection)` on both backends; answer the two results."""
    wire, mock = dbs
    return action(wire["c"]), action(mock["c"])


def test_the_driver_connects_as_to_a_standalone_server(client):
    assert client.admin.command("ping")["ok"] == 1.0
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True and "setName" not in hello
    assert hello["maxWireVersion"] >= 6 and "compression" not in hello
    legacy = client.admin.command("isMaster")
    assert legacy["ismaster"] is True
    assert client.server_info()["versionArray"][0] >= 4  # buildInfo


def test_a_raw_legacy_op_query_handshake_gets_an_op_reply(server):
    query = bson.encode({"isMaster": 1, "helloOk": True})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(body), 77, 0, 2004) + body)
        header = sock.recv(16, socket.MSG_WAITALL)
        length, _, response_to, opcode = struct.unpack("<iiii", header)
        rest = sock.recv(length - 16, socket.MSG_WAITALL)
    assert (opcode, response_to) == (1, 77)
    flags, cursor_id, starting, returned = struct.unpack_from("<iqii", rest)
    assert (cursor_id, returned) == (0, 1)
    answer = bson.decode(rest[20:])
    assert answer["ok"] == 1.0 and answer["ismaster"] is True and answer["helloOk"] is True


def test_inserts_and_finds_with_sort_skip_limit_and_projection_match_mongomock(dbs):
    both(dbs, lambda c: c.insert_many(people(300)))
    queries = [
        dict(filter={}),
        dict(filter={"team": "red"}, sort=[("age", DESCENDING), ("_id", ASCENDING)]),
        dict(filter={"age": {"$gte": 40}}, skip=5, limit=20, sort=[("name", ASCENDING)]),
        dict(filter={"tags": "t3", "address.city": {"$in": ["Lyon", "Graz"]}},
             projection={"name": 1, "address.city": 1}),
        dict(filter={"at": {"$gt": T0 + timedelta(hours=2)}}, projection={"tags": 0, "at": 0}),
        dict(filter={"name": {"$regex": "^p00[1-3]"}}, sort=[("at", DESCENDING)]),
        dict(filter={"$or": [{"age": 21}, {"team": "green", "age": {"$lt": 25}}]}, limit=7),
    ]
    for q in queries:
        wire, mock = both(dbs, lambda c: list(c.find(**q)))
        assert wire == mock, q
        assert wire, q
    wire, mock = both(dbs, lambda c: c.find_one({"name": "p0042"}))
    assert wire == mock and wire["at"] == T0 + timedelta(minutes=42)
    assert both(dbs, lambda c: c.find_one({"name": "nobody"})) == (None, None)


def test_cursors_larger_than_a_batch_run_on_get_more_and_are_closed(dbs, server):
    both(dbs, lambda c: c.insert_many(people(1000)))
    wire, mock = both(dbs, lambda c: [d["_id"] for d in c.find({}, sort=[("age", 1), ("_id", -1)])
                                      .batch_size(37)])
    assert wire == mock and len(wire) == 1000
    # Default batches (101, then the rest) and a limit that ends inside a batch.
    wire, mock = both(dbs, lambda c: [d["_id"] for d in c.find({"team": "blue"}).limit(150)])
    assert wire == mock and len(wire) == 150
    assert not server.wire.cursors  # exhausted cursors are gone
    cursor = dbs[0]["c"].find({}).batch_size(10)
    assert next(cursor)["_id"] == 0
    assert len(server.wire.cursors) == 1
    cursor.close()  # the driver sends killCursors
    assert not server.wire.cursors


def test_updates_replacements_upserts_and_deletes_match_mongomock(dbs):
    both(dbs, lambda c: c.insert_many(people(60)))
    steps = [
        lambda c: c.update_one({"_id": 3}, {"$set": {"age": 99}, "$push": {"tags": "x"}}),
        lambda c: c.update_one({"_id": 3}, {"$set": {"age": 99}}),  # matched, not modified
        lambda c: c.update_many({"team": "red"}, {"$inc": {"age": 1}, "$unset": {"address": ""}}),
        lambda c: c.update_one({"_id": 1000}, {"$set": {"name": "new"}, "$setOnInsert": {"x": 1}},
                               upsert=True),
        lambda c: c.replace_one({"_id": 5}, {"name": "replaced", "age": 1}),
        lambda c: c.replace_one({"_id": 2000}, {"name": "upserted"}, upsert=True),
        lambda c: c.update_one({"_id": 7}, [{"$set": {"double": {"$multiply": ["$age", 2]}}}]),
        lambda c: c.update_many({"age": {"$gt": 200}}, {"$set": {"none": True}}),
    ]
    for step in steps:
        wire, mock = both(dbs, step)
        assert (wire.matched_count, wire.modified_count, wire.upserted_id) == \
            (mock.matched_count, mock.modified_count, mock.upserted_id)
    for step in (lambda c: c.delete_one({"team": "blue"}), lambda c: c.delete_many({"age": {"$lt": 30}}),
                 lambda c: c.delete_many({"nothing": 1})):
        wire, mock = both(dbs, step)
        assert wire.deleted_count == mock.deleted_count
    wire, mock = both(dbs, lambda c: list(c.find({}, sort=[("_id", 1)])))
    assert wire == mock


@pytest.mark.parametrize("ordered", [True, False])
def test_bulk_write_with_mixed_operations_matches_mongomock(dbs, ordered):
    both(dbs, lambda c: c.insert_many(people(20)))
    ops = [InsertOne({"_id": 100, "name": "a"}), UpdateOne({"_id": 1}, {"$set": {"age": 5}}),
           UpdateMany({"team": "red"}, {"$set": {"red": True}}), ReplaceOne({"_id": 2}, {"name": "r"}),
           UpdateOne({"_id": 300}, {"$set": {"name": "u"}}, upsert=True), DeleteOne({"_id": 4}),
           DeleteMany({"team": "green"}), InsertOne({"_id": 101, "name": "b"})]
    wire, mock = both(dbs, lambda c: c.bulk_write(ops, ordered=ordered))
    assert wire.bulk_api_result["nInserted"] == mock.bulk_api_result["nInserted"] == 2
    assert (wire.matched_count, wire.modified_count, wire.deleted_count) == \
        (mock.matched_count, mock.modified_count, mock.deleted_count)
    # The driver names an upsert by its place in the whole list, as with MongoDB (mongomock
    # numbers it within its run of updates: {0: 300}).
    assert wire.upserted_ids == {4: 300} and list(mock.upserted_ids.values()) == [300]
    wire, mock = both(dbs, lambda c: list(c.find({}, sort=[("_id", 1)])))
    assert wire == mock


def test_find_and_modify_in_every_form_matches_mongomock(dbs):
    both(dbs, lambda c: c.insert_many(people(30)))
    steps = [
        lambda c: c.find_one_and_update({"team": "red"}, {"$inc": {"age": 1}}, sort=[("age", -1)]),
        lambda c: c.find_one_and_update({"team": "red"}, {"$inc": {"age": 1}}, sort=[("age", 1)],
                                        return_document=ReturnDocument.AFTER, projection={"age": 1}),
        lambda c: c.find_one_and_update({"_id": 77}, {"$set": {"name": "up"}}, upsert=True),
        lambda c: c.find_one_and_update({"_id": 78}, {"$set": {"name": "up"}}, upsert=True,
                                        return_document=ReturnDocument.AFTER),
        lambda c: c.find_one_and_update({"_id": 79}, {"$set": {"name": "none"}}),
        lambda c: c.find_one_and_replace({"_id": 3}, {"name": "r"}, return_document=ReturnDocument.AFTER),
        lambda c: c.find_one_and_delete({"team": "blue"}, sort=[("_id", -1)], projection={"name": 1}),
        lambda c: c.find_one_and_delete({"team": "purple"}),
    ]
    for step in steps:
        wire, mock = both(dbs, step)
        assert wire == mock
    wire, mock = both(dbs, lambda c: list(c.find({}, sort=[("_id", 1)])))
    assert wire == mock


def test_aggregate_count_and_distinct_match_mongomock(dbs):
    both(dbs, lambda c: c.insert_many(people(500)))
    pipeline = [{"$match": {"age": {"$gte": 30}}},
                {"$group": {"_id": "$team", "n": {"$sum": 1}, "oldest": {"$max": "$age"}}},
                {"$sort": {"_id": 1}}]
    wire, mock = both(dbs, lambda c: list(c.aggregate(pipeline)))
    assert wire == mock and len(wire) == 3
    # More rows than a first batch: the aggregate cursor continues with getMore.
    wire, mock = both(dbs, lambda c: list(c.aggregate([{"$project": {"name": 1}}], batchSize=50)))
    assert wire == mock and len(wire) == 500
    for query in ({}, {"team": "red"}, {"age": {"$in": [21, 22]}}):
        assert both(dbs, lambda c: c.count_documents(query)) == (mock_count := dbs[1]["c"].count_documents(query), mock_count)
    assert dbs[0]["c"].count_documents({}, skip=10, limit=50) == 50
    assert dbs[0]["c"].estimated_document_count() == 500
    wire, mock = both(dbs, lambda c: sorted(c.distinct("team")))
    assert wire == mock == ["blue", "green", "red"]
    wire, mock = both(dbs, lambda c: sorted(c.distinct("address.city", {"age": 20})))
    assert wire == mock


def test_unique_indexes_raise_what_a_server_raises(dbs):
    wire, mock = dbs
    for db in dbs:
        db["c"].create_index("email", unique=True)
        db["c"].create_index([("store", 1), ("woo", 1)], unique=True,
                             partialFilterExpression={"woo": {"$type": "int"}})
        db["c"].insert_one({"_id": 1, "email": "a@x", "store": "s", "woo": 1})
    with pytest.raises(DuplicateKeyError) as raised:
        wire["c"].insert_one({"_id": 2, "email": "a@x"})
    assert raised.value.code == 11000
    with pytest.raises(DuplicateKeyError):
        wire["c"].insert_one({"_id": 1, "email": "other"})  # the _id index
    wire["c"].insert_one({"_id": 3, "email": "b@x", "store": "s", "woo": "1"})  # outside the partial index
    with pytest.raises(DuplicateKeyError):
        wire["c"].insert_one({"_id": 4, "email": "c@x", "store": "s", "woo": 1})
    wire["c"].insert_one({"_id": 5, "email": "d@x"})
    with pytest.raises(DuplicateKeyError):
        wire["c"].update_one({"_id": 5}, {"$set": {"email": "a@x"}})
    with pytest.raises(DuplicateKeyError):
        wire["c"].find_one_and_update({"_id": 5}, {"$set": {"email": "a@x"}})
    assert wire["c"].find_one({"_id": 5})["email"] == "d@x"  # nothing half-applied
    # Batches: ordered stops at the first error, unordered goes on; counts as mongomock's.
    batch = [{"_id": 10, "email": "e@x"}, {"_id": 11, "email": "a@x"}, {"_id": 12, "email": "f@x"}]
    with pytest.raises(BulkWriteError) as ordered:
        wire["c"].insert_many(batch)
    assert ordered.value.details["nInserted"] == 1
    assert [(e["index"], e["code"]) for e in ordered.value.details["writeErrors"]] == [(1, 11000)]
    with pytest.raises(BulkWriteError) as unordered:
        wire["c"].bulk_write([InsertOne({"_id": 20, "email": "a@x"}), InsertOne({"_id": 21, "email": "g@x"}),
                              UpdateOne({"_id": 21}, {"$set": {"email": "b@x"}})], ordered=False)
    assert unordered.value.details["nInserted"] == 1
    assert [(e["index"], e["code"]) for e in unordered.value.details["writeErrors"]] == [(0, 11000), (2, 11000)]
    with pytest.raises(BulkWriteError) as mocked:
        mock["c"].bulk_write([InsertOne({"_id": 20, "email": "a@x"}), InsertOne({"_id": 21, "email": "g@x"}),
                              UpdateOne({"_id": 21}, {"$set": {"email": "b@x"}})], ordered=False)
    assert mocked.value.details["nInserted"] == unordered.value.details["nInserted"]
    # A unique index over existing duplicates cannot be built.
    wire["d"].insert_many([{"k": 1}, {"k": 1}])
    with pytest.raises(DuplicateKeyError):
        wire["d"].create_index("k", unique=True)


def test_the_projects_idempotency_records_rely_on_duplicate_keys(dbs):
    events = ProcessedEvents(dbs[0])
    events.ensure_indexes()
    outcome, token = events.claim("loyalty.on_order", "e-1", "order.placed")
    assert outcome is Claim.CLAIMED
    assert events.claim("loyalty.on_order", "e-1", "order.placed") == (Claim.BUSY, None)
    events.complete("loyalty.on_order", "e-1", token)
    assert events.claim("loyalty.on_order", "e-1", "order.placed") == (Claim.DONE, None)
    assert events.claim("loyalty.other", "e-1", "order.placed")[0] is Claim.CLAIMED


def test_other_failures_are_errors_with_codes(dbs):
    wire, _ = dbs
    wire["c"].insert_one({"_id": 1, "name": "text"})
    with pytest.raises(WriteError):
        wire["c"].update_one({"_id": 1}, {"$inc": {"name": 1}})
    with pytest.raises(OperationFailure) as unknown:
        wire.command("frobnicate", 1)
    assert (unknown.value.code, unknown.value.details["codeName"]) == (59, "CommandNotFound")
    with pytest.raises(OperationFailure) as bad:
        wire.command("find", "c", filter={"$bogus": 1})
    assert bad.value.code


def test_indexes_collections_and_databases(dbs, client):
    wire, mock = dbs
    both(dbs, lambda c: c.insert_one({"_id": 1, "a": 1}))
    wire["c"].create_indexes([IndexModel([("a", 1), ("b", -1)], name="ab"),
                              IndexModel("s", sparse=True, unique=True),
                              IndexModel("at", expireAfterSeconds=3600)])
    # mongomock's own create_indexes keeps dict views as keys: one by one there.
    mock["c"].create_index([("a", 1), ("b", -1)], name="ab")
    mock["c"].create_index("s", sparse=True, unique=True)
    mock["c"].create_index("at", expireAfterSeconds=3600)
    wire["c"].create_index("s", sparse=True, unique=True)  # the same again: a no-op on MongoDB
    assert wire["c"].index_information() == mock["c"].index_information()
    with pytest.raises(OperationFailure):
        wire["c"].create_index("s", unique=False, name="s_1")  # same name, other options
    wire["c"].drop_index("ab")
    assert sorted(wire["c"].index_information()) == ["_id_", "at_1", "s_1"]
    wire["c"].drop_indexes()
    assert sorted(wire["c"].index_information()) == ["_id_"]
    assert list(wire["missing"].list_indexes()) == []
    wire.create_collection("made")
    with pytest.raises(CollectionInvalid):
        wire.create_collection("made")
    assert sorted(wire.list_collection_names()) == ["c", "made"]
    assert wire.list_collection_names(filter={"name": "made"}) == ["made"]
    assert wire.name in client.list_database_names()
    wire.drop_collection("made")
    wire.drop_collection("never-was")  # a missing collection is fine, as with the driver on MongoDB
    assert wire.list_collection_names() == ["c"]
    client.drop_database(wire.name)
    assert wire.name not in client.list_database_names()


def test_types_round_trip(dbs, server):
    wire, mock = dbs
    doc = {"_id": ObjectId(), "when": T0, "precise": datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=timezone.utc),
           "money": Decimal128(Decimal("12.34")), "big": Int64(2**40), "small": 7, "f": 1.5,
           "blob": Binary(b"\x00\x01"), "uid": Binary(uuid.UUID(int=5).bytes, 4), "none": None,
           "nested": {"list": [1, "two", {"three": [T0]}]}, "flag": True}
    wire["c"].insert_one(dict(doc))
    mock["c"].insert_one(dict(doc))
    got = wire["c"].find_one({"_id": doc["_id"]})
    mocked = mock["c"].find_one({"_id": doc["_id"]})
    # Binary subtype 0 reads back as bytes through the driver (mongomock keeps the Binary).
    assert got.pop("blob") == bytes(mocked.pop("blob")) == b"\x00\x01"
    assert got == mocked
    assert got["when"] == T0 and got["when"].tzinfo is not None
    assert got["precise"] == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)  # milliseconds
    assert got["money"] == Decimal128("12.34") and isinstance(got["big"], int) and got["big"] == 2**40
    assert got["uid"] == Binary(uuid.UUID(int=5).bytes, 4)
    assert wire["c"].find_one({"when": {"$lte": T0}, "money": Decimal128("12.34")})["_id"] == doc["_id"]
    # A client that encodes UUIDs natively reads them back as UUIDs.
    standard = MongoClient(server.uri, tz_aware=True, uuidRepresentation="standard")
    try:
        standard[wire.name]["u"].insert_one({"_id": uuid.UUID(int=9)})
        assert standard[wire.name]["u"].find_one({"_id": uuid.UUID(int=9)})["_id"] == uuid.UUID(int=9)
    finally:
        standard.close()


def test_unacknowledged_writes_get_no_reply(server):
    """w=0 sets moreToCome: a reply the driver did not wait for would be read as the answer to
    the next command on the same connection, which the driver refuses (responseTo mismatch)."""
    one = MongoClient(server.uri, tz_aware=True, maxPoolSize=1, w=0)
    try:
        name = f"t_{uuid.uuid4().hex[:10]}"
        for i in range(5):
            one[name]["c"].insert_one({"_id": i})
        one[name]["c"].update_one({"_id": 1}, {"$set": {"x": 1}})
        acknowledged = one[name].get_collection("c", write_concern=WriteConcern(w=1))
        acknowledged.insert_one({"_id": 99})
        assert acknowledged.count_documents({}) == 6
        assert acknowledged.find_one({"_id": 1}) == {"_id": 1, "x": 1}
        one.drop_database(name)
    finally:
        one.close()
