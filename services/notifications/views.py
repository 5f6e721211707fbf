"""What notifications answers about templates, workflows, sends and previews: stored documents
as JSON-ready views, so every entrypoint and export shows them the same way."""
from __future__ import annotations

from typing import Any

from services.notifications.notifier import Notifier
from services.notifications.repository import ERASED, NotificationsStorage
from services.notifications.schemas import send_page_request
from services.notifications.sender import context as template_context
from services.notifications.suppression import Suppressions
from services.notifications.templates import (SAMPLE_CONTEXT, SAMPLE_EXTRAS, RenderFailed, render,
                                               validate_template)
from shared.errors import NotFound, ValidationError
from shared.times import iso, iso_everywhere


def as_json(value: Any) -> Any:
    """Stored documents as JSON-ready values (times as ISO-8601 UTC), without owed events."""
    return iso_everywhere(value, drop=("outbox",))


def read_view(doc: dict) -> dict:
    """A template or workflow as RPC answers it: times as ISO-8601 UTC (docs/design.md)."""
    view = dict(doc)
    if "updated_at" in view:
        view["updated_at"] = iso(view["updated_at"])
    return view


def templates(notifier: Notifier, store_id: str) -> list:
    return [read_view(t) for t in sorted(notifier.templates(store_id).values(),
                                         key=lambda t: t["slug"])]


def template(notifier: Notifier, store_id: str, slug: str) -> dict:
    found = notifier.templates(store_id).get(slug)
    if found is None:
        raise NotFound(f"no template {slug} in store {store_id}")
    return read_view(found)


def workflows(notifier: Notifier, store_id: str) -> list:
    return [read_view(w) for w in sorted(notifier.workflows(store_id),
                                         key=lambda w: w["workflow_id"])]


def preview(storage: NotificationsStorage, notifier: Notifier, store_id: str, template: object,
            customer_id: str | None) -> dict:
    """A stored template (by slug) or a draft (an object) rendered with a customer's data, or
    with sample data when no customer is named."""
    if isinstance(template, str):
        found = notifier.templates(store_id).get(template)
        if found is None:
            raise NotFound(f"no template {template} in store {store_id}")
        template = found
    else:
        template = validate_template(template, notifier.render_limits)
    if customer_id:
        contact = storage.contacts.get(store_id, customer_id)
        if contact is None or contact.get("status") == ERASED:
            raise NotFound(f"no customer {customer_id} in store {store_id}")
        # The customer's own data, with sample coupon and loyalty facts: a preview makes
        # no coupon at the shop.
        context = {**SAMPLE_EXTRAS, **template_context(contact, notifier.settings(store_id))}
    else:
        context = SAMPLE_CONTEXT
    try:
        rendered = render(template, context, notifier.render_limits)
    except RenderFailed as exc:  # this customer's data cannot fill it, or makes it too big
        raise ValidationError(f"template does not render: {exc}",
                              {"fields": {"template": [str(exc)], exc.part: [exc.reason]}}
                              ) from None
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}


def send_log(storage: NotificationsStorage, store_id: str, customer_id: str,
             limit: int) -> list:
    """Every message to the customer, newest first (the caller has checked the limit and who
    they are)."""
    return [as_json(doc) for doc in storage.sends.log_of(store_id, customer_id, limit)]


def export(storage: NotificationsStorage, suppressions: Suppressions, store_id: str,
           customer_id: str) -> dict | None:
    """Everything held about one person (GDPR access and portability): their contact and
    consent, their send log (the last 1000 messages) and the suppressions of their
    addresses, lifted ones too; None when no contact is held (or it was erased)."""
    contact = storage.contacts.get(store_id, customer_id)
    if contact is None or contact.get("status") == ERASED:
        return None
    return {"contact": as_json(contact),
            "send_log": send_log(storage, store_id, customer_id, 1000),
            "suppressions": suppressions.of_addresses(
                store_id, [("email", contact.get("email")), ("sms", contact.get("phone"))])}


def sends(storage: NotificationsStorage, store_id: str, filters: object, page: object) -> dict:
    """A page of the store's send log, newest first."""
    filters, size, cursor = send_page_request(filters, page)
    docs, next_cursor = storage.sends.page(store_id, filters, size, cursor)
    return {"items": [as_json(doc) for doc in docs], "next_cursor": next_cursor}
