"""The console's "Possible duplicates" page: groups of a store's customers who may be one
person, strongest match first, each record linked to its customer page. Read through the
gateway's API as the signed-in key, like every other page; merging comes later."""
from __future__ import annotations

from urllib.parse import urlencode

from werkzeug.wrappers import Response

from services.gateway.console import present
from services.gateway.console.api import ApiError

PREFIX = "/console"
MATCH_LABELS = {"email": "Same email", "phone": "Same phone",
                "name_postcode": "Same name and postcode"}


def duplicate_list(page) -> Response:
    args = page.request.args
    state = {"match": args.get("match") if args.get("match") in MATCH_LABELS else ""}
    cursor = (args.get("cursor") or "")[:present.MAX_CURSOR_LENGTH] or None
    query = [(k, v) for k, v in state.items() if v] + ([("cursor", cursor)] if cursor else [])
    result, problem = None, ""
    try:
        result = page.api.get("/duplicates", query)
    except ApiError as exc:
        problem = exc.message()

    def url_for(c, back):
        pairs = [(k, v) for k, v in state.items() if v]
        pairs += ([("cursor", c)] if c else []) + [("back", b) for b in back]
        return PREFIX + "/duplicates" + ("?" + urlencode(pairs) if pairs else "")

    links = present.paging(url_for, cursor, present.trail_of(args) if cursor else [],
                           (result or {}).get("next_cursor"))
    return page.render("duplicates.html", title="Possible duplicates", state=state,
                       result=result, problem=problem, links=links, labels=MATCH_LABELS)
