"""GDPR erasure in segmentation: forget the person's profiles (shared.erasure does the rest:
parked messages, the receipt and the confirmation)."""
from __future__ import annotations

from services.segmentation.profiles import ProfileChange, Profiles
from shared.erasure import DropParked, confirm_erasure
from shared.events import Event

SERVICE = "segmentation"


def handle_erasure_requested(profiles: Profiles, event: Event, drop_parked: DropParked
                             ) -> ProfileChange:
    data = event.data
    receipt = confirm_erasure(
        SERVICE, profiles.storage.erasures, event,
        lambda: profiles.erase(event.store_id, data["customer_ids"], data["request_id"]),
        drop_parked)
    return ProfileChange(["gdpr.erasure_completed"],
                         [(profiles.storage.erasures.collection.name, receipt)])
