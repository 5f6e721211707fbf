"""API keys (admin scope): a store's keys, created and revoked over the API once an operator
has made the first with `companion keys create`."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import Context, Param, Reply, Route


def list_keys(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_api_keys", ctx.store_id,
                          ctx.query["include_revoked"]))


def create_key(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("customer_sync", "create_api_key", ctx.store_id, body["name"],
                          body["scopes"], ctx.actor, body.get("rate_limit_per_minute")), 201)


def revoke_key(ctx: Context) -> Reply:
    """Revoke, then forget the key here at once; other gateways hear of it by broadcast."""
    revoked = ctx.call("customer_sync", "revoke_api_key", ctx.store_id, ctx.path["key_id"],
                       ctx.actor)
    if ctx.authenticator is not None:
        ctx.authenticator.forget_key(revoked["key_id"])
    return Reply(revoked)


ROUTES = [
    Route("GET", "/keys", list_keys, "The store's API keys (never their secrets)", "keys",
          scope="admin",
          query=[Param("include_revoked", "list revoked keys too", "boolean", default=False)],
          responses={200: {"type": "array", "items": s.API_KEY}}),
    Route("POST", "/keys", create_key, "Create an API key; its secret is shown only here",
          "keys", scope="admin", body=s.NEW_API_KEY, responses={201: s.NEW_API_KEY_ANSWER},
          uncached_key=True),
    Route("DELETE", "/keys/<key_id>", revoke_key, "Revoke an API key", "keys", scope="admin",
          responses={200: s.API_KEY}, uncached_key=True),
]
