"""What a store sets up for its customers: named groups with benefits, and rules that tag and
group customers; each validated, with the failing field named, before it is stored."""
from __future__ import annotations

import uuid

from services.segmentation.repository import SegmentationStorage
from services.segmentation.rules import validate_rule
from services.segmentation.schemas import load_group
from shared.errors import NotFound


def save_group(storage: SegmentationStorage, store_id: str, group: object) -> dict:
    saved = load_group(group)
    storage.put_group(store_id, saved)
    return saved


def save_rule(storage: SegmentationStorage, store_id: str, rule: object) -> dict:
    saved = validate_rule(rule)
    saved["rule_id"] = saved.get("rule_id") or uuid.uuid4().hex[:12]
    storage.put_rule(store_id, saved)
    return saved


def delete_rule(storage: SegmentationStorage, store_id: str, rule_id: str) -> dict:
    if not storage.delete_rule(store_id, rule_id):
        raise NotFound(f"no rule {rule_id} in store {store_id}")
    return {"deleted": rule_id}
