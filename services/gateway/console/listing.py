"""A filtered list the console reads a page at a time from the API (the send log, suppressed
addresses, possible duplicates): the cursor taken from the address, the page fetched as the
signed-in key, and the first/previous/next links that keep the filters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

from services.gateway.console import present
from services.gateway.console.api import ApiError

PREFIX = "/console"


@dataclass(frozen=True)
class Listing:
    result: Any  # the API's answer, None when it refused
    problem: str  # why it refused, for the page to say
    links: dict[str, str | None]
    cursor: str | None
    url_for: Callable[[str | None, list[str]], str]  # (cursor, back trail) -> this page's address


def paged_listing(page, api_path: str, page_path: str, state: dict[str, str],
                  in_address: Callable[[str, str], bool] = lambda name, value: bool(value)
                  ) -> Listing:
    """One page of `api_path` filtered by `state` (already checked; empty values are no
    filter); `in_address` says which filters a link spells out (a default may be left out)."""
    args = page.request.args
    cursor = (args.get("cursor") or "")[:present.MAX_CURSOR_LENGTH] or None
    query = [(k, v) for k, v in state.items() if v] + ([("cursor", cursor)] if cursor else [])
    result, problem = None, ""
    try:
        result = page.api.get(api_path, query)
    except ApiError as exc:
        problem = exc.message()

    def url_for(c: str | None, back: list[str]) -> str:
        pairs = [(k, v) for k, v in state.items() if in_address(k, v)]
        pairs += ([("cursor", c)] if c else []) + [("back", b) for b in back]
        return PREFIX + page_path + ("?" + urlencode(pairs) if pairs else "")

    links = present.paging(url_for, cursor, present.trail_of(args) if cursor else [],
                           (result or {}).get("next_cursor"))
    return Listing(result, problem, links, cursor, url_for)
