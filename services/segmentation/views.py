"""What segmentation answers about profiles, groups, rules and the store: read-only views, so
entrypoints and exports show a profile the same way."""
from __future__ import annotations

from services.segmentation.profiles import ERASED, Profiles
from services.segmentation.reports import PERIODS, store_report
from services.segmentation.directory import search_customers
from services.segmentation.repository import SegmentationStorage
from services.segmentation.saved_segments import SavedSegments
from shared.errors import NotFound, ValidationError
from shared.paging import page_size
from shared.times import iso, utcnow


def profile_view(doc: dict) -> dict:
    """A profile as get_profile and the export answer it, times as ISO-8601 UTC."""
    return {
        "store_id": doc["store_id"], "customer_id": doc["customer_id"],
        "status": doc.get("status", "active"),
        "segment": doc.get("segment"), "stats": doc.get("stats"),
        "tags": [{"tag": t, "source": v.get("source"), "rule_id": v.get("rule_id"),
                  "added_at": iso(v.get("added_at"))} for t, v in sorted((doc.get("tags") or {}).items())],
        "groups": [{"group": g, "source": v.get("source"), "rule_id": v.get("rule_id")}
                   for g, v in sorted((doc.get("groups") or {}).items())],
        "country": (doc.get("contact") or {}).get("country", ""),
        "email_domain": (doc.get("contact") or {}).get("email_domain", ""),
    }


def active_profile(storage: SegmentationStorage, store_id: str, customer_id: str) -> dict:
    """A profile held here and not erased, or NotFound."""
    doc = storage.profiles.get(store_id, customer_id)
    if doc is None or doc.get("status") == ERASED:
        raise NotFound(f"no profile for customer {customer_id} in store {store_id}")
    return doc


def export(storage: SegmentationStorage, store_id: str, customer_id: str) -> dict | None:
    """Everything held about one person (GDPR access and portability): the profile as
    get_profile shows it, its RFM scores, saved segments, contact facts and order facts; None
    when no profile is held (or it was erased). Times stay datetimes: the export writes them."""
    doc = storage.profiles.get(store_id, customer_id)
    if doc is None or doc.get("status") == ERASED:
        return None
    return {"profile": profile_view(doc), "rfm": doc.get("rfm"),
            "saved_segments": doc.get("saved_segments") or [],
            "contact": doc.get("contact") or {},
            "orders": [{"order_id": order_id, **fact}
                       for order_id, fact in sorted((doc.get("orders") or {}).items())]}


def groups_with_counts(storage: SegmentationStorage, store_id: str) -> list:
    """Saved groups by slug, each with `customers`: how many active customers are in it."""
    counts = storage.profiles.member_counts(store_id, "group_list")
    return [{**group, "customers": counts.get(group["slug"], 0)}
            for group in storage.groups_of(store_id)]


def segments_with_counts(storage: SegmentationStorage, saved: SavedSegments,
                         store_id: str) -> list:
    """Saved segments by name, each with `customers`: how many active customers are in it."""
    counts = storage.profiles.member_counts(store_id, "saved_segments")
    return [{**segment, "customers": counts.get(segment["segment_id"], 0)}
            for segment in saved.list(store_id)]


def segment_members(profiles: Profiles, saved: SavedSegments, store_id: str, segment_id: str,
                    page: dict | None) -> dict:
    """Members of a built-in or saved segment, a page at a time."""
    page = page or {}
    size = page_size(page, default=50)
    definition = saved.definition(store_id, segment_id)
    docs, next_cursor = profiles.members(store_id, definition, page.get("cursor"), size)
    return {"items": [profile_view(d) for d in docs], "next_cursor": next_cursor}


def report(storage: SegmentationStorage, store_id: str, period: str) -> dict:
    if period not in PERIODS:
        raise ValidationError(f"period must be one of {', '.join(PERIODS)}",
                              {"fields": {"period": ["invalid"]}})
    return {"store_id": store_id,
            **store_report(storage.profiles.for_report(store_id), utcnow(), period)}


def search(storage: SegmentationStorage, store_id: str, filters: dict | None,
           sort: dict | None, page: dict | None) -> dict:
    """A page of the store's active customers; a saved-segment filter must name one."""
    saved = (filters or {}).get("saved_segment") if isinstance(filters, dict) else None
    if isinstance(saved, str) and storage.saved_segments.get(store_id, saved) is None:
        raise ValidationError(f"no saved segment {saved} in store {store_id}",
                              {"fields": {"filters": {"saved_segment": ["not found"]}}})
    return search_customers(storage.profiles, store_id, filters, sort, page)
