"""Webhook deliveries in quarantine (admin scope): what customer_sync answered 200 for but
could not apply, listed, shown and replayed as `companion quarantine` does."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.routing import Context, Reply, Route


def list_quarantined(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_quarantined", ctx.store_id,
                          {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]}))


def show_quarantined(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "show_quarantined", ctx.store_id,
                          ctx.path["quarantine_id"]))


def replay_quarantined(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("customer_sync", "replay_quarantined", ctx.store_id,
                          body.get("quarantine_ids"), bool(body.get("all", False))))


ROUTES = [
    Route("GET", "/webhooks/quarantine", list_quarantined,
          "Webhook deliveries that could not be applied, oldest first (no bodies)", "webhooks",
          scope="admin", query=PAGE_PARAMS,
          responses={200: s.page_of(s.QUARANTINED_DELIVERY)}),
    Route("GET", "/webhooks/quarantine/<quarantine_id>", show_quarantined,
          "One quarantined webhook delivery, with the body the shop sent", "webhooks",
          scope="admin", responses={200: s.QUARANTINED_DELIVERY_BODY}),
    Route("POST", "/webhooks/quarantine/replay", replay_quarantined,
          "Apply quarantined webhook deliveries again, once their cause is fixed", "webhooks",
          scope="admin", body=s.QUARANTINE_REPLAY, responses={200: s.QUARANTINE_REPLAYED},
          description="Name deliveries with `quarantine_ids`, or pass `all`. One that fails "
                      "again goes back to quarantine with its new error."),
]
