"""The console's request pipeline, free of nameko: session cookie, CSRF check, sign-in,
security headers, then a view. Views reach the services only through the gateway's own API
(api.ApiClient), as the signed-in key."""
from __future__ import annotations

import hmac
import logging
import mimetypes
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect as werkzeug_redirect
from werkzeug.wrappers import Request, Response

from services.gateway.app import request_id_of
from services.gateway.auth import Caller, caller_from_view
from services.gateway.console import admin_views as a
from services.gateway.console import company_views as co
from services.gateway.console import consent_views
from services.gateway.console import duplicate_views as dv
from services.gateway.console import field_views as fv
from services.gateway.console import merge_views as mv
from services.gateway.console import present
from services.gateway.console import segment_views as seg
from services.gateway.console import suppression_views as sv
from services.gateway.console import tag_views as tv
from services.gateway.console import views as v
from services.gateway.console.api import ApiClient
from services.gateway.console.session import Session, SessionCodec
from services.gateway.problems import Problem
from shared.config import CONSOLE_SESSION_IDLE_MINUTES_MAX, CONSOLE_SESSION_MAX_HOURS_MAX
from shared.logs import log_context

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE_NAME = "wcc_console"
HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_FILES = frozenset({"console.css", "console.js"})
# No inline script or style anywhere: the console's own files only.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Page:
    """What a view gets: the request, the session, who is signed in, and the API as them."""

    request: Request
    session: Session
    caller: Caller | None
    api: ApiClient | None
    console: "ConsoleApp"
    args: dict
    backends: Any = None

    def may(self, scope: str) -> bool:
        return self.caller is not None and self.caller.may(scope)

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        return self.console.render(template, self, status, **values)

    def redirect(self, location: str) -> Response:
        return werkzeug_redirect(location, code=303)

    def flash(self, level: str, text: str) -> None:
        self.session.flash(level, text)


def _routes() -> Map:
    def rule(path: str, view: Callable, methods: tuple = ("GET",), login: bool = True) -> Rule:
        return Rule(PREFIX + path, endpoint=(view, login), methods=list(methods))

    return Map([
        rule("", v.home, login=False), rule("/", v.home, login=False),
        rule("/login", v.login_form, login=False),
        rule("/login", v.login, ("POST",), login=False),
        rule("/logout", v.logout, ("POST",), login=False),
        rule("/customers", v.customer_list),
        rule("/customers/bulk", v.bulk, ("POST",)),
        rule("/customers/<customer_id>", v.customer_page),
        rule("/customers/<customer_id>/tags", v.add_tags, ("POST",)),
        rule("/customers/<customer_id>/tags/remove", v.remove_tag, ("POST",)),
        rule("/customers/<customer_id>/groups", v.add_groups, ("POST",)),
        rule("/customers/<customer_id>/groups/remove", v.remove_group, ("POST",)),
        rule("/customers/<customer_id>/notes", v.add_note, ("POST",)),
        rule("/customers/<customer_id>/reminders", v.add_reminder, ("POST",)),
        rule("/customers/<customer_id>/reminders/<reminder_id>/complete", v.complete_reminder,
             ("POST",)),
        rule("/customers/<customer_id>/redeem", v.redeem, ("POST",)),
        rule("/customers/<customer_id>/credit", v.issue_credit, ("POST",)),
        rule("/customers/<customer_id>/rewards/<reward_id>/cancel", v.cancel_reward,
             ("POST",)),
        rule("/customers/<customer_id>/gdpr", v.gdpr_request, ("POST",)),
        rule("/customers/<customer_id>/consent", consent_views.set_consent, ("POST",)),
        rule("/customers/<customer_id>/custom-fields", v.save_custom_values, ("POST",)),
        rule("/customers/<customer_id>/company", co.set_customer_company, ("POST",)),
        rule("/companies", co.company_list),
        rule("/companies/new", co.company_new),
        rule("/companies/new", co.company_create, ("POST",)),
        rule("/companies/settings", co.matching_save, ("POST",)),
        rule("/companies/<company_id>", co.company_page),
        rule("/companies/<company_id>/edit", co.company_edit),
        rule("/companies/<company_id>/edit", co.company_save, ("POST",)),
        rule("/companies/<company_id>/delete", co.company_delete, ("POST",)),
        rule("/loyalty", a.loyalty_page),
        rule("/loyalty", a.loyalty_save, ("POST",)),
        rule("/templates", a.template_list),
        rule("/templates/new", a.template_new),
        rule("/templates/save", a.template_save, ("POST",)),
        rule("/templates/preview", a.template_preview, ("POST",)),
        rule("/templates/<slug>", a.template_edit),
        rule("/templates/<slug>/delete", a.template_delete, ("POST",)),
        rule("/workflows", a.workflow_list),
        rule("/workflows/new", a.workflow_new),
        rule("/workflows/save", a.workflow_save, ("POST",)),
        rule("/workflows/<workflow_id>", a.workflow_edit),
        rule("/workflows/<workflow_id>/toggle", a.workflow_toggle, ("POST",)),
        rule("/workflows/<workflow_id>/delete", a.workflow_delete, ("POST",)),
        rule("/segments", seg.segment_list),
        rule("/segments/new", seg.segment_new),
        rule("/segments/save", seg.segment_save, ("POST",)),
        rule("/segments/<segment_id>", seg.segment_edit),
        rule("/segments/<segment_id>/delete", seg.segment_delete, ("POST",)),
        rule("/messages", a.send_log),
        rule("/suppressions", sv.suppression_list),
        rule("/duplicates", dv.duplicate_list),
        rule("/merges", mv.merge_list),
        rule("/merges/new", mv.merge_form),
        rule("/merges/new", mv.merge_submit, ("POST",)),
        rule("/merges/<merge_id>", mv.merge_page),
        rule("/merges/<merge_id>/unmerge", mv.unmerge, ("POST",)),
        rule("/custom-fields", fv.field_list),
        rule("/custom-fields/create", fv.field_create, ("POST",)),
        rule("/custom-fields/<key>", fv.field_page),
        rule("/custom-fields/<key>/edit", fv.field_edit, ("POST",)),
        rule("/custom-fields/<key>/delete", fv.field_delete, ("POST",)),
        rule("/tags", tv.tag_list),
        rule("/tags/create", tv.tag_create, ("POST",)),
        rule("/tags/<tag>/edit", tv.tag_edit, ("POST",)),
        rule("/tags/<tag>/delete", tv.tag_delete, ("POST",)),
        rule("/suppressions/lift", sv.suppression_lift, ("POST",)),
        rule("/gdpr", a.gdpr_queue),
        rule("/gdpr/<request_id>/verify", a.gdpr_verify, ("POST",)),
        rule("/gdpr/<request_id>/reject", a.gdpr_reject, ("POST",)),
        rule("/gdpr/<request_id>/export", a.gdpr_export),
        rule("/reports", a.reports),
    ], strict_slashes=False)


class ConsoleApp:
    def __init__(self, gateway_app: Any, settings: Any, clock: Callable[[], float] = time.time,
                 secret: str | None = None) -> None:
        self.gateway = gateway_app
        secret = secret or settings.get("CONSOLE_SESSION_SECRET")
        if not secret:
            secret = secrets.token_urlsafe(32)
            log.warning("CONSOLE_SESSION_SECRET is not set: the console uses a random secret "
                        "of this process, so its sessions end when the gateway restarts and "
                        "are not valid on other gateway instances")
        idle_minutes = settings.float("CONSOLE_SESSION_IDLE_MINUTES")
        max_hours = settings.float("CONSOLE_SESSION_MAX_HOURS")
        # customer_sync keeps the sessions and refuses limits past these (console_sessions.py).
        if not (1 <= idle_minutes <= CONSOLE_SESSION_IDLE_MINUTES_MAX
                and 1 <= max_hours <= CONSOLE_SESSION_MAX_HOURS_MAX):
            raise ValueError(
                f"CONSOLE_SESSION_IDLE_MINUTES must be 1 to {CONSOLE_SESSION_IDLE_MINUTES_MAX} "
                f"and CONSOLE_SESSION_MAX_HOURS 1 to {CONSOLE_SESSION_MAX_HOURS_MAX}")
        self.codec = SessionCodec(secret, idle_minutes * 60, max_hours * 3600, clock)
        self.cookie_secure = settings.get("CONSOLE_COOKIE_SECURE").lower()
        if self.cookie_secure not in ("auto", "true", "false"):
            raise ValueError("CONSOLE_COOKIE_SECURE must be auto, true or false")
        self.max_form_bytes = settings.int("GATEWAY_MAX_BODY_BYTES")
        self.clock = clock
        self.map = _routes()
        self.jinja = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                                 autoescape=select_autoescape(default=True,
                                                              default_for_string=True),
                                 trim_blocks=True, lstrip_blocks=True)
        self.jinja.filters.update(money=present.money, day=present.day, moment=present.moment,
                                  number=present.number)
        self.jinja.globals.update(segment_labels=present.SEGMENT_LABELS, prefix=PREFIX)

    # -- the pipeline ------------------------------------------------------------------------

    def handle(self, request: Request, backends: Any) -> Response:
        request_id = request_id_of(request)
        request.max_content_length = self.max_form_bytes
        request.max_form_memory_size = self.max_form_bytes
        session = self.codec.loads(request.cookies.get(COOKIE_NAME)) or Session()
        with log_context(request_id=request_id, store_id=session.store_id or None):
            try:
                response = self._dispatch(request, backends, session, request_id)
            except RequestEntityTooLarge:  # read on the form's first use, before any change
                response = self.render("error.html", None, 413, session=session,
                                       title="Too large",
                                       message="This form is larger than the console takes; "
                                               "nothing was changed.")
            except Exception:  # noqa: BLE001 - the person gets a page, the log the traceback
                log.exception("console error on %s %s (request %s)", request.method,
                              request.path, request_id)
                response = self.render("error.html", None, 500, session=session,
                                       title="Something went wrong",
                                       message="The console failed; the request id helps "
                                               f"find out why: {request_id}")
        if not request.path.startswith(PREFIX + "/static/"):
            # Sealed anew on every page: the token's time is when the session was last used.
            self._set_cookie(request, response, session)
            response.headers["Cache-Control"] = "no-store"
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        response.headers["X-Request-Id"] = request_id
        return response

    def _dispatch(self, request: Request, backends: Any, session: Session,
                  request_id: str) -> Response:
        adapter = self.map.bind_to_environ(request.environ)
        if request.path.startswith(PREFIX + "/static/"):
            return self.static(request.path[len(PREFIX + "/static/"):])
        try:
            (view, needs_login), args = adapter.match(method=request.method)
        except MethodNotAllowed:
            return self.render("error.html", None, 405, session=session,
                               title="Not allowed", message="This page does not take that.")
        except NotFound:
            return self.render("error.html", None, 404, session=session, title="Not found",
                               message="There is no such page.")
        if request.method == "POST" and not self.csrf_ok(request, session):
            log.warning("console POST %s refused: missing or wrong CSRF token", request.path)
            return self.render("error.html", None, 403, session=session,
                               title="Form expired",
                               message="This form was not sent from the console's current "
                                       "page (or your session ended). Reload the page and "
                                       "try again.")
        caller, api = None, None
        if session.signed_in:
            # Asked on every request, of the key's owner, never cached: a session signed out,
            # idle, too old or of a revoked key ends for every copy of its cookie.
            try:
                opened = backends.call("customer_sync", "console_session", session.session_token)
            except Problem as problem:
                if problem.status != 404:
                    return self.render("error.html", None, 503, session=session,
                                       title="Try again shortly",
                                       message="Your session cannot be checked right now; "
                                               "try again shortly.")
                self.sign_out(session)
                session.flash("error", "Your session has ended (signed out, idle, too old, or "
                                       "its API key was revoked): sign in again.")
            else:
                caller = caller_from_view(opened["key"])
                api = ApiClient(self.gateway, backends, session.api_key, request_id)
        page = Page(request, session, caller, api, self, args, backends)
        if needs_login and caller is None:
            target = request.full_path if request.method == "GET" else PREFIX + "/customers"
            return page.redirect(PREFIX + "/login?" + urlencode({"next": target.rstrip("?")}))
        return view(page, **args)

    # -- pieces ------------------------------------------------------------------------------

    def csrf_ok(self, request: Request, session: Session) -> bool:
        sent = request.form.get("csrf_token", "")
        return bool(sent) and hmac.compare_digest(sent.encode(), session.csrf.encode())

    def open_session(self, backends: Any, api_key: str) -> dict:
        """Open a server-side session for the key (customer_sync checks the key itself, with
        no cache in between); raises the Problem (404: an unknown or revoked key)."""
        return backends.call("customer_sync", "open_console_session", api_key,
                             int(self.codec.idle_seconds), int(self.codec.max_age_seconds))

    def end_session(self, backends: Any, session: Session) -> None:
        """End the server-side session (every copy of the cookie), then this cookie's."""
        if session.session_token:
            backends.call("customer_sync", "end_console_session", session.session_token)
        self.sign_out(session)

    def sign_in(self, session: Session, api_key: str, opened: dict) -> Caller:
        """A new session for the key: a new CSRF token, so one from before cannot be used."""
        caller = caller_from_view(opened["key"])
        session.csrf = secrets.token_urlsafe(32)
        session.api_key = api_key
        session.session_token = opened["session"]
        session.key_name = caller.name
        session.store_id = caller.store_id
        session.signed_in_at = self.clock()
        return caller

    def sign_out(self, session: Session) -> None:
        """Forget the session in this cookie (the server-side one: end_session)."""
        session.csrf = secrets.token_urlsafe(32)
        session.api_key = session.session_token = None
        session.key_name = session.store_id = ""
        session.signed_in_at = None

    def _secure(self, request: Request) -> bool:
        if self.cookie_secure != "auto":
            return self.cookie_secure == "true"
        # Behind a TLS-terminating proxy the request arrives as http: its header says https.
        # A forged header only makes the cookie stricter.
        return request.scheme == "https" or \
            request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    def _set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE_NAME, self.codec.dumps(session), path=PREFIX,
                            httponly=True, samesite="Lax", secure=self._secure(request),
                            max_age=int(self.codec.max_age_seconds))

    def render(self, template: str, page: Page | None, status: int = 200,
               session: Session | None = None, **values: Any) -> Response:
        session = session or page.session
        caller = page.caller if page else None
        section = page.request.path[len(PREFIX) + 1:].split("/")[0] if page else ""
        html = self.jinja.get_template(template).render(
            section=section, csrf_token=session.csrf, flashes=session.take_flashes(), caller=caller,
            key_name=session.key_name if caller else "", store_id=session.store_id if caller else "",
            may_read=bool(caller and caller.may("read")),
            may_write=bool(caller and caller.may("write")),
            may_admin=bool(caller and caller.may("admin")),
            may_gdpr=bool(caller and caller.may("gdpr")), **values)
        return Response(html, status=status, mimetype="text/html")

    def static(self, name: str) -> Response:
        if name not in STATIC_FILES:
            return Response("not found", status=404, mimetype="text/plain")
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = Response((STATIC_DIR / name).read_bytes(), mimetype=mimetype)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response
