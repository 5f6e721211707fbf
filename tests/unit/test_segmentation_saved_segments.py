"""Saved segments: created, edited and deleted through one use case over their repository."""
from __future__ import annotations

import itertools

import pytest

from services.segmentation.repository import SegmentationStorage
from services.segmentation.saved_segments import SavedSegments
from shared.errors import NotFound, ValidationError

BIG = [{"field": "total_spent", "op": "gt", "value": 10000}]


@pytest.fixture
def segments(database):
    storage = SegmentationStorage(database)
    storage.ensure_indexes()
    ids = (f"seg{n}" for n in itertools.count(1))
    return SavedSegments(storage.saved_segments, new_id=lambda: next(ids))


def test_an_edit_replaces_name_match_and_conditions(segments):
    made = segments.create("s1", {"name": "Big", "conditions": BIG})
    changed = segments.update("s1", made["segment_id"], {
        "name": "Gift buyers", "match": "any",
        "conditions": [{"field": "tags", "op": "contains", "value": "Gift"}]})
    assert changed == {"segment_id": "seg1", "name": "Gift buyers", "match": "any",
                       "conditions": [{"field": "tags", "op": "contains", "value": "gift"}]}
    assert segments.list("s1") == [changed]


def test_an_edit_is_validated_as_on_create_and_stores_nothing_on_refusal(segments):
    made = segments.create("s1", {"name": "Big", "conditions": BIG})
    with pytest.raises(ValidationError) as refused:
        segments.update("s1", "seg1", {"name": "Big", "conditions": [
            {"field": "total_spent", "op": "contains", "value": 1}]})
    assert "conditions.0.op" in refused.value.details["fields"]
    with pytest.raises(ValidationError) as renamed:
        segments.update("s1", "seg1", {"segment_id": "other", "name": "x", "conditions": BIG})
    assert "segment_id" in renamed.value.details["fields"]
    assert segments.get("s1", "seg1") == made


def test_an_edit_never_makes_a_segment_nor_reaches_another_store(segments):
    segments.create("s1", {"name": "Big", "conditions": BIG})
    with pytest.raises(NotFound):
        segments.update("s2", "seg1", {"name": "Stolen", "conditions": BIG})
    with pytest.raises(NotFound):
        segments.update("s1", "nosuch", {"name": "New", "conditions": BIG})
    assert segments.list("s2") == [] and [s["name"] for s in segments.list("s1")] == ["Big"]


def test_delete_removes_only_that_stores_segment(segments):
    segments.create("s1", {"name": "Big", "conditions": BIG})
    with pytest.raises(NotFound):
        segments.delete("s2", "seg1")
    assert segments.delete("s1", "seg1") == {"deleted": "seg1"}
    assert segments.list("s1") == []
    with pytest.raises(NotFound):
        segments.delete("s1", "seg1")


@pytest.mark.parametrize("segment_id", ["a:b", "", "x" * 65, 7, None, "../x"])
def test_an_id_that_could_join_keys_differently_is_refused_before_any_read(segments, segment_id):
    segments.create("s1:a", {"segment_id": "b", "name": "Other store's", "conditions": BIG})
    for call in (lambda: segments.get("s1", segment_id), lambda: segments.delete("s1", segment_id),
                 lambda: segments.update("s1", segment_id, {"name": "x", "conditions": BIG})):
        with pytest.raises(ValidationError) as refused:
            call()
        assert "segment_id" in refused.value.details["fields"]
    assert len(segments.list("s1:a")) == 1


def test_a_saved_segment_may_not_take_a_built_in_segments_name(segments):
    with pytest.raises(ValidationError) as refused:
        segments.create("s1", {"segment_id": "vip", "name": "Mine", "conditions": BIG})
    assert "segment_id" in refused.value.details["fields"]
    assert segments.list("s1") == []


def test_the_list_is_by_name_and_the_repository_indexes_it(segments, database):
    for name in ("b", "a", "c"):
        segments.create("s1", {"name": name, "conditions": BIG})
    assert [s["name"] for s in segments.list("s1")] == ["a", "b", "c"]
    indexed = [list(index["key"].items()) for index in database["saved_segments"].list_indexes()]
    assert [("store_id", 1), ("name", 1)] in indexed


def test_definition_answers_a_built_in_or_a_saved_segment(segments):
    segments.create("s1", {"name": "Big", "conditions": BIG})
    assert segments.definition("s1", "vip")["conditions"][0]["value"] == "vip"
    assert segments.definition("s1", "seg1")["conditions"][0]["field"] == "total_spent"
    for missing in ("nosuch", "a:b"):
        with pytest.raises(NotFound):
            segments.definition("s1", missing)
