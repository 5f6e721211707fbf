"""A store's built-in segment thresholds (when New ends, what makes a VIP, when a customer is
At Risk): read and changed per store, every value checked before anything is stored."""
from __future__ import annotations

from typing import Any

from services.segmentation import stats as st
from services.segmentation.repository import StoreSettingsRepository
from shared.errors import ValidationError


def current(settings: StoreSettingsRepository, store_id: str) -> dict:
    """The store's thresholds, defaults filled in."""
    return st.Thresholds.from_dict(settings.get(store_id).get("thresholds") or {}).to_dict()


def change(settings: StoreSettingsRepository, store_id: str, data: Any) -> dict:
    """Set the named thresholds (the others keep theirs); a value that cannot be used, or a
    name that is not a threshold, is refused naming it, and nothing is stored."""
    if not isinstance(data, dict) or not data:
        raise ValidationError("thresholds must be an object naming at least one threshold",
                              {"fields": {"thresholds": ["not an object"]}})
    held = settings.get(store_id).get("thresholds") or {}
    try:
        thresholds = st.Thresholds.from_dict({**held, **data})
    except st.ThresholdError as exc:
        raise ValidationError(f"invalid thresholds: {exc}", {"fields": {exc.field: [str(exc)]}}
                              ) from None
    except TypeError as exc:  # e.g. a non-string key
        raise ValidationError(f"invalid thresholds: {exc}",
                              {"fields": {"thresholds": ["invalid"]}}) from None
    settings.update(store_id, {"thresholds": thresholds.to_dict()})
    return thresholds.to_dict()
