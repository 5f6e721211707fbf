"""The mongomock shortcuts must return exactly what mongomock returns without them."""
from __future__ import annotations

import random

import mongomock
import pytest

from devdoubles.mongomock_speedups import install


def seeded_docs(n: int = 300) -> list[dict]:
    rng = random.Random(5)
    docs = []
    for i in range(n):
        doc = {"_id": i, "s": rng.choice(["a", "b", "c"]), "n": rng.choice([0, 1, 2, 1.0, True]),
               "opt": rng.choice([None, "x", "missing"]), "arr": rng.choice([["a", "b"], ["c"], "a"]),
               "sub": {"k": rng.choice(["p", "q"]), "list": [{"k": "p"}]}}
        if doc["opt"] == "missing":
            del doc["opt"]
        docs.append(doc)
    return docs


QUERIES = [
    {"s": "a"}, {"n": 1}, {"n": True}, {"n": 1.0}, {"opt": None}, {"opt": "x"}, {"arr": "a"},
    {"sub.k": "p"}, {"sub.list.k": "p"}, {"s": "b", "n": 2}, {"$and": [{"s": "c"}, {"opt": None}]},
    {"_id": 7}, {"_id": {"$in": [3, 9, 400]}}, {"s": "a", "n": {"$gt": 0}},
]


def results(collection, query):
    return [d["_id"] for d in collection.find(query)]


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_queries_answer_as_plain_mongomock_after_writes(query):
    plain = mongomock.MongoClient().db.c  # collections made before install() behave the same;
    install()                              # compare against a reference computed by brute force
    fast = mongomock.MongoClient().db.c
    docs = seeded_docs()
    fast.insert_many([dict(d) for d in docs])
    plain.insert_many([dict(d) for d in docs])
    for coll in (fast, plain):
        coll.update_many({"s": "a"}, {"$set": {"s": "b"}})
        coll.update_one({"_id": 5}, {"$unset": {"opt": ""}})
        coll.delete_many({"n": 2})
        coll.insert_one({"_id": 2, "s": "a", "n": 1})
        coll.find_one_and_update({"s": "c"}, {"$set": {"n": 7}})
    from mongomock.filtering import filter_applies
    expected = [d["_id"] for d in plain._store._documents.values() if filter_applies(query, d)]
    assert results(fast, query) == expected


def test_reinserted_id_goes_last_as_in_mongomock():
    install()
    coll = mongomock.MongoClient().db.c
    coll.insert_many([{"_id": i, "s": "a"} for i in range(40)])
    coll.delete_one({"_id": 3})
    coll.insert_one({"_id": 3, "s": "a"})
    assert results(coll, {"s": "a"})[-1] == 3


def test_sub_document_ids_still_work():
    install()
    coll = mongomock.MongoClient().db.c
    coll.insert_many([{"_id": {"a": i}, "s": "x"} for i in range(40)])
    assert len(list(coll.find({"s": "x"}))) == 40


def test_partial_unique_index_ignores_documents_outside_its_filter():
    install()
    coll = mongomock.MongoClient().db.c
    coll.create_index([("k", 1)], unique=True, partialFilterExpression={"k": {"$type": "string"}})
    coll.insert_many([{"k": None} for _ in range(40)])
    coll.insert_one({"k": "one"})
    with pytest.raises(Exception):
        coll.insert_one({"k": "one"})


def test_cursor_skip_limit_and_sort_are_unchanged():
    install()
    coll = mongomock.MongoClient().db.c
    coll.insert_many([{"_id": i, "s": "a" if i % 2 else "b"} for i in range(100)])
    assert [d["_id"] for d in coll.find({"s": "a"}).skip(5).limit(3)] == [11, 13, 15]
    assert [d["_id"] for d in coll.find({"s": "b"}).sort("_id", -1).limit(2)] == [98, 96]
    assert [d["_id"] for d in coll.find({"s": "b"}).limit(-2)] == [0, 2]
    assert len(list(coll.find())) == 100
    cursor = coll.find({"s": "a"})
    assert next(cursor)["_id"] == 1 and next(cursor)["_id"] == 3


def test_streamed_cursor_copies_documents_and_mixes_with_list_operations():
    install()
    coll = mongomock.MongoClient().db.c
    coll.insert_many([{"_id": i, "s": "a" if i % 2 else "b", "big": [i]} for i in range(100)])
    cursor = coll.find({"s": "a"}, {"big": 0})
    first = next(cursor)
    assert first == {"_id": 1, "s": "a"}
    first["s"] = "changed"  # a copy: the stored document is untouched
    assert coll.find_one({"_id": 1})["s"] == "a"
    assert [d["_id"] for d in cursor][:2] == [3, 5]
    cursor.rewind()  # after a rewind the cursor reads its whole result again
    assert [d["_id"] for d in cursor] == list(range(1, 100, 2))
    # a document deleted ahead of the cursor is not handed out; one updated ahead is, as it now is
    cursor = coll.find({"s": "b"})
    assert next(cursor)["_id"] == 0
    coll.delete_one({"_id": 2})
    coll.update_one({"_id": 4}, {"$set": {"big": ["new"]}})
    rest = list(cursor)
    assert [d["_id"] for d in rest][:2] == [4, 6] and rest[0]["big"] == ["new"]
    # reads that need the whole result still work on a cursor being streamed
    cursor = coll.find({"s": "a"}).skip(10)
    assert next(cursor)["_id"] == 21
    assert cursor.alive
    assert [d["_id"] for d in cursor][-1] == 99


def test_updates_report_and_roll_back_as_mongomock_does():
    install()
    coll = mongomock.MongoClient().db.u
    coll.create_index("email", unique=True)
    coll.insert_many([{"_id": 1, "email": "a", "big": list(range(50)), "n": 1},
                      {"_id": 2, "email": "b", "n": 1}])
    same = coll.update_one({"_id": 1}, {"$set": {"n": 1}})
    assert (same.matched_count, same.modified_count) == (1, 0)
    changed = coll.update_one({"_id": 1}, {"$set": {"n": 2, "sub.x": 1}, "$push": {"big": 50}})
    assert (changed.matched_count, changed.modified_count) == (1, 1)
    assert coll.find_one({"_id": 1})["sub"] == {"x": 1} and coll.find_one({"_id": 1})["big"][-1] == 50
    with pytest.raises(mongomock.DuplicateKeyError):
        coll.update_one({"_id": 2}, {"$set": {"email": "a", "n": 9}, "$unset": {"missing": ""}})
    assert coll.find_one({"_id": 2}) == {"_id": 2, "email": "b", "n": 1}  # rolled back
    assert [d["_id"] for d in coll.find({"email": "b"})] == [2]  # and still found by its value
    many = coll.update_many({}, {"$inc": {"n": 1}})
    assert (many.matched_count, many.modified_count) == (2, 2)
    upserted = coll.update_one({"_id": 3}, {"$set": {"email": "c"}}, upsert=True)
    assert upserted.upserted_id == 3 and coll.find_one({"_id": 3})["email"] == "c"
    replaced = coll.replace_one({"_id": 3}, {"email": "d"})
    assert replaced.modified_count == 1 and coll.find_one({"_id": 3}) == {"_id": 3, "email": "d"}


def test_numeric_path_parts_as_keys_and_as_indexes():
    install()
    coll = mongomock.MongoClient().db.p
    coll.insert_one({"_id": 1, "orders": {"123": {"n": 1}}, "items": [{"n": 1}, {"n": 2}]})
    assert coll.update_one({"_id": 1}, {"$set": {"orders.123.n": 2}}).modified_count == 1
    assert coll.update_one({"_id": 1}, {"$set": {"orders.123.n": 2}}).modified_count == 0
    assert coll.update_one({"_id": 1}, {"$set": {"items.1.n": 5}}).modified_count == 1
    doc = coll.find_one({"_id": 1})
    assert doc["orders"] == {"123": {"n": 2}} and doc["items"] == [{"n": 1}, {"n": 5}]


SORTS = [
    [("s", 1)], [("s", -1), ("_id", -1)], [("n", 1), ("_id", 1)], [("opt", -1)],
    [("arr", 1), ("_id", -1)], [("sub.k", -1), ("n", 1)], [("when", 1), ("_id", 1)],
    [("when", -1), ("_id", -1)], [("score", 1)], [("score", -1), ("s", 1)], [("mixed", 1)],
]


@pytest.mark.parametrize("sort", SORTS, ids=str)
def test_sorted_finds_order_as_mongomock_compares(sort):
    """Native sorting (one family of plain values per key) gives mongomock's own order, ties
    kept stable; keys with missing, null, array, boolean or mixed values keep mongomock's way."""
    from datetime import datetime, timedelta

    from mongomock.filtering import resolve_sort_key

    install()
    docs = seeded_docs()
    rng = random.Random(9)
    for doc in docs:
        doc["when"] = datetime(2026, 1, 1) + timedelta(days=rng.randint(0, 20))  # ties too
        doc["score"] = rng.choice([1, 2.5, -3, 2, 2.0, 10**12])
        doc["mixed"] = rng.choice([1, "1", None, datetime(2026, 1, 1), True])
    coll = mongomock.MongoClient().db.c
    coll.insert_many([dict(d) for d in docs])
    expected = list(docs)
    for key, direction in reversed(sort):  # mongomock's own algorithm, by brute force
        expected = sorted(expected, key=lambda d: resolve_sort_key(key, d), reverse=direction < 0)
    query = {"s": {"$in": ["a", "b", "c"]}}
    assert [d["_id"] for d in coll.find(query).sort(sort)] == [d["_id"] for d in expected]
    assert [d["_id"] for d in coll.find(query).sort(sort).skip(5).limit(7)] == \
        [d["_id"] for d in expected][5:12]
