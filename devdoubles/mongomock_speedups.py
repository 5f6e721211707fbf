"""Make mongomock usable at the data sizes the tests and benchmarks need.

mongomock answers every query by running its generic filter over every document, checks unique
indexes the same way on every insert, and sweeps TTL indexes over the whole collection on every
access: with thousands of documents each lookup takes milliseconds and a backfill turns
quadratic. A real MongoDB answers from indexes. This module gives mongomock the same shortcut
without changing what any query returns:

* an equality condition on a plain value (str, number, bool, None) is answered from a hash map
  of that field, built on first use and kept current on every insert, update and delete; the
  candidates it yields (plus every document whose field holds an array or sub-document, which
  mongomock's matching rules cover) still pass through mongomock's own filter, in insertion
  order, so results are exactly mongomock's;
* a query on a plain `_id` reads that one document;
* TTL expiry runs at most once a second per collection;
* a sorted find whose sort key holds one family of plain values (numbers, strings, times) in
  every matching document sorts with Python's own comparison, in the same stable order
  (mongomock dispatched on BSON types in every comparison: seconds for a sorted page of a
  5,000-customer list);
* a cursor read straight through streams its documents, copying one at a time (mongomock
  copied the whole result into a list first, then re-sliced that list per document);
* where YIELD_PER_OPERATION is set (the test suite sets it), every collection operation first
  yields to other green threads, as a round trip to a real server does: without it, a
  read-modify-write in one eventlet worker could never interleave with another's, and tests of
  concurrent updates (compare-and-set, conditional debits) would pass whether or not the code
  guarded against the race. It is off elsewhere: each yield costs the webhook door about 15%
  of its throughput on mongomock, which real round trips would not.

Applied once, by `devdoubles.mongomock_adapter` before it makes a client.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

_installed = False
YIELD_PER_OPERATION = False  # tests/conftest.py turns it on before anything connects
_TTL_PERIOD_SECONDS = 1.0
_MIN_DOCS_FOR_INDEX = 32
_COMPLEX = object()  # arrays, sub-documents, other types: always a candidate
_MISSING_OR_NULL = ("null", None)
_sequence = itertools.count()


def _value_key(value: Any) -> Any:
    """A hashable key for a plain value, keeping Mongo's distinctions (1 == 1.0, 1 != True)."""
    if value is None:
        return _MISSING_OR_NULL
    if isinstance(value, (bool, int, float)):
        # One bucket for numbers and booleans (mongomock matches 1 to True); its filter decides.
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    return _COMPLEX


def _doc_key(doc: dict, path: tuple[str, ...]) -> Any:
    current: Any = doc
    for part in path:
        if isinstance(current, dict):
            if part not in current:
                return _MISSING_OR_NULL
            current = current[part]
        elif current is None:
            return _MISSING_OR_NULL
        else:
            return _COMPLEX  # an array on the way
    if isinstance(current, (list, dict)):
        return _COMPLEX
    return _value_key(current)


class _FieldIndexes:
    """Hash maps field value -> document ids for one collection, with insertion order."""

    def __init__(self) -> None:
        self.maps: dict[tuple[str, ...], dict[Any, set]] = {}
        self.keys_of: dict[Any, dict[tuple[str, ...], Any]] = {}
        self.order: dict[Any, int] = {}

    def build(self, path: tuple[str, ...], documents) -> None:
        buckets: dict[Any, set] = {}
        for doc in documents:
            key = _doc_key(doc, path)
            buckets.setdefault(key, set()).add(doc["_id"])
            self.keys_of.setdefault(doc["_id"], {})[path] = key
            self.order.setdefault(doc["_id"], next(_sequence))
        self.maps[path] = buckets

    def remove(self, doc_id: Any, deleted: bool = False) -> None:
        for path, key in self.keys_of.pop(doc_id, {}).items():
            bucket = self.maps.get(path, {}).get(key)
            if bucket is not None:
                bucket.discard(doc_id)
        if deleted:
            self.order.pop(doc_id, None)  # a re-inserted _id goes last, as in mongomock

    def add(self, doc: dict) -> None:
        doc_id = doc["_id"]
        self.order.setdefault(doc_id, next(_sequence))
        if not self.maps:
            return
        keys = self.keys_of.setdefault(doc_id, {})
        for path, buckets in self.maps.items():
            key = _doc_key(doc, path)
            keys[path] = key
            buckets.setdefault(key, set()).add(doc_id)

    def reindex(self, doc: dict) -> None:
        self.remove(doc["_id"])
        self.add(doc)

    def clear(self) -> None:
        self.maps.clear()
        self.keys_of.clear()
        self.order.clear()


def _indexes(store) -> _FieldIndexes:
    indexes = store.__dict__.get("_companion_indexes")
    if indexes is None:
        indexes = store.__dict__["_companion_indexes"] = _FieldIndexes()
    return indexes


def _equalities(spec: Any) -> list[tuple[tuple[str, ...], Any]]:
    """Plain equality conditions every match must satisfy (top level and inside $and)."""
    found: list[tuple[tuple[str, ...], Any]] = []
    if not isinstance(spec, dict):
        return found
    for field, value in spec.items():
        if field == "$and" and isinstance(value, list):
            for part in value:
                found.extend(_equalities(part))
        elif not field.startswith("$"):
            key = _value_key(value)
            if key is not _COMPLEX:
                found.append((tuple(field.split(".")), key))
    return found


def install() -> None:
    global _installed
    if _installed:
        return
    from mongomock import collection as mm_collection
    from mongomock import store as mm_store
    from mongomock.filtering import filter_applies

    Store = mm_store.CollectionStore
    Collection = mm_collection.Collection
    original_expire = Store._remove_expired_documents
    original_setitem, original_delitem, original_drop = Store.__setitem__, Store.__delitem__, Store.drop
    original_apply_document = Collection._apply_update_document
    original_apply_pipeline = Collection._apply_update_pipeline
    original_ensure_uniques = Collection._ensure_uniques

    def throttled_expire(self) -> None:
        if not self._ttl_indexes:
            return
        now = time.monotonic()
        if now - self.__dict__.get("_companion_last_expiry", 0.0) >= _TTL_PERIOD_SECONDS:
            self.__dict__["_companion_last_expiry"] = now
            original_expire(self)

    def setitem(self, key, val):
        original_setitem(self, key, val)
        try:
            hash(val.get("_id"))
        except TypeError:  # a sub-document _id: this collection keeps mongomock's plain scans
            self.__dict__["_companion_unindexable"] = True
            return
        _indexes(self).reindex(val)

    def delitem(self, key):
        original_delitem(self, key)
        _indexes(self).remove(key, deleted=True)

    def drop(self):
        original_drop(self)
        _indexes(self).clear()

    def _reindex_if_stored(collection, document) -> None:
        # Updates change stored documents in place; an upsert's draft is not stored yet.
        store = collection._store
        if store.__dict__.get("_companion_unindexable"):
            return
        if store._documents.get(document.get("_id")) is document:
            _indexes(store).reindex(document)

    def apply_update_document(self, existing_document, spec, document, was_insert):
        try:
            return original_apply_document(self, existing_document, spec, document, was_insert)
        finally:
            _reindex_if_stored(self, existing_document)

    def apply_update_pipeline(self, existing_document, pipeline, session):
        try:
            return original_apply_pipeline(self, existing_document, pipeline, session)
        finally:
            _reindex_if_stored(self, existing_document)

    def ensure_uniques(self, new_data):
        # As in MongoDB, a document outside a partial index's filter is not in that index, so
        # the index's uniqueness does not apply to it (mongomock checked it by a full scan).
        indexes = self._store.indexes
        skipped = {name: index for name, index in indexes.items()
                   if index.get("unique") and index.get("partialFilterExpression") is not None
                   and not filter_applies(index["partialFilterExpression"], new_data)}
        if not skipped:
            return original_ensure_uniques(self, new_data)
        for name in skipped:
            indexes[name] = {**skipped[name], "unique": False}
        try:
            return original_ensure_uniques(self, new_data)
        finally:
            indexes.update(skipped)

    def iter_documents(self, filter):  # noqa: A002 - mongomock's own name
        store = self._store
        if store.is_empty:
            filter_applies(filter, {})  # keeps mongomock's validation of the filter
            return iter(())
        if isinstance(filter, dict) and "_id" in filter:
            wanted = filter["_id"]
            key = _value_key(wanted)
            if key is not _COMPLEX and key is not _MISSING_OR_NULL:
                doc = store._documents.get(wanted)
                return iter([doc] if doc is not None and filter_applies(filter, doc) else [])
            if (isinstance(wanted, dict) and set(wanted) == {"$in"} and isinstance(wanted["$in"], list)
                    and all(_value_key(v) not in (_COMPLEX, _MISSING_OR_NULL) for v in wanted["$in"])):
                documents = store._documents
                order = _indexes(store).order
                ids = sorted((i for i in set(wanted["$in"]) if i in documents),
                             key=lambda i: order.get(i, 0))
                # The ids are chosen already: judging each document against the whole list
                # again (mongomock's `in` over a list) would make a large $in quadratic.
                rest = {k: v for k, v in filter.items() if k != "_id"}
                return (documents[i] for i in ids
                        if i in documents and filter_applies(rest, documents[i]))
        conditions = _equalities(filter)
        documents = store._documents
        if (not conditions or len(documents) < _MIN_DOCS_FOR_INDEX
                or store.__dict__.get("_companion_unindexable")):
            return (d for d in list(store.documents) if filter_applies(filter, d))
        indexes = _indexes(store)
        best = None
        for path, key in conditions:  # the smallest candidate set, sized before any copy
            if path not in indexes.maps:
                indexes.build(path, documents.values())
            buckets = indexes.maps[path]
            size = len(buckets.get(key, ())) + len(buckets.get(_COMPLEX, ()))
            if best is None or size < best[0]:
                best = (size, buckets.get(key, set()), buckets.get(_COMPLEX, set()))
        _, plain, complex_ = best
        best = plain | complex_ if complex_ else plain
        order = indexes.order
        chosen = sorted(best, key=lambda i: order.get(i, 0))
        return (documents[i] for i in chosen
                if i in documents and filter_applies(filter, documents[i]))

    Store._remove_expired_documents = throttled_expire
    Store.__setitem__ = setitem
    Store.__delitem__ = delitem
    Store.drop = drop
    Collection._apply_update_document = apply_update_document
    Collection._apply_update_pipeline = apply_update_pipeline
    def cursor_next(self):
        # mongomock copies every matching document into one list before handing out the first,
        # and slices that list on every next(): quadratic in time, and a large find holds a
        # copy of the whole result. A cursor read straight through streams instead, copying
        # one document at a time, as a MongoDB cursor's batches do. Anything else (rewind,
        # count, indexing, alive) keeps mongomock's list, read by index.
        if self._results is None and self._factory_last_generated_results is None:
            stream = self.__dict__.get("_companion_stream")
            if stream is None and self._emitted == 0:
                stream = _stream(self)
            if stream is not None and stream[0] is self._factory and stream[1] == self._emitted:
                if self._limit and self._emitted >= abs(self._limit):
                    raise StopIteration()
                doc = next(stream[2])  # StopIteration ends the cursor
                self._emitted += 1
                self.__dict__["_companion_stream"] = (stream[0], self._emitted, stream[2])
                return doc
            self.__dict__.pop("_companion_stream", None)
        results = self._compute_results()
        if self._limit and self._emitted >= abs(self._limit):
            raise StopIteration()
        index = self._skip + self._emitted
        if index >= len(results):
            raise StopIteration()
        self._emitted += 1
        return results[index]

    def _stream(cursor):
        documents = cursor._factory()
        if cursor.collection.codec_options.tz_aware:
            from mongomock import helpers
            documents = (helpers.make_datetime_timezone_aware_in_document(d) for d in documents)
        documents = itertools.islice(documents, cursor._skip or 0, None)
        stream = (cursor._factory, 0, documents)
        cursor.__dict__["_companion_stream"] = stream
        return stream

    mm_collection.Cursor.__next__ = cursor_next
    mm_collection.Cursor.next = cursor_next
    Collection._iter_documents = iter_documents
    Collection._get_dataset = _native_sort_dataset(Collection._get_dataset)
    Collection._ensure_uniques = ensure_uniques
    if YIELD_PER_OPERATION and _green():
        for name in _ROUND_TRIPS:
            setattr(Collection, name, _yielding(getattr(Collection, name)))
    Collection._update = _field_snapshot_update(Collection._update)
    _installed = True


def _sort_kind(value: Any) -> Any:
    """The family a sort value compares within natively, as BSON compares it; None when only
    mongomock's own comparison will do (missing, null, arrays, documents, booleans, ...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    from datetime import datetime

    if isinstance(value, datetime):
        return "naive" if value.tzinfo is None else "aware"
    return None


def _native_sort_dataset(original):
    """mongomock's find, sorting with Python's own comparison where every document holds a
    plain value of one family (numbers, strings, times) for the sort key: the same order,
    since BSON compares such values as Python does, and sorted() is stable either way. With
    thousands of documents mongomock's per-comparison BSON type dispatch made a sorted page of
    a customer list take seconds; any other key keeps mongomock's own comparison."""
    from mongomock import filtering

    def get_dataset(self, spec, sort, fields, as_class):
        items = list(sort.items() if isinstance(sort, dict) else sort or ())
        if not items or any(str(key).startswith("$") for key, _ in items):
            yield from original(self, spec, sort, fields, as_class)
            return
        documents = list(self._iter_documents(spec))
        for key, direction in reversed(items):
            values = [filtering.resolve_key(key, doc) for doc in documents]
            kinds = {_sort_kind(v) for v in values}
            if len(kinds) == 1 and None not in kinds:
                order = sorted(range(len(documents)), key=values.__getitem__,
                               reverse=direction < 0)
                documents = [documents[i] for i in order]
            else:
                documents = sorted(documents,
                                   key=lambda doc: filtering.resolve_sort_key(key, doc),
                                   reverse=direction < 0)
        for document in documents:
            yield self._copy_only_fields(document, fields, as_class)

    get_dataset.__doc__ = original.__doc__
    return get_dataset


def _green() -> bool:
    """Whether this process runs on eventlet's green threads (the services, the tests). Plain
    threads interleave by themselves; a yield there would only cost a system call."""
    try:
        from eventlet import patcher
    except ImportError:
        return False
    return patcher.is_monkey_patched("time")


# The operations that are one round trip to a server.
_ROUND_TRIPS = ("find", "find_one", "insert_one", "insert_many", "update_one", "update_many",
                "replace_one", "delete_one", "delete_many", "find_one_and_update",
                "find_one_and_replace", "find_one_and_delete", "bulk_write", "count_documents",
                "aggregate", "distinct")


def _yielding(method):
    """The operation, after a yield to other green threads (time.sleep is eventlet's here)."""
    def operation(self, *args, **kwargs):
        time.sleep(0)
        return method(self, *args, **kwargs)

    operation.__name__ = method.__name__
    operation.__doc__ = method.__doc__
    return operation


_MISSING = object()
# Update operators whose arguments name the fields they change.
_FIELD_OPERATORS = {"$set", "$unset", "$inc", "$push", "$pull", "$pullAll", "$addToSet", "$pop",
                    "$min", "$max", "$mul", "$currentDate", "$setOnInsert", "$bit"}


def _touched_fields(document: Any) -> dict[tuple[str, ...], str] | None:
    """The paths an update document changes, each with how to snapshot it ("push": an array
    only appended to, "value": anything else); None when it cannot be told (a replacement,
    a pipeline, $rename, positional paths, overlapping paths) and mongomock's own path runs."""
    if not isinstance(document, dict) or not document:
        return None
    touched: dict[tuple[str, ...], str] = {}
    for operator, fields in document.items():
        if operator not in _FIELD_OPERATORS or not isinstance(fields, dict):
            return None
        for path, argument in fields.items():
            parts = tuple(str(path).split("."))
            if any(p.startswith("$") for p in parts) or parts[0] == "_id":
                return None
            simple_push = (operator == "$push" and isinstance(argument, dict)
                           and set(argument) == {"$each"} and isinstance(argument["$each"], list))
            kind = "push" if simple_push else "value"
            if parts in touched and touched[parts] != kind:
                kind = "value"
            touched[parts] = kind
    paths = sorted(touched)
    for shorter, longer in zip(paths, paths[1:]):
        if longer[:len(shorter)] == shorter:
            return None  # "a" and "a.b" in one update
    return touched


def _through_array(document: dict, path: tuple[str, ...]) -> bool:
    current: Any = document
    for part in path[:-1]:
        if isinstance(current, list):
            return True
        if not isinstance(current, dict) or part not in current:
            return False
        current = current[part]
    return isinstance(current, list)


def _get_path(document: dict, path: tuple[str, ...]) -> Any:
    current: Any = document
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _set_path(document: dict, path: tuple[str, ...], value: Any) -> None:
    current = document
    for part in path[:-1]:
        current = current.setdefault(part, {})
    if value is _MISSING:
        current.pop(path[-1], None)
    else:
        current[path[-1]] = value


class _FieldSnapshot:
    """A copy of only what an update touches: mongomock copied the whole document on every
    update to tell whether it changed, which made each update cost the document's size. An
    array only appended to is remembered by its length."""

    def __init__(self, document: dict, touched: dict[tuple[str, ...], str]) -> None:
        import copy

        self.values: dict[tuple[str, ...], Any] = {}
        self.lengths: dict[tuple[str, ...], int] = {}
        self.full: dict | None = None
        if any(_through_array(document, path) for path in touched):
            self.full = copy.deepcopy(document)  # "a.0" may be an index: mongomock's way
            return
        for path, kind in touched.items():
            value = _get_path(document, path)
            if kind == "push" and isinstance(value, list):
                self.lengths[path] = len(value)
            else:
                self.values[path] = copy.deepcopy(value) if value is not _MISSING else _MISSING

    def differs(self, document: dict) -> bool:
        if self.full is not None:
            return document != self.full
        if any(len(_get_path(document, p) or ()) != n for p, n in self.lengths.items()):
            return True
        return any(_get_path(document, p) != v for p, v in self.values.items())

    def restore(self, document: dict) -> None:
        if self.full is not None:
            document.clear()
            document.update(self.full)
            return
        for path, value in self.values.items():
            _set_path(document, path, value)
        for path, length in self.lengths.items():
            del _get_path(document, path)[length:]


def _field_snapshot_update(original):
    """mongomock's update, with a snapshot of the touched fields only, where the update says
    which they are; otherwise (and for upserts' inserts) mongomock's own path."""
    from mongomock import WriteError, helpers
    from mongomock.collection import DuplicateKeyError, validate_is_mapping

    def update(self, spec, document, upsert=False, manipulate=False, multi=False,
               check_keys=False, hint=None, session=None, collation=None, let=None,
               array_filters=None, **kwargs):
        touched = _touched_fields(document)
        if (touched is None or session or hint or collation or let
                or array_filters or self.database.client.server_info()["versionArray"] < [5]):
            return original(self, spec, document, upsert=upsert, manipulate=manipulate,
                            multi=multi, check_keys=check_keys, hint=hint, session=session,
                            collation=collation, let=let, array_filters=array_filters, **kwargs)
        spec = helpers.patch_datetime_awareness_in_document(spec)
        document = helpers.patch_datetime_awareness_in_document(document)
        validate_is_mapping("spec", spec)
        matched = modified = 0
        for existing in self._iter_documents(spec):
            snapshot = _FieldSnapshot(existing, touched)
            matched += 1
            self._apply_update_document(existing, spec, document, False)
            if snapshot.differs(existing):
                try:
                    self._ensure_uniques(existing)
                except DuplicateKeyError:
                    snapshot.restore(existing)
                    if not self._store.__dict__.get("_companion_unindexable"):
                        _indexes(self._store).reindex(existing)
                    raise
                modified += 1
            if not multi:
                break
        if not matched and upsert:  # an insert: mongomock's own path does it
            return original(self, spec, document, upsert=upsert, manipulate=manipulate,
                            multi=multi, check_keys=check_keys, hint=hint, session=session,
                            collation=collation, let=let, array_filters=array_filters, **kwargs)
        return {"connectionId": self.database.client._id, "err": None, "n": matched,
                "nModified": modified, "ok": 1, "upserted": None, "updatedExisting": bool(matched)}

    update.__doc__ = original.__doc__
    _ = WriteError  # imported to fail loudly here if mongomock moves its names
    return update
