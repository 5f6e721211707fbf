"""The console's "Possible duplicates" page: groups of a store's customers who may be one
person, strongest match first, each record linked to its customer page. Read through the
gateway's API as the signed-in key, like every other page; each group links to the merge page (merge_views)."""
from __future__ import annotations

from werkzeug.wrappers import Response

from services.gateway.console.listing import paged_listing

MATCH_LABELS = {"email": "Same email", "phone": "Same phone",
                "name_postcode": "Same name and postcode"}
# What a group's members share, as a heading says it: "Same email and phone".
_SHARED = {"email": "email", "phone": "phone", "name_postcode": "name and postcode"}


def shared_heading(matched: list[str]) -> str:
    """"Same email, phone, name and postcode": one "Same", the last two joined by "and"
    unless the last already says "and"."""
    parts = [_SHARED.get(kind, kind) for kind in matched]
    if len(parts) > 1 and " and " not in parts[-1]:
        parts[-2:] = [f"{parts[-2]} and {parts[-1]}"]
    return "Same " + ", ".join(parts)


def duplicate_list(page) -> Response:
    args = page.request.args
    state = {"match": args.get("match") if args.get("match") in MATCH_LABELS else ""}
    listing = paged_listing(page, "/duplicates", "/duplicates", state)
    return page.render("duplicates.html", title="Possible duplicates", state=state,
                       result=listing.result, problem=listing.problem, links=listing.links,
                       labels=MATCH_LABELS, heading=shared_heading)
