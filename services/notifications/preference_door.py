"""The public door behind the links in messages: the unsubscribe page and its one-click POST
(RFC 8058), the preference page (email and SMS marketing, "forget me") and the double opt-in
confirmation.

The token in the path is the only credential (links.py): no cookie, no session, so there is no
cross-site request to forge, and every form posts back to its own token's address. A token
this service did not sign for that purpose, or whose contact is gone, answers 404 before any
body is read, and nothing changes. A GET never changes anything (link scanners open links);
a POST changes consent at once and answers what it did. Bodies are bounded; a refusal is a 4xx
that names the field, with nothing stored. Every word on the pages comes from
pages/words.<lang>.json, so a translation is one file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from services.notifications import links as ln
from services.notifications.repository import NotificationsStorage
from services.notifications.subscriptions import (EMAIL_MARKETING, SMS_MARKETING, Change,
                                                  Subscriptions, consent_state)

PAGES = Path(__file__).parent / "pages"
STYLESHEET = PAGES / "style.css"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The token is in the address: never hand it to another site, nor keep the page.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PREFERENCE_FIELDS = ("email_marketing", "sms_marketing")
ONE_CLICK_FIELD = "List-Unsubscribe"


class Unavailable(Exception):
    """A service this door needs (gdpr, for "forget me") did not answer: nothing changed."""


@lru_cache(maxsize=4)
def words(lang: str = "en") -> dict[str, str]:
    return json.loads((PAGES / f"words.{lang}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(str(PAGES)), autoescape=select_autoescape(["html"]))


@dataclass(frozen=True)
class Answer:
    """A page to answer, and the documents that now owe events (for the outbox relay)."""

    response: Response
    touched: tuple = ()


class PreferenceDoor:
    def __init__(self, storage: NotificationsStorage, signer: ln.LinkSigner,
                 store_name: Callable[[str], str], file_erasure: Callable[[Mapping[str, Any]], str],
                 clock: Callable, max_body_bytes: int = 8192, lang: str = "en") -> None:
        self.storage = storage
        self.signer = signer
        self.store_name = store_name
        self.file_erasure = file_erasure  # the person's erasure request: its reference
        self.subscriptions = Subscriptions(storage, clock)
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.w = words(lang)

    # -- pages -----------------------------------------------------------------------------------
    def _page(self, template: str, status: int, title: str, store: str = "", **context: Any
              ) -> Response:
        html = _environment().get_template(template).render(
            w=self.w, title=title, store=store, stylesheet=ln.STYLE_PATH, **context)
        return Response(html, status=status, mimetype="text/html", headers=SECURITY_HEADERS)

    def _not_found(self) -> Answer:
        return Answer(self._page("message.html", 404, self.w["title_not_found"],
                                 text=self.w["not_found"]))

    def _refused(self, status: int, title: str, text: str) -> Answer:
        return Answer(self._page("message.html", status, title, notice=text, notice_kind="error"))

    def stylesheet(self) -> Response:
        return Response(STYLESHEET.read_text(encoding="utf-8"), mimetype="text/css",
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "public, max-age=3600"})

    def _contact(self, kind: str, token: str) -> Mapping[str, Any] | None:
        link_id = self.signer.link_id(kind, token)
        return self.storage.contacts.by_link_id(link_id) if link_id else None

    def _form(self, request: Request, allowed: tuple[str, ...]) -> dict[str, str] | Answer:
        """The posted form, bounded; an Answer (413 or 400 naming the field) when refused."""
        if request.content_length is None and request.headers.get("Transfer-Encoding"):
            # A chunked body, whose size is known only once read: refused unread (411).
            return self._refused(411, self.w["title_too_large"], self.w["length_required"])
        if (request.content_length or 0) > self.max_body_bytes:
            return self._too_large()
        request.max_content_length = self.max_body_bytes
        request.max_form_parts = 20
        try:
            form = request.form
        except RequestEntityTooLarge:
            return self._too_large()
        for name in form.keys():
            if name not in allowed:
                return self._invalid(name, "not a field of this form")
            if len(form.getlist(name)) > 1:
                return self._invalid(name, "given more than once")
        return {name: form.get(name, "") for name in form.keys()}

    def _too_large(self) -> Answer:
        return self._refused(413, self.w["title_too_large"], self.w["too_large"])

    def _invalid(self, field: str, problem: str) -> Answer:
        return self._refused(400, self.w["title_invalid"],
                             self.w["invalid"].format(field=field[:60], problem=problem))

    def _addresses(self, token: str) -> dict[str, str]:
        return {name: path.replace("<token>", token) for name, path in (
            ("unsubscribe_action", ln.UNSUBSCRIBE_PATH), ("preferences_url", ln.PREFERENCES_PATH),
            ("preferences_action", ln.PREFERENCES_PATH), ("forget_action", ln.FORGET_PATH),
            ("confirm_action", ln.CONFIRM_PATH))}

    # -- unsubscribe -----------------------------------------------------------------------------
    def unsubscribe_page(self, token: str) -> Answer:
        """The page a click opens: a button, not an unsubscribe (scanners open links too)."""
        contact = self._contact(ln.UNSUBSCRIBE, token)
        if contact is None:
            return self._not_found()
        store = self.store_name(contact["store_id"])
        off = consent_state(contact, EMAIL_MARKETING) == "off"
        return Answer(self._page("unsubscribe.html", 200, self.w["title_unsubscribe"], store,
                                 done=off, notice=self.w["already_unsubscribed"].format(
                                     store=store) if off else "", **self._addresses(token)))

    def unsubscribe(self, request: Request, token: str) -> Answer:
        """The one-click POST (a mail client's, or the page's button): email marketing off."""
        contact = self._contact(ln.UNSUBSCRIBE, token)
        if contact is None:
            return self._not_found()
        form = self._form(request, (ONE_CLICK_FIELD,))
        if isinstance(form, Answer):
            return form
        if form.get(ONE_CLICK_FIELD, "One-Click") != "One-Click":
            return self._invalid(ONE_CLICK_FIELD, "must be One-Click")
        change = self.subscriptions.unsubscribe(contact, "email")
        store = self.store_name(contact["store_id"])
        return Answer(self._page("unsubscribe.html", 200, self.w["title_unsubscribe"], store,
                                 done=True, notice=self.w["unsubscribed"].format(store=store),
                                 notice_kind="success", **self._addresses(token)),
                      change.touched)

    # -- preferences -----------------------------------------------------------------------------
    def _preferences(self, contact: Mapping[str, Any], token: str, status: int = 200,
                     notice: str = "", notice_kind: str = "") -> Response:
        store = self.store_name(contact["store_id"])
        forget = contact.get("forget_request") or {}
        return self._page("preferences.html", status, self.w["title_preferences"], store,
                          email_state=consent_state(contact, EMAIL_MARKETING),
                          sms_state=consent_state(contact, SMS_MARKETING),
                          has_phone=bool(contact.get("phone")),
                          forget_reference=forget.get("request_id", ""),
                          notice=notice, notice_kind=notice_kind, **self._addresses(token))

    def preferences_page(self, token: str) -> Answer:
        contact = self._contact(ln.UNSUBSCRIBE, token)
        if contact is None:
            return self._not_found()
        return Answer(self._preferences(contact, token))

    def save_preferences(self, request: Request, token: str) -> Answer:
        """The form: a box ticked is on, a box left out is off. SMS is offered, and changed,
        only to a contact with a phone number."""
        contact = self._contact(ln.UNSUBSCRIBE, token)
        if contact is None:
            return self._not_found()
        form = self._form(request, PREFERENCE_FIELDS)
        if isinstance(form, Answer):
            return form
        for name, value in form.items():
            if value != "on":
                return self._invalid(name, "must be on, or left out")
        sms = ("sms_marketing" in form) if contact.get("phone") \
            else consent_state(contact, SMS_MARKETING) == "granted"
        change = self.subscriptions.set_preferences(contact, email="email_marketing" in form,
                                                    sms=sms)
        contact = self.storage.contacts.by_link_id(contact["link_id"]) or contact
        notice = self.w["saved"] if change.changed else self.w["nothing_changed"]
        return Answer(self._preferences(contact, token, notice=notice, notice_kind="success"),
                      change.touched)

    def forget(self, request: Request, token: str) -> Answer:
        """"Forget me": an erasure request filed with gdpr, pending the check of who asked;
        marketing stops now. Asked again, it answers the request already filed."""
        contact = self._contact(ln.UNSUBSCRIBE, token)
        if contact is None:
            return self._not_found()
        form = self._form(request, ())
        if isinstance(form, Answer):
            return form
        held = (contact.get("forget_request") or {}).get("request_id")
        if held:
            return Answer(self._preferences(contact, token, notice=self.w["forget_already"].format(
                reference=held), notice_kind="success"))
        try:
            request_id = self.file_erasure(contact)
        except Unavailable:
            return self._refused(503, self.w["title_unavailable"], self.w["unavailable"])
        self.storage.contacts.note_forget_request(contact["_id"], request_id, self.clock())
        change = self.subscriptions.set_preferences(contact, email=False, sms=False)
        contact = self.storage.contacts.by_link_id(contact["link_id"]) or contact
        return Answer(self._preferences(contact, token, notice=self.w["forget_filed"].format(
            reference=request_id), notice_kind="success"), change.touched)

    # -- double opt-in ---------------------------------------------------------------------------
    def confirm_page(self, token: str) -> Answer:
        contact = self._contact(ln.CONFIRM_EMAIL, token)
        if contact is None:
            return self._not_found()
        store = self.store_name(contact["store_id"])
        pending = consent_state(contact, EMAIL_MARKETING) == "pending"
        return Answer(self._page("confirm.html", 200, self.w["title_confirm"], store,
                                 done=not pending,
                                 notice="" if pending else self.w["nothing_to_confirm"],
                                 **self._addresses(token)))

    def confirm(self, request: Request, token: str) -> Answer:
        contact = self._contact(ln.CONFIRM_EMAIL, token)
        if contact is None:
            return self._not_found()
        form = self._form(request, ())
        if isinstance(form, Answer):
            return form
        change: Change = self.subscriptions.confirm_email(contact)
        store = self.store_name(contact["store_id"])
        confirmed = consent_state(self.storage.contacts.by_link_id(contact["link_id"]) or {},
                                  EMAIL_MARKETING) == "granted"
        return Answer(self._page("confirm.html", 200, self.w["title_confirm"], store, done=True,
                                 notice=self.w["confirmed"] if confirmed
                                 else self.w["nothing_to_confirm"],
                                 notice_kind="success" if confirmed else "",
                                 **self._addresses(token)), change.touched)
