"""Custom fields: the store's definitions, and a customer's values (customer_sync keeps both;
docs/custom-fields.md)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import Context, Reply, Route


def list_custom_fields(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_custom_fields", ctx.store_id))


def create_custom_field(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "create_custom_field", ctx.store_id, ctx.body,
                          ctx.actor), 201)


def update_custom_field(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "update_custom_field", ctx.store_id, ctx.path["key"],
                          ctx.body, ctx.actor))


def delete_custom_field(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "delete_custom_field", ctx.store_id, ctx.path["key"],
                          ctx.actor))


def set_custom_values(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "set_custom_values", ctx.store_id,
                          ctx.path["customer_id"], ctx.body, ctx.actor))


ROUTES = [
    Route("GET", "/custom-fields", list_custom_fields, "The store's custom fields",
          "custom-fields", responses={200: {"type": "array", "items": s.CUSTOM_FIELD}}),
    Route("POST", "/custom-fields", create_custom_field, "Define a custom field",
          "custom-fields", scope="write", body=s.NEW_CUSTOM_FIELD,
          responses={201: s.CUSTOM_FIELD},
          description="At most 50 a store; a key taken already is a 409."),
    Route("PUT", "/custom-fields/<key>", update_custom_field, "Change a custom field",
          "custom-fields", scope="write", body=s.CUSTOM_FIELD_CHANGES,
          responses={200: s.CUSTOM_FIELD},
          description="The type changes only while no customer holds a value (else 409); "
                      "values held stay as they are until next written."),
    Route("DELETE", "/custom-fields/<key>", delete_custom_field,
          "Delete a custom field and every customer's value of it", "custom-fields",
          scope="write", responses={200: s.DELETED_CUSTOM_FIELD},
          description="Each live customer who held a value gets a customer.updated; a "
                      "deletion cut short is finished by asking again."),
    Route("PUT", "/customers/<customer_id>/custom-fields", set_custom_values,
          "Set a customer's custom field values", "custom-fields", scope="write",
          body=s.CUSTOM_VALUES, responses={200: s.CUSTOM_VALUES_SET},
          description="Replaces the customer's values; each is checked against the store's "
                      "fields, and a refusal names it as `custom_fields.<key>` (nothing is "
                      "stored unless every value passes). Publishes customer.updated."),
]
