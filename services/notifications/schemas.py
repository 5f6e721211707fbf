"""What notifications accepts from callers for its send log, checked before anything is read,
refused with the failing field named."""
from __future__ import annotations

from shared.errors import ValidationError
from shared.paging import page_size
from shared.send_log import SEND_FILTERS


def send_log_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1-1000", {"fields": {"limit": ["range"]}})
    return limit


def send_page_request(filters: object, page: object) -> tuple[dict, int, str | None]:
    """Filters (each an exact string value), page size and cursor of a send-log page."""
    filters = dict(filters or {})
    page = page or {}
    unknown = sorted(set(filters) - set(SEND_FILTERS))
    bad = unknown + [k for k, v in filters.items()
                     if k in SEND_FILTERS and not (isinstance(v, str) and 0 < len(v) <= 200)]
    if bad:
        raise ValidationError(f"filters {', '.join(bad)}: unknown or not a string",
                              {"fields": {f"filters.{k}": ["invalid"] for k in bad}})
    size = page_size(page, default=50)
    cursor = page.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise ValidationError("page.cursor must be a string",
                              {"fields": {"page.cursor": ["invalid"]}})
    return filters, size, cursor


def writable(data: object) -> object:
    """What a caller saves, without the read-only `updated_at` it may have fetched along, so
    a template or workflow read and saved back unchanged is accepted."""
    if isinstance(data, dict) and "updated_at" in data:
        return {k: v for k, v in data.items() if k != "updated_at"}
    return data
