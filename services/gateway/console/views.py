"""The console's pages and form actions. Each reads or changes data through the gateway's own
API as the signed-in key (page.api), and shows the API's refusals as they are; a form action
answers with a redirect (post/redirect/get) and a one-shot message."""
from __future__ import annotations

import csv
import io
import uuid
from urllib.parse import urlsplit

from werkzeug.wrappers import Response

from services.gateway.console import consent_views, field_views, present
from services.gateway.console.api import ApiError, path
from services.gateway.console.company_views import company_choices
from services.gateway.handlers.transfer import _safe_cell
from services.gateway.problems import Problem
from services.gateway.schemas import NOTE_CATEGORIES, fields_of
from shared.times import utcnow

PREFIX = "/console"
BULK_ACTIONS = [("add_tags", "Add tags"), ("add_to_groups", "Add to groups"),
                ("set_status", "Set status"), ("export", "Export (CSV)"),
                ("delete", "Delete")]
BULK_EXPORT_COLUMNS = ("customer_id", "first_name", "last_name", "email", "phone", "company",
                       "billing_city", "billing_country", "account_status", "registered")


def _safe_next(target: str | None, default: str = PREFIX + "/") -> str:
    """Only a console page of this site: never an absolute or scheme-relative address, nor one
    with a control character (CR or LF would split the Location header). The default is the
    console's home, which picks the first page the key may see."""
    if not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") \
            or target.startswith("//") or "\\" in target:
        return default
    return target


# -- signing in and out ---------------------------------------------------------------------

def home(page) -> Response:
    if page.caller is None:
        return page.redirect(PREFIX + "/login")
    # A key with only the gdpr scope has no customer list to show.
    return page.redirect(PREFIX + ("/gdpr" if not page.may("read") and page.may("gdpr")
                                   else "/customers"))


def login_form(page, status: int = 200, error: str = "") -> Response:
    if page.caller and not error:
        return page.redirect(_safe_next(page.request.args.get("next")))
    return page.render("login.html", status, title="Sign in", error=error,
                       next=_safe_next(page.request.args.get("next")))


def login(page) -> Response:
    key = (page.request.form.get("api_key") or "").strip()
    target = _safe_next(page.request.form.get("next"))
    if not key:
        return page.render("login.html", 400, title="Sign in", next=target,
                           error="Enter an API key.")
    try:
        opened = page.console.open_session(page.backends, key)
    except Problem as problem:
        if problem.status == 404:
            return page.render("login.html", 401, title="Sign in", next=target,
                               error="That API key is unknown or revoked.")
        return page.render("login.html", 503, title="Sign in", next=target,
                           error="Signing in is not possible right now; try again shortly.")
    if page.session.signed_in:  # signing in again: the session it replaces ends too
        try:
            page.console.end_session(page.backends, page.session)
        except Problem:
            pass  # it still ends when idle; the new one is what this cookie carries
    caller = page.console.sign_in(page.session, key, opened)
    page.flash("info", f"Signed in with the key “{caller.name}” (scopes: "
                       f"{', '.join(sorted(caller.scopes))}).")
    return page.redirect(target)


def logout(page) -> Response:
    """Sign out for every copy of this session's cookie, on every gateway instance."""
    try:
        page.console.end_session(page.backends, page.session)
    except Problem:
        return page.render("error.html", 503, title="Not signed out",
                           message="Signing out is not possible right now, so your session "
                                   "is still open: try again shortly.")
    page.flash("info", "Signed out.")
    return page.redirect(PREFIX + "/login")


# -- the customer list ----------------------------------------------------------------------

def customer_list(page) -> Response:
    state, query, errors = present.list_state(page.request.args)
    result, problem = None, None
    if not errors:
        try:
            result = page.api.get("/customers", query)
        except ApiError as exc:
            problem = exc.message()
    columns = []
    for column, (label, _) in present.SORT_COLUMNS.items():
        href, aria = present.sort_link(state, column)
        columns.append({"key": column, "label": label, "href": href, "aria": aria})
    cursor = page.request.args.get("cursor") or None
    links = present.paging(lambda c, back: present.list_url(state, cursor=c, back=back),
                           cursor, present.trail_of(page.request.args) if cursor else [],
                           (result or {}).get("next_cursor"))
    return page.render(
        "customers.html", title="Customers", state=state, result=result, problem=problem,
        errors=errors, filtered=any(state[k] for k in present.STATE_KEYS
                                    if k not in ("view", "sort", "limit")),
        columns={c["key"]: c for c in columns},
        quick=[(slug, label, present.list_url(state, view=slug))
               for slug, label, _ in present.QUICK_FILTERS],
        segments=present.SEGMENTS, page_sizes=present.PAGE_SIZES, links=links,
        this_url=page.request.full_path.rstrip("?"),
        tags=page.api.get_or([], "/tags"), groups=page.api.get_or([], "/groups"),
        bulk_actions=BULK_ACTIONS, companies=company_choices(page),
        company_name=next((row.get("company_name") for row in (result or {}).get("items") or []
                           if row.get("company_id") == state["company_id"]), None))


def bulk(page) -> Response:
    form = page.request.form
    ids = list(dict.fromkeys(i for i in form.getlist("customer_id") if i))
    action = form.get("action", "")
    back = _safe_next(form.get("back"), PREFIX + "/customers")
    if action not in dict(BULK_ACTIONS):
        page.flash("error", "Choose a bulk action.")
        return page.redirect(back)
    if not ids:
        page.flash("error", "Select at least one customer first.")
        return page.redirect(back)
    # The list sends each row's name along, for the results page only (shown escaped).
    labels = {i: form.get(f"label:{i}", "")[:200] for i in ids}
    body: dict = {"action": action, "customer_ids": ids}
    if action == "add_tags":
        body["tags"] = present.split_names(form.get("tags", ""))
    elif action == "add_to_groups":
        body["groups"] = present.split_names(form.get("groups", ""))
    elif action == "set_status":
        body["status"] = form.get("status", "")
    elif action == "delete":
        body["orders"] = form.get("orders", "anonymise")
        if form.get("confirm") != "yes":
            return page.render("bulk_confirm.html", title="Delete customers?", ids=ids,
                               orders=body["orders"], back=back, names=labels)
    for name in ("tags", "groups"):
        if name in body and not body[name]:
            page.flash("error", f"Enter the {name} to add, separated by commas.")
            return page.redirect(back)
    try:
        answer = page.api.post("/customers/bulk", body)
    except ApiError as exc:
        page.flash("error", f"Nothing was changed: {exc.message()}")
        return page.redirect(back)
    if action == "export" and form.get("download") == "csv":
        return _export_csv(answer.get("customers") or [])
    names = {**labels, **{c["customer_id"]: " ".join(
        p for p in (c.get("first_name"), c.get("last_name")) if p)
        for c in answer.get("customers") or []}}
    return page.render("bulk_result.html", title="Bulk action results", answer=answer,
                       action_label=dict(BULK_ACTIONS)[action], body=body, ids=ids, back=back,
                       names=names)


def _export_csv(customers: list[dict]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(BULK_EXPORT_COLUMNS)
    for c in customers:
        billing = c.get("billing") or {}
        values = {**c, "billing_city": billing.get("city"),
                  "billing_country": billing.get("country")}
        writer.writerow([_safe_cell(values.get(k)) for k in BULK_EXPORT_COLUMNS])
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="customers-{stamp}.csv"'})


# -- one customer ---------------------------------------------------------------------------

def customer_page(page, customer_id: str) -> Response:
    return _customer(page, customer_id)


def save_custom_values(page, customer_id: str) -> Response:
    """The custom fields form; a refusal draws the page again with the errors by the field."""
    saved = field_views.values_save(page, customer_id)
    if isinstance(saved, Response):
        return saved
    return _customer(page, customer_id, **saved)


def _customer(page, customer_id: str, status: int = 200, field_problem: str = "",
              field_errors: dict | None = None, field_typed: dict | None = None) -> Response:
    try:
        detail = page.api.get(path("customers", customer_id))
    except ApiError as exc:
        status = exc.status if exc.status in (403, 404) else 502
        return page.render("error.html", status, title="Customer not available",
                           message=exc.message())
    customer = detail["customer"]
    stats = detail.get("stats") or {}
    name = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p)
    rewards, rewards_problem = [], None
    if detail.get("loyalty"):
        try:
            rewards = page.api.get(path("customers", customer_id, "loyalty", "rewards"))["items"]
        except ApiError as exc:
            rewards_problem = exc.message()
    definitions = fields_of(page.api.get_or([], "/custom-fields"), "customer")
    return page.render(
        "customer.html", status, title=name or customer.get("email") or customer_id,
        d=detail, c=customer, name=name, stats=stats,
        orders_per_month=present.orders_per_month(stats, utcnow()),
        notes=present.group_notes(detail.get("notes") or [], NOTE_CATEGORIES),
        note_categories=NOTE_CATEGORIES, all_tags=page.api.get_or([], "/tags"),
        all_groups=page.api.get_or([], "/groups"), redeem_request=uuid.uuid4().hex,
        credit_request=uuid.uuid4().hex, rewards=rewards, rewards_problem=rewards_problem,
        reward_states=present.REWARD_STATES, cancellable=present.CANCELLABLE_STATES,
        credit_reasons=present.CREDIT_REASONS,
        currency=present.store_currency(detail.get("loyalty")),
        customer_url=f"{PREFIX}/customers/{customer_id}",
        consent=consent_views.card(page, customer_id),
        custom_fields=present.custom_field_rows(definitions, customer.get("custom_fields")),
        field_inputs=field_views.value_inputs(definitions, customer.get("custom_fields"),
                                              field_typed),
        field_problem=field_problem, field_errors=field_errors or {},
        company=detail.get("company"),
        company_choices=company_choices(page) if page.may("write") else [])


def _act(page, customer_id: str, anchor: str, call, success: str) -> Response:
    try:
        result = call()
    except ApiError as exc:
        page.flash("error", exc.message())
    except ValueError as exc:
        page.flash("error", str(exc))
    else:
        page.flash("success", success.format(result=result) if "{" in success else success)
    return page.redirect(f"{PREFIX}/customers/{path(customer_id)[1:]}#{anchor}")


def _add_names(page, customer_id: str, kind: str, done: str) -> Response:
    """Tags and groups are added alike: the comma-separated names in the form's `kind` field
    ("tag" or "group") go to the customer's `kind`s; `done` begins the success message."""
    plural = kind + "s"
    names = present.split_names(page.request.form.get(kind, ""))

    def call():
        if not names:
            raise ValueError(f"Enter a {kind}.")
        return page.api.post(path("customers", customer_id, plural), {plural: names})
    return _act(page, customer_id, plural, call, f"{done} {', '.join(names)}.")


def _remove_name(page, customer_id: str, kind: str, done: str) -> Response:
    """Tags and groups are removed alike: the one name in the form's `kind` field ("tag" or
    "group") leaves the customer's `kind`s; `done` begins the success message."""
    plural = kind + "s"
    name = page.request.form.get(kind, "")
    return _act(page, customer_id, plural,
                lambda: page.api.delete(path("customers", customer_id, plural, name)),
                f"{done} {name}.")


def add_tags(page, customer_id: str) -> Response:
    return _add_names(page, customer_id, "tag", "Tagged:")


def remove_tag(page, customer_id: str) -> Response:
    return _remove_name(page, customer_id, "tag", "Removed the tag")


def add_groups(page, customer_id: str) -> Response:
    return _add_names(page, customer_id, "group", "Added to:")


def remove_group(page, customer_id: str) -> Response:
    return _remove_name(page, customer_id, "group", "Removed from the group")


def add_note(page, customer_id: str) -> Response:
    form = page.request.form
    body = {"category": form.get("category", "general"), "text": form.get("text", "").strip()}
    return _act(page, customer_id, "notes",
                lambda: page.api.post(path("customers", customer_id, "notes"), body),
                "Note added.")


def add_reminder(page, customer_id: str) -> Response:
    form = page.request.form

    def call():
        due = present.to_day_start(form.get("due", ""))
        body = {"due_at": due, "text": form.get("text", "").strip()}
        if form.get("assignee", "").strip():
            body["assignee"] = form["assignee"].strip()
        return page.api.post(path("customers", customer_id, "reminders"), body)
    return _act(page, customer_id, "reminders", call, "Reminder set.")


def complete_reminder(page, customer_id: str, reminder_id: str) -> Response:
    return _act(page, customer_id, "reminders",
                lambda: page.api.post(path("reminders", reminder_id, "complete")),
                "Reminder marked done.")


def _loyalty_anchor(customer_id: str) -> str:
    return f"{PREFIX}/customers/{path(customer_id)[1:]}#loyalty"


def redeem(page, customer_id: str) -> Response:
    """Two steps: the points typed give a quote (what the coupon is worth and until when),
    shown for confirmation; only the confirmed form redeems. A refused quote takes nothing."""
    form = page.request.form
    raw = form.get("points", "").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000_000:
        page.flash("error", "Points to redeem must be a whole number of at least 1.")
        return page.redirect(_loyalty_anchor(customer_id))
    points = int(raw)
    # The form's own id: sent twice (a double click, a reload), it redeems once.
    request_id = (form.get("request_id") or uuid.uuid4().hex)[:64]
    if form.get("confirm") != "yes":
        try:
            quote = page.api.get(path("customers", customer_id, "loyalty", "redemption-quote"),
                                 {"points": points})
        except ApiError as exc:
            page.flash("error", f"Nothing was redeemed: {exc.message()}")
            return page.redirect(_loyalty_anchor(customer_id))
        return page.render("redeem_confirm.html", title="Redeem points?", quote=quote,
                           customer_id=customer_id, request_id=request_id,
                           customer_url=f"{PREFIX}/customers/{path(customer_id)[1:]}")
    try:
        answer = page.api.post(path("customers", customer_id, "loyalty", "redeem"),
                               {"points": points, "request_id": "console-" + request_id})
    except ApiError as exc:
        page.flash("error", f"Nothing was redeemed: {exc.message()}")
    else:
        reward = answer.get("reward") or {}
        page.flash("error" if reward.get("state") == "returned" else "success",
                   f"Redeemed {points} points. " + present.reward_message(reward))
    return page.redirect(_loyalty_anchor(customer_id))


def issue_credit(page, customer_id: str) -> Response:
    """Store credit as a coupon: the amount is typed in the store's currency and sent in its
    minor units; the currency is read from the card, not from the form."""
    form = page.request.form
    try:
        account = page.api.get(path("customers", customer_id, "loyalty"))
        currency = present.store_currency(account) or present.store_currency(
            None, page.api.get_or({}, "/loyalty/programme"))
        if not currency:
            raise ValueError("The store's currency is not known yet (no order and no programme "
                             "currency), so no credit can be issued.")
        try:
            amount = present.to_minor_units(form.get("amount", ""), currency)
        except ValueError as exc:
            raise ValueError(f"Amount {exc}.") from None
        if amount < 1:
            raise ValueError("Amount must be more than zero.")
        reason = form.get("reason", "")
        if reason not in dict(present.CREDIT_REASONS):
            raise ValueError("Choose the reason for the credit.")
        body: dict = {"amount": amount, "reason": reason,
                      "note": form.get("note", "").strip()}
        if form.get("expires", "").strip():
            try:
                body["expires_at"] = present.to_day_start(form["expires"])
            except ValueError as exc:
                raise ValueError(f"Valid until {exc}.") from None
        if form.get("request_id"):
            body["request_id"] = "console-" + form["request_id"][:64]
        answer = page.api.post(path("customers", customer_id, "loyalty", "credit"), body)
    except ApiError as exc:
        page.flash("error", f"No credit was issued: {exc.message()}")
    except ValueError as exc:
        page.flash("error", f"No credit was issued: {exc}")
    else:
        reward = answer.get("reward") or {}
        page.flash("error" if reward.get("state") == "returned" else "success",
                   "Store credit issued. " + present.reward_message(reward))
    return page.redirect(_loyalty_anchor(customer_id))


def cancel_reward(page, customer_id: str, reward_id: str) -> Response:
    """Two steps as well: the reward is shown with what cancelling it does, then cancelled."""
    back = _loyalty_anchor(customer_id)
    if page.request.form.get("confirm") != "yes":
        try:
            rewards = page.api.get(path("customers", customer_id, "loyalty", "rewards"))
        except ApiError as exc:
            page.flash("error", f"Nothing was cancelled: {exc.message()}")
            return page.redirect(back)
        reward = next((r for r in rewards.get("items") or []
                       if r.get("reward_id") == reward_id), None)
        if reward is None or reward.get("state") not in present.CANCELLABLE_STATES:
            page.flash("error", "Nothing was cancelled: that reward is not one that can be "
                                "cancelled any more (used, cancelled or expired).")
            return page.redirect(back)
        return page.render("reward_cancel.html", title="Cancel this coupon?", reward=reward,
                           back=back, customer_url=f"{PREFIX}/customers/{path(customer_id)[1:]}",
                           state_labels=present.REWARD_STATES)
    try:
        reward = page.api.post(path("customers", customer_id, "loyalty", "rewards", reward_id,
                                    "cancel"))
    except ApiError as exc:
        page.flash("error", f"Nothing was cancelled: {exc.message()}")
    else:
        page.flash("success", present.cancel_message(reward))
    return page.redirect(back)


def gdpr_request(page, customer_id: str) -> Response:
    form = page.request.form
    kind = form.get("type", "")

    def call():
        if kind not in ("access", "erasure"):
            raise ValueError("Choose an access or an erasure request.")
        if kind == "erasure" and form.get("confirm") != "yes":
            raise ValueError("Tick the box to confirm the erasure request.")
        customer = page.api.get(path("customers", customer_id))["customer"]
        if not customer.get("email"):
            raise ValueError("This customer has no email address to file a request under.")
        return page.api.post("/gdpr/requests", {
            "type": kind, "email": customer["email"],
            "details": {"customer_id": customer_id, "via": "console"}})
    label = "Erasure" if kind == "erasure" else "Access"
    return _act(page, customer_id, "gdpr", call,
                f"{label} request recorded; it is worked once the person's identity is "
                "verified (GDPR queue).")
