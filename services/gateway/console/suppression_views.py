"""The console's suppression page: the store's addresses and numbers that are not sent to,
why, and their history; an admin lifts one, saying why. Through the gateway's API as the
signed-in key, like every other page."""
from __future__ import annotations

from werkzeug.wrappers import Response

from services.gateway.console.api import ApiError
from services.gateway.console.listing import paged_listing

PREFIX = "/console"
KIND_LABELS = {"smtp_refusal": "refused by the mail server", "bounce": "bounced",
               "complaint": "complained of spam", "sms_unsubscribed": "opted out at Twilio"}
BLOCK_LABELS = {"all": "every message", "marketing": "marketing only", "nothing": "nothing"}


def suppression_list(page) -> Response:
    args = page.request.args
    state = {"channel": args.get("channel") if args.get("channel") in ("email", "sms") else "",
             "address": (args.get("address") or "").strip()[:254],
             "include_lifted": "true" if args.get("include_lifted") == "true" else ""}
    listing = paged_listing(page, "/notifications/suppressions", "/suppressions", state)
    return page.render("suppressions.html", title="Suppressed addresses", state=state,
                       result=listing.result, problem=listing.problem, links=listing.links,
                       kinds=KIND_LABELS, block_labels=BLOCK_LABELS,
                       filtered=any(state.values()), back=listing.url_for(listing.cursor, []))


def suppression_lift(page) -> Response:
    form = page.request.form
    channel, address = form.get("channel", ""), form.get("address", "")
    reason = (form.get("reason") or "").strip()
    back = form.get("back", "")
    back = back if back.startswith(PREFIX + "/suppressions") else PREFIX + "/suppressions"
    if not reason:
        page.flash("error", "Nothing was lifted: give the reason the address may be sent to "
                            "again.")
        return page.redirect(back)
    try:
        page.api.post("/notifications/suppressions/lift",
                      {"channel": channel, "address": address, "reason": reason})
    except ApiError as exc:
        page.flash("error", f"Nothing was lifted: {exc.message()}")
    else:
        page.flash("success", f"Lifted: {address} may be sent to again. The reason is kept in "
                              "its history.")
    return page.redirect(back)
