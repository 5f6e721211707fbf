"""The console's "Possible duplicates" page: groups of a store's customers who may be one
person, strongest match first, each record linked to its customer page. Read through the
gateway's API as the signed-in key, like every other page; merging comes later."""
from __future__ import annotations

from werkzeug.wrappers import Response

from services.gateway.console.listing import paged_listing

MATCH_LABELS = {"email": "Same email", "phone": "Same phone",
                "name_postcode": "Same name and postcode"}


def duplicate_list(page) -> Response:
    args = page.request.args
    state = {"match": args.get("match") if args.get("match") in MATCH_LABELS else ""}
    listing = paged_listing(page, "/duplicates", "/duplicates", state)
    return page.render("duplicates.html", title="Possible duplicates", state=state,
                       result=listing.result, problem=listing.problem, links=listing.links,
                       labels=MATCH_LABELS)
