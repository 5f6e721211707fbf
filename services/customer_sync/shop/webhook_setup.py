"""Registering a shop's webhooks through its REST API, so an operator never types them in.

For every topic customer_sync needs (`SUPPORTED_TOPICS`) the shop must hold one *active*
webhook that delivers to our door for this store, signed with the store's webhook secret.
`register_webhooks` looks first (GET /webhooks, every page) and only then acts, per topic:

- an active webhook of the topic already delivers to the URL: nothing to do (`unchanged`),
  unless the shop shows it signing with another secret, which is reset (`updated`): its
  deliveries would otherwise all be refused with 401;
- a paused or disabled one (WooCommerce disables a webhook after 5 failed deliveries) delivers
  to the URL: it is re-activated with the store's secret (`reactivated`);
- none: one is created (`created`). WooCommerce pings the delivery URL before it saves the
  webhook (an unsigned `webhook_id=N`, which our door answers 200), so a URL the shop cannot
  reach fails here, named, rather than silently later.

Running it twice changes nothing the second time. A POST is not retried when its outcome is
unknown (`WooClient.post`): the operator runs the command again, and the look-first step finds
a webhook the lost answer created instead of creating a second one. One topic failing does not
stop the others; it is reported with the shop's reason (`failed`).
"""
from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.schemas import STORE_ID
from services.customer_sync.door.webhooks import SUPPORTED_TOPICS
from services.customer_sync.shop.woo_client import WooApiError, WooClient
from shared.errors import NotFound, ValidationError

log = logging.getLogger(__name__)

# The order an operator reads them in: customers first, then orders.
REQUIRED_TOPICS: tuple[str, ...] = tuple(sorted(
    SUPPORTED_TOPICS, key=lambda t: (not t.startswith("customer."), t)))
WEBHOOK_NAME = "Woo Companion ({topic})"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def door_path(store_id: str) -> str:
    """The path of customer_sync's webhook endpoint for a store."""
    return f"/webhooks/woocommerce/{store_id}"


def delivery_url_for(store_id: str, url: str) -> str:
    """The full delivery URL: `url` as given when it already ends in the store's door path, or
    the door path appended to a bare base URL (`https://companion.example`). Anything else is
    refused: deliveries to another path would never reach this store."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError("delivery_url is required", {"fields": {"delivery_url": ["required"]}})
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("delivery_url must be an http(s) URL",
                              {"fields": {"delivery_url": ["not an http(s) URL"]}})
    if parts.scheme != "https" and parts.hostname not in _LOCAL_HOSTS:
        # Webhook bodies carry people's names and addresses.
        raise ValidationError("delivery_url must be https:// (http only for localhost)",
                              {"fields": {"delivery_url": ["must be https"]}})
    if parts.query or parts.fragment:
        raise ValidationError("delivery_url must not have a query or fragment",
                              {"fields": {"delivery_url": ["query or fragment"]}})
    path = parts.path.rstrip("/")
    wanted = door_path(store_id)
    if path == "":
        path = wanted
    elif not path.endswith(wanted):
        raise ValidationError(
            f"delivery_url must end with {wanted} (or be a bare base URL to append it to)",
            {"fields": {"delivery_url": [f"must end with {wanted}"]}})
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _same_url(a: object, b: str) -> bool:
    return isinstance(a, str) and a.strip().rstrip("/") == b.rstrip("/")


class WebhookSetup:
    """Makes a shop's webhooks for a store what customer_sync needs (see module doc)."""

    def __init__(self, storage: CustomerSyncStorage,
                 client_factory: Callable[[Store], WooClient]) -> None:
        self.storage = storage
        self.client_factory = client_factory

    def register(self, store_id: object, delivery_url: object) -> dict:
        """Ensure one active, correctly signed webhook per needed topic; answers what it did
        per topic: `{"store_id", "delivery_url", "webhooks": [{topic, webhook_id, outcome}]}`."""
        if not isinstance(store_id, str) or not store_id:
            raise ValidationError("store_id is required", {"fields": {"store_id": ["required"]}})
        try:
            STORE_ID(store_id)
        except Exception:
            raise ValidationError("store_id is not a valid store id",
                                  {"fields": {"store_id": ["invalid"]}}) from None
        store = self.storage.stores.get(store_id)
        if store is None:
            raise NotFound(f"no store {store_id} (add it with `companion stores add`)")
        url = delivery_url_for(store_id, delivery_url)  # type: ignore[arg-type]
        client = self.client_factory(store)
        try:
            try:
                # context=edit: WooCommerce shows a webhook's secret only in that context.
                existing = [hook for page in client.iter_pages("webhooks", {"context": "edit"})
                            for hook in page.items]
            except WooApiError as exc:
                raise ValidationError(f"cannot read the shop's webhooks: {exc}",
                                      {"shop_status": exc.status, "shop_code": exc.code}) from None
            results = [self._ensure(client, store, url, topic, existing) for topic in REQUIRED_TOPICS]
        finally:
            client.close()
        log.info("webhooks registered: %s",
                 ", ".join(f"{r['topic']} {r['outcome']}" for r in results),
                 extra={"store_id": store_id})
        return {"store_id": store_id, "delivery_url": url, "webhooks": results}

    def _ensure(self, client: WooClient, store: Store, url: str, topic: str,
                existing: list[dict]) -> dict:
        ours = sorted((w for w in existing
                       if w.get("topic") == topic and _same_url(w.get("delivery_url"), url)),
                      key=lambda w: int(w.get("id") or 0))
        active = [w for w in ours if w.get("status") == "active"]
        try:
            if active:
                hook = active[0]
                if "secret" in hook and hook["secret"] != store.webhook_secret:
                    client.put(f"webhooks/{hook['id']}", {"secret": store.webhook_secret})
                    return _result(topic, hook["id"], "updated")
                return _result(topic, hook["id"], "unchanged")
            if ours:
                hook = ours[-1]  # the newest of the stopped ones
                client.put(f"webhooks/{hook['id']}",
                           {"status": "active", "secret": store.webhook_secret})
                return _result(topic, hook["id"], "reactivated")
            created = client.post("webhooks", {
                "name": WEBHOOK_NAME.format(topic=topic), "topic": topic, "delivery_url": url,
                "secret": store.webhook_secret, "status": "active"})
            return _result(topic, (created or {}).get("id"), "created")
        except WooApiError as exc:
            log.warning("webhook %s could not be set up: %s", topic, exc,
                        extra={"store_id": store.store_id})
            return {**_result(topic, ours[0].get("id") if ours else None, "failed"),
                    "error": str(exc)}


def _result(topic: str, webhook_id: object, outcome: str) -> dict:
    return {"topic": topic, "webhook_id": None if webhook_id is None else int(webhook_id),
            "outcome": outcome}
