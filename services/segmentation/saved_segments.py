"""Saved segments: a store's own named conditions over customer profiles (last order in
November or December, an order over 100.00, tagged gift), kept beside the built-in segments.

Every write is validated as on create, with the failing field named; an id is a key part, so
one that could join store and segment ids differently (':' or anything outside the pattern) is
refused before any read.
"""
from __future__ import annotations

import re
import uuid
from typing import Callable

from services.segmentation.repository import SavedSegmentRepository
from services.segmentation.rules import RULE_ID_PATTERN, validate_filter
from services.segmentation.stats import SEGMENTS
from shared.errors import NotFound, ValidationError

_SEGMENT_ID = re.compile(RULE_ID_PATTERN)


def new_segment_id() -> str:
    return uuid.uuid4().hex[:12]


def valid_segment_id(segment_id: object) -> str:
    """The id as given, or a ValidationError naming `segment_id`."""
    if not isinstance(segment_id, str) or not _SEGMENT_ID.match(segment_id):
        raise ValidationError("segment_id must be 1-64 letters, digits, '-' or '_'",
                              {"fields": {"segment_id": ["invalid"]}})
    return segment_id


def builtin_definition(segment: str) -> dict:
    """A built-in segment as the conditions a saved one is made of."""
    return {"match": "all", "conditions": [{"field": "segment", "op": "eq", "value": segment}]}


class SavedSegments:
    """Create, change, delete and look up a store's saved segments."""

    def __init__(self, repository: SavedSegmentRepository,
                 new_id: Callable[[], str] = new_segment_id) -> None:
        self.repository = repository
        self.new_id = new_id

    def create(self, store_id: str, data: object) -> dict:
        """Save a new segment, or replace the one whose `segment_id` the body names."""
        segment = validate_filter(data)
        if segment.get("segment_id") in SEGMENTS:
            raise ValidationError("segment_id names a built-in segment; choose another",
                                  {"fields": {"segment_id": ["a built-in segment's name"]}})
        segment["segment_id"] = segment.get("segment_id") or self.new_id()
        self.repository.put(store_id, segment)
        return segment

    def update(self, store_id: str, segment_id: object, data: object) -> dict:
        """Change an existing segment's name, match or conditions; a missing one is not found
        (an edit never makes a segment)."""
        segment_id = valid_segment_id(segment_id)
        if not isinstance(data, dict):
            raise ValidationError("segment must be an object",
                                  {"fields": {"segment": ["not an object"]}})
        if data.get("segment_id", segment_id) != segment_id:
            raise ValidationError("segment_id is the path's; it cannot be changed",
                                  {"fields": {"segment_id": ["differs from the path"]}})
        segment = validate_filter({**data, "segment_id": segment_id})
        self.get(store_id, segment_id)
        self.repository.put(store_id, segment)
        return segment

    def delete(self, store_id: str, segment_id: object) -> dict:
        segment_id = valid_segment_id(segment_id)
        if not self.repository.delete(store_id, segment_id):
            raise NotFound(f"no saved segment {segment_id} in store {store_id}")
        return {"deleted": segment_id}

    def get(self, store_id: str, segment_id: object) -> dict:
        segment_id = valid_segment_id(segment_id)
        segment = self.repository.get(store_id, segment_id)
        if segment is None:
            raise NotFound(f"no saved segment {segment_id} in store {store_id}")
        return segment

    def list(self, store_id: str) -> list[dict]:
        return self.repository.for_store(store_id)

    def definition(self, store_id: str, segment_id: object) -> dict:
        """The conditions of a built-in segment (vip, new, ...) or of a saved one."""
        if segment_id in SEGMENTS:
            return builtin_definition(segment_id)
        try:
            return self.get(store_id, segment_id)
        except (NotFound, ValidationError):
            raise NotFound(f"no segment {segment_id} in store {store_id}") from None
