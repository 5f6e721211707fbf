"""Every route the gateway serves, in one table."""
from __future__ import annotations

import json

from werkzeug.wrappers import Response

from services.gateway import openapi
from services.gateway.handlers import (bulk, catalogue, companies, consent, crm, custom_fields,
                                       customers, duplicates, gdpr, keys, loyalty, merges,
                                       notifications, suppressions, transfer, webhooks)
from services.gateway.routing import Context, Route


def _all_routes() -> list[Route]:
    routes = (customers.ROUTES + duplicates.ROUTES + merges.ROUTES + bulk.ROUTES + transfer.ROUTES + crm.ROUTES + catalogue.ROUTES + loyalty.ROUTES
              + notifications.ROUTES + suppressions.ROUTES + gdpr.ROUTES + consent.ROUTES + keys.ROUTES
              + webhooks.ROUTES + custom_fields.ROUTES + companies.ROUTES)
    document = None

    def openapi_document(ctx: Context) -> Response:
        nonlocal document
        if document is None:
            document = json.dumps(openapi.document(routes))
        return Response(document, mimetype="application/json")

    routes.append(Route("GET", "/openapi.json", openapi_document, "This API's OpenAPI document",
                        "meta", scope=None,
                        responses={200: {"type": "object", "required": ["openapi", "info", "paths"],
                                         "properties": {"openapi": {"type": "string"}}}}))
    return routes


def build_routes() -> list[Route]:
    return _all_routes()
