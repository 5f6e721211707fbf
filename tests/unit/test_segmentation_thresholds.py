"""A store's built-in segment thresholds: read with defaults, changed by name, refused by name."""
from __future__ import annotations

import pytest

from services.segmentation import thresholds
from services.segmentation.repository import SegmentationStorage
from shared.errors import ValidationError


@pytest.fixture
def settings(database):
    return SegmentationStorage(database).settings


def test_defaults_then_a_change_keeps_the_other_thresholds_and_stays_per_store(settings):
    assert thresholds.current(settings, "s1")["new_days"] == 30
    changed = thresholds.change(settings, "s1", {"new_days": 14})
    assert changed["new_days"] == 14 and changed["at_risk_days"] == 90
    thresholds.change(settings, "s1", {"at_risk_days": 120})
    assert thresholds.current(settings, "s1")["new_days"] == 14
    assert thresholds.current(settings, "s2")["new_days"] == 30


@pytest.mark.parametrize("values, field", [
    ({"new_days": -1}, "new_days"), ({"vip_top_share": 1.5}, "vip_top_share"),
    ({"new_days": "14"}, "new_days"), ({"shoe_size": 3}, "shoe_size"), ({}, "thresholds"),
    ([1], "thresholds")])
def test_a_value_that_cannot_be_used_is_refused_by_name_and_nothing_is_stored(
        settings, values, field):
    with pytest.raises(ValidationError) as refused:
        thresholds.change(settings, "s1", values)
    assert field in refused.value.details["fields"]
    assert settings.get("s1").get("thresholds") is None
