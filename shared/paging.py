"""Keyset paging as every list of the project answers it: a page size checked the same way,
and a `next_cursor` that is opaque to clients (URL-safe base64 of compact JSON, unpadded).

Decoding also takes padded base64 and JSON with spaces, the shape customer_sync's cursors had,
so a client paging through a list across a deploy keeps its place.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Mapping

from shared.errors import ValidationError

MAX_PAGE_SIZE = 500


def page_size(page: Mapping[str, Any], default: int, field: str = "page.size") -> int:
    """The page's `size` (or `default`): an integer from 1 to MAX_PAGE_SIZE, else the usual
    ValidationError naming `field`."""
    size = page.get("size", default)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError(f"{field} must be 1-{MAX_PAGE_SIZE}", {"fields": {field: ["range"]}})
    return size


def encode_cursor(value: Any) -> str:
    """The position after a page's last item (JSON-ready) as a cursor for the next page."""
    body = json.dumps(value, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """What `encode_cursor` was given; ValueError for text it did not make (the caller
    answers with its own ValidationError, naming its field)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError("not a cursor this service issued") from None
