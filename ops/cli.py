"""`companion`: the operator's command line.

Talks to the running services over nameko RPC (and to RabbitMQ for parked messages), using
AMQP_URI from the environment. Tables for people, `--json` for scripts, a progress bar on long
work, and a non-zero exit code on failure.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import getpass
import json
import math
import os
import re
import sys
import time
import uuid
import warnings
from typing import Any, Callable

# Before anything imports nameko (the parked-message tools below do): an operator's terminal
# shows the command's answer, not eventlet's deprecation notice.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

# Money and reward wording as the console shows them: one way to read and write amounts.
from services.gateway.console import present
from services.gateway.routing import COMPANY_ID_PATTERN
from services.gateway.schemas import COMPANY_ADDRESS_PARTS, fields_of
from ops.settings import every_setting
from ops.system_health import Management, system_health
from services.registry import SERVICES
from shared.config import Config
from shared.errors import NotFound, ServiceError, ValidationError
from shared.health import broker_connection_error
from shared.messaging.broker_errors import describe_broker_error, is_broker_failure
from shared.messaging.parking import ParkedMessages
from shared.times import RefusedTime, check_aware
from shared.tls import amqp_ssl_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
# A service's refusal is parsed back into fields only up to this size: bounded work.
MAX_REMOTE_MESSAGES = 100_000


# -- output -----------------------------------------------------------------------------------
def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(row.get(c, "") if row.get(c) is not None else "") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, *body])


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human(data))


class ProgressBar:
    """A one-line bar on a terminal; plain lines, at most every few seconds, elsewhere."""

    def __init__(self, stream=sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._last_line = ""
        self._last_print = 0.0

    def update(self, run: dict) -> None:
        total = run.get("total_pages") or 0
        done_pages = max(0, (run.get("next_page") or 1) - 1)
        fraction = min(1.0, done_pages / total) if total else 0.0
        filled = int(fraction * self.width)
        items = run.get("items") or {}
        line = (f"{run.get('phase', ''):9} page {done_pages}/{total or '?'} "
                f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}%  "
                f"customers {items.get('customers', 0)}  orders {items.get('orders', 0)}  "
                f"{run.get('status')}")
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last_line)))
            self.stream.flush()
        elif line != self._last_line and time.monotonic() - self._last_print > 2:
            self.stream.write(line + "\n")
            self._last_print = time.monotonic()
        self._last_line = line

    def close(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")


# -- commands ---------------------------------------------------------------------------------
def _rpc(args):
    from nameko.standalone.rpc import ClusterRpcProxy

    return ClusterRpcProxy({"AMQP_URI": args.amqp_uri, "AMQP_SSL": _amqp_ssl(args)},
                           timeout=args.timeout)


def _amqp_ssl(args):
    """TLS options for --amqp-uri, with the AMQP_SSL_* files from the environment."""
    try:
        return amqp_ssl_options(Config(AMQP_URI=args.amqp_uri))
    except ValueError as exc:
        print(f"bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _secret(env_name: str, prompt: str) -> str:
    value = os.environ.get(env_name)
    if value:
        return value
    if not sys.stdin.isatty():
        print(f"set {env_name} (secrets are not taken as arguments)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return getpass.getpass(prompt)


def cmd_stores_add(args) -> int:
    store = {
        "store_id": args.store, "shop_url": args.shop_url,
        "webhook_secret": _secret("WOO_WEBHOOK_SECRET", "Webhook secret: "),
        "consumer_key": _secret("WOO_CONSUMER_KEY", "REST consumer key: "),
        "consumer_secret": _secret("WOO_CONSUMER_SECRET", "REST consumer secret: "),
    }
    if args.reconcile_minutes:
        store["reconcile_interval_minutes"] = args.reconcile_minutes
    if args.country:
        store["country"] = args.country
    with _rpc(args) as rpc:
        result = rpc.customer_sync.register_store(store)
    emit(args, result, lambda r: f"store {r['store_id']} {'added' if r['created'] else 'updated'}")
    return EXIT_OK


def cmd_stores_list(args) -> int:
    with _rpc(args) as rpc:
        stores = rpc.customer_sync.list_stores()
    emit(args, stores, lambda s: table(s, ["store_id", "shop_url", "country",
                                            "reconcile_interval_minutes"]))
    return EXIT_OK


def cmd_store_health(args) -> int:
    with _rpc(args) as rpc:
        health = rpc.customer_sync.store_health(args.store)

    def human(h):
        lines = [f"store {h['store_id']}: {'healthy' if h['healthy'] else 'NEEDS ATTENTION'}",
                 f"last reconciled: {h['last_reconciled_at'] or 'never'}",
                 f"inbox: {h['inbox']}"]
        lines += [f"  problem: {p}" for p in h["problems"]]
        if h["webhooks"]:
            lines.append(table(h["webhooks"], ["id", "topic", "status", "delivery_url"]))
        return "\n".join(lines)

    emit(args, health, human)
    return EXIT_OK if health["healthy"] else EXIT_FAILED


def cmd_backfill(args) -> int:
    bar = None if args.json else ProgressBar()
    with _rpc(args) as rpc:
        run = rpc.customer_sync.backfill(args.store, args.since)
        try:
            while run["status"] == "running":
                if bar:
                    bar.update(run)
                time.sleep(args.poll)
                run = rpc.customer_sync.backfill_status(args.store, run["run_id"])
        except KeyboardInterrupt:
            if bar:
                bar.close()
            print(f"backfill {run['run_id']} goes on in the service; "
                  f"`companion backfill --store {args.store}` follows it again", file=sys.stderr)
            return EXIT_FAILED
    if bar:
        bar.update(run)
        bar.close()
    emit(args, run, lambda r: (
        f"backfill {r['run_id']}: {r['status']}; customers {r['items'].get('customers', 0)}, "
        f"orders {r['items'].get('orders', 0)}; outcomes {_phase_outcomes(r)}"
        + (f"\nerror: {r['error']} (run the same command again to resume)" if r.get("error") else "")))
    return EXIT_OK if run["status"] == "completed" else EXIT_FAILED


def _phase_outcomes(run: dict) -> str:
    """`customers: unchanged 98, updated 2; orders: unchanged 400`: what each phase found."""
    phases = run.get("outcomes_by_phase") or {"all": run.get("outcomes", {})}
    return "; ".join(f"{phase}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
                     for phase, counts in phases.items()) or "none"


def cmd_dlq(args) -> int:
    parking = ParkedMessages(args.amqp_uri, _amqp_ssl(args))
    ids = set(args.id) if args.id else None
    if args.action in ("replay", "purge") and ids is None and not args.all:
        print("name messages with --id, or pass --all", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "list":
        found = [m.summary() for m in parking.list(args.service)]
        emit(args, found, lambda rows: table(rows, ["park_id", "event_type", "store_id", "attempts",
                                                    "parked_at", "error"]))
        return EXIT_OK
    if args.action == "show":
        if not args.id:
            print("show needs --id", file=sys.stderr)
            return EXIT_USAGE
        message = parking.show(args.service, args.id[0])
        if message is None:
            print(f"no parked message {args.id[0]}", file=sys.stderr)
            return EXIT_FAILED
        data = {**message.summary(), "queue": message.queue, "body": message.body,
                "traceback": message.traceback}
        emit(args, data, lambda d: json.dumps(d, indent=2, default=str))
        return EXIT_OK
    done = parking.replay(args.service, ids) if args.action == "replay" else \
        parking.purge(args.service, ids)
    emit(args, [m.summary() for m in done],
         lambda rows: f"{'replayed' if args.action == 'replay' else 'purged'} {len(rows)} message(s)")
    if ids is not None and len(done) < len(ids):
        print(f"{len(ids) - len(done)} id(s) were not found", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_quarantine(args) -> int:
    """customer_sync's quarantined webhook deliveries, shaped like `dlq`."""
    if args.action == "show" and not args.id:
        print("show needs --id", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "replay" and not args.id and not args.all:
        print("name deliveries with --id, or pass --all", file=sys.stderr)
        return EXIT_USAGE
    with _rpc(args) as rpc:
        if args.action == "list":
            found, cursor = [], None
            while True:
                page = rpc.customer_sync.list_quarantined(args.store, {"size": 500,
                                                                        "cursor": cursor})
                found += page["items"]
                cursor = page["next_cursor"]
                if not cursor or len(found) >= args.limit:
                    break
            emit(args, found[: args.limit], lambda rows: table(rows, [
                "quarantine_id", "topic", "resource_id", "attempts", "replays",
                "quarantined_at", "error"]))
            return EXIT_OK
        if args.action == "show":
            data = rpc.customer_sync.show_quarantined(args.store, args.id[0])
            emit(args, data, lambda d: json.dumps(d, indent=2, default=str))
            return EXIT_OK
        answer = rpc.customer_sync.replay_quarantined(args.store, args.id or None, bool(args.all))
    emit(args, answer, lambda a: (
        f"replayed {len(a['replayed'])} delivery(ies) of store {a['store_id']}; "
        f"{a['remaining']} left in quarantine (run again with --all for the rest; one that "
        "fails again comes back with its new error)"))
    if answer["not_found"]:
        print(f"{len(answer['not_found'])} id(s) were not found in quarantine: "
              f"{', '.join(answer['not_found'])}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_webhooks_register(args) -> int:
    with _rpc(args) as rpc:
        result = rpc.customer_sync.register_webhooks(args.store, args.delivery_url)
    failed = [w for w in result["webhooks"] if w["outcome"] == "failed"]

    def human(r):
        lines = [f"store {r['store_id']}: webhooks deliver to {r['delivery_url']}",
                 table(r["webhooks"], ["topic", "webhook_id", "outcome", "error"]
                       if failed else ["topic", "webhook_id", "outcome"])]
        return "\n".join(lines)

    emit(args, result, human)
    if failed:
        print(f"{len(failed)} webhook(s) could not be set up; fix the cause and run the same "
              "command again", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


EPILOG = """\
secrets: a store's webhook secret and REST keys come from WOO_WEBHOOK_SECRET, WOO_CONSUMER_KEY
and WOO_CONSUMER_SECRET (or a prompt) when the store is added, and stay in customer_sync; no
command takes a secret as an argument or prints one. The broker's password is in AMQP_URI; the
management API's in RABBITMQ_MANAGEMENT_USER/PASSWORD (default: AMQP_URI's).

exit codes: 0 ok; 1 refused or failed (not found, conflict, needs attention); 2 usage or
validation (an unknown flag, a bad value, a field a service refused: one `error: FIELD: why`
line each); 3 services or broker unreachable (or not answering in --timeout). See
docs/cli.md. `companion COMMAND --help` says what each command does."""


GDPR_TYPES = {"access": "access", "export": "portability", "portability": "portability",
              "rectification": "rectification", "erasure": "erasure", "objection": "objection"}


def _operator() -> str:
    """Who is at the keyboard, for the audit trail (COMPANION_ACTOR overrides)."""
    who = os.environ.get("COMPANION_ACTOR") or os.environ.get("USER") or os.environ.get("LOGNAME")
    return f"cli:{who}" if who else "cli:operator"


def _gdpr_human(request: dict) -> str:
    lines = [f"request {request['request_id']}: {request['type']} for {request.get('email') or '-'}"
             f" in store {request['store_id']}",
             f"state: {request['state']}{'  (OVERDUE)' if request.get('overdue') else ''}",
             f"received: {request.get('received_at')}   due: {request.get('due_at')}"
             + (f"   completed: {request['completed_at']}" if request.get("completed_at") else "")]
    if request.get("needs_review"):
        where = "; ".join(f"{service}: " + ", ".join(f"{m['collection']} ({m['count']})"
                                                     for m in found)
                          for service, found in sorted(request["result"]["ambiguous"].items()))
        lines.append(f"NEEDS REVIEW: the person's phone or name is in records naming no "
                     f"customer: {where}")
    if request.get("audit"):
        lines.append(table(request["audit"], ["at", "actor", "action", "detail"]))
    return "\n".join(lines)


def cmd_gdpr(args) -> int:
    with _rpc(args) as rpc:
        if args.action == "submit":
            try:
                details = json.loads(args.details) if args.details else None
            except ValueError as exc:
                print(f"--details is not JSON: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if details is not None and not isinstance(details, dict):
                print("--details must be a JSON object", file=sys.stderr)
                return EXIT_USAGE
            request = rpc.gdpr.submit_request(args.store, GDPR_TYPES[args.type], args.email,
                                              details, args.actor or _operator())
            emit(args, request, lambda r: _gdpr_human(r) + "\nnext: confirm the requester's "
                 f"identity, then `companion gdpr verify --id {r['request_id']}`")
        elif args.action == "status":
            emit(args, rpc.gdpr.get_request(args.id), _gdpr_human)
        elif args.action == "verify":
            emit(args, rpc.gdpr.verify_identity(args.id, args.actor or _operator(), args.note or ""),
                 _gdpr_human)
        elif args.action == "reject":
            emit(args, rpc.gdpr.reject_request(args.id, args.reason, args.actor or _operator()),
                 _gdpr_human)
        else:
            requests = rpc.gdpr.list_requests(args.store, args.state)
            emit(args, requests, lambda rows: table(rows, [
                "request_id", "type", "state", "email", "received_at", "due_at", "overdue",
                "needs_review"]))
    return EXIT_OK


def _capture_human(settings: dict) -> str:
    rows = [{**rule, "yes_values": ",".join(rule["yes_values"])} for rule in settings["rules"]]
    who = (f"\nchanged {settings['updated_at']} by {settings['updated_by']}"
           if settings.get("updated_at") else "")
    return table(rows, ["scope", "key", "yes_values", "purpose"]) + who


def cmd_consent_capture(args) -> int:
    """Which checkout opt-in meta data means consent (docs/consent-capture.md)."""
    with _rpc(args) as rpc:
        if args.action == "show":
            emit(args, rpc.customer_sync.get_consent_capture(args.store), _capture_human)
            return EXIT_OK
        try:
            with (sys.stdin if args.rules == "-" else open(args.rules, encoding="utf-8")) as f:
                settings = json.loads(f.read(1_000_001))
        except (OSError, ValueError) as exc:
            print(f"--rules: not a readable JSON file: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(settings, list):  # the rules alone
            settings = {"rules": settings}
        saved = rpc.customer_sync.set_consent_capture(args.store, settings,
                                                      args.actor or _operator())
        emit(args, saved, lambda s: _capture_human(s) + "\norders already held are captured "
             f"at the next backfill or reconciliation (`companion backfill --store {args.store}`)")
    return EXIT_OK


def cmd_customers_find(args) -> int:
    with _rpc(args) as rpc:
        if args.email:
            try:
                found = [rpc.customer_sync.find_customer(args.store, args.email)]
            except NotFound:
                found = []
        else:
            found = rpc.customer_sync.list_customers(
                args.store, {"name": args.name}, {"size": args.limit})["items"]
    for row in found:
        row["name"] = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
    emit(args, found, lambda rows: table(rows, ["customer_id", "email", "name", "registered",
                                                "status", "date_created"]))
    if not found:
        print(f"no customer in store {args.store} matches", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _merge_human(merge: dict) -> str:
    lines = [f"merge {merge['merge_id']} ({merge['kind']}, {merge['state']}): "
             f"{', '.join(merge['merged_ids'])} into {merge['primary_id']}"]
    moved = merge.get("moved") or {}
    if moved:
        lines.append("moved: " + ", ".join(f"{kind} {len(ids)}" for kind, ids in moved.items()))
    if merge.get("changed_fields"):
        lines.append("the primary took: " + ", ".join(merge["changed_fields"]))
    accounts = merge.get("shop_accounts") or []
    if len(accounts) > 1:
        lines.append("WooCommerce has no merge: these shop accounts remain there: " + ", ".join(
            f"#{a['woo_customer_id']} ({a['customer_id']})" for a in accounts))
    return "\n".join(lines)


def _unmerge_human(answer: dict) -> str:
    lines = [f"merge {answer['merge_id']} undone"]
    for r in answer["restored"]:
        lines.append(f"{r['customer_id']}: orders back {', '.join(r['orders_back']) or 'none'}; "
                     f"its own since {', '.join(r['orders_since']) or 'none'}; notes "
                     f"{r['notes_back']}, reminders {r['reminders_back']} back")
    for o in answer["orders_stayed"]:
        lines.append(f"order {o['order_id']} stays with {o['customer_id']}: {o['reason']}")
    if answer["fields_back"]:
        lines.append("the primary's fields back: " + ", ".join(answer["fields_back"]))
    if answer["fields_kept"]:
        lines.append("edited since the merge, kept: " + ", ".join(answer["fields_kept"]))
    return "\n".join(lines)


def _field_choices(values: list[str] | None) -> dict:
    """`--take email=<customer id>` (repeatable) as {"email": "<customer id>"}."""
    choices = {}
    for value in values or []:
        name, sep, customer_id = value.partition("=")
        if not sep or not name or not customer_id:
            raise ValidationError(f"--take {value!r} is not FIELD=CUSTOMER_ID",
                                  {"fields": {"take": ["FIELD=CUSTOMER_ID"]}})
        choices[name] = customer_id
    return choices


def cmd_customers_merge(args) -> int:
    choices = _field_choices(args.take)
    with _rpc(args) as rpc:
        merge = rpc.customer_sync.merge_customers(args.store, args.primary, args.merged, choices,
                                                  args.actor or _operator())
    emit(args, merge, _merge_human)
    return EXIT_OK


def cmd_customers_unmerge(args) -> int:
    with _rpc(args) as rpc:
        answer = rpc.customer_sync.unmerge_customers(args.store, args.merge_id,
                                                     args.actor or _operator())
    emit(args, answer, _unmerge_human)
    return EXIT_OK


def cmd_customers_merges(args) -> int:
    with _rpc(args) as rpc:
        if args.merge_id:
            emit(args, rpc.customer_sync.get_merge(args.store, args.merge_id), _merge_human)
            return EXIT_OK
        page = rpc.customer_sync.list_merges(args.store, args.customer, {"size": args.limit})
    rows = [{**m, "merged": ",".join(m["merged_ids"])} for m in page["items"]]
    emit(args, page["items"], lambda _: table(rows, ["merge_id", "kind", "state", "primary_id",
                                                     "merged", "created_at", "created_by"]))
    return EXIT_OK


# -- companies (B2B): customer_sync's records, segmentation's stats and groups ------------------
COMPANY_ID = re.compile(COMPANY_ID_PATTERN)
COMPANY_COLUMNS = ["company_id", "name", "domain", "members", "orders", "spent", "last_order"]
COMPANY_CLEARABLE = ("domain", "vat_id", "group", "address", "custom_fields")
_COMPANY_FLAGS = {"name": "name", "domain": "domain", "vat_id": "vat_id", "group": "group"}


def _company_id(value: str, field: str = "company_id") -> str:
    if not COMPANY_ID.fullmatch(value or ""):
        raise ValidationError(f"{field} must be co_ and 24 lower-case hex characters",
                              {"fields": {field: ["co_ and 24 lower-case hex characters"]}})
    return value


def _company_rows(companies: list[dict], stats: dict) -> list[dict]:
    rows = []
    for company in companies:
        s = stats.get(company["company_id"]) or {}
        rows.append({**company, "members": s.get("members", company.get("member_count")),
                     "orders": s.get("orders_count"), "spent": present.money(s.get("total_spent")),
                     "last_order": (s.get("last_order_at") or "")[:10]})
    return rows


def _company_human(company: dict) -> str:
    address = company.get("address") or {}
    lines = [f"company {company['company_id']}: {company['name']}",
             f"domain: {company.get('domain') or '-'}   vat id: {company.get('vat_id') or '-'}"
             f"   group: {company.get('group') or '-'}",
             "address: " + (", ".join(v for v in (address.get(k) for k in (
                 "address_1", "address_2", "postcode", "city", "state", "country")) if v) or "-")]
    stats = company.get("stats")
    if stats:
        lines.append(f"members {stats['members']}, orders {stats['orders_count']}, spent "
                     f"{present.money(stats['total_spent'])}, last order "
                     f"{(stats.get('last_order_at') or '-')[:10]}")
    terms = company.get("group_terms")
    if terms:
        lines.append(f"B2B terms of {terms['name']}: discount {terms['discount_percent'] or '-'} %"
                     f", free shipping from {terms['free_shipping_threshold'] or '-'} (minor "
                     f"units), payment terms {terms['payment_terms_days'] or '-'} days")
    if company.get("custom_fields"):
        lines.append("custom fields: " + ", ".join(
            f"{k}={v}" for k, v in sorted(company["custom_fields"].items())))
    return "\n".join(lines)


def _company_changes(args, is_new: bool) -> dict:
    """The flags given, as the RPC's data; --clear FIELD sends null (an update only). The
    --custom pairs are left to _custom_changes, which needs the store's definitions."""
    data = {key: getattr(args, flag) for flag, key in _COMPANY_FLAGS.items()
            if getattr(args, flag, None) is not None}
    address = {part: getattr(args, part) for part in COMPANY_ADDRESS_PARTS
               if getattr(args, part, None) is not None}
    if address:
        data["address"] = address
    if args.custom:
        data["custom_fields"] = dict(_custom_pairs(args.custom))
    for field in getattr(args, "clear", None) or []:
        if field in data:
            raise ValidationError(f"{field} is both set and cleared",
                                  {"fields": {field: ["set and cleared at once"]}})
        data[field] = None
    if not is_new and not data:
        raise ValidationError("name something to change", {"fields": {
            "company": ["give at least one of --name, --domain, --vat-id, --group, an "
                        "address flag, --custom or --clear"]}})
    return data


def _custom_pairs(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise ValidationError(f"--custom {value!r} is not KEY=VALUE",
                                  {"fields": {"custom": ["KEY=VALUE"]}})
        pairs.append((key, text))
    return pairs


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", re.ASCII)


def _custom_refusal(key: str, message: str) -> ValidationError:
    key = key[:41]  # a key is at most 40 characters: one more shows it was longer
    return ValidationError(f"custom_fields.{key}: {message}",
                           {"fields": {f"custom_fields.{key}": [message]}})


def _typed_custom(texts: dict[str, str], definitions: dict[str, dict],
                  current: dict) -> dict[str, Any]:
    """--custom's texts typed by the store's company definitions, as the console reads its
    form: a boolean from true/false/yes/no/1/0, a number, a date, choice or text as given; an
    empty value clears the field (None). A key the store has no company field of is refused,
    but for clearing a value the company still holds."""
    typed: dict[str, Any] = {}
    for key, text in texts.items():
        definition = definitions.get(key)
        if text == "" and (definition is not None or key in current):
            typed[key] = None
            continue
        if definition is None:
            raise _custom_refusal(key, "the store has no company custom field of this key")
        kind = definition.get("type")
        if kind == "boolean":
            if text.lower() not in _TRUE + _FALSE:
                raise _custom_refusal(key, "a yes/no field: give true/false, yes/no or 1/0")
            typed[key] = text.lower() in _TRUE
        elif kind == "number":
            number = (float(text) if any(c in text for c in ".eE") else int(text)) if (
                len(text) <= 40 and _NUMBER.fullmatch(text)) else None
            if number is None or not math.isfinite(number):
                raise _custom_refusal(key, f"a number field: {text[:40]!r} is not a number")
            typed[key] = number
        else:
            typed[key] = text
    return typed


def _still_fits(definition: dict, value: Any) -> bool:
    """Whether a stored value is still of its field's type (the store checks the rest)."""
    kind = definition.get("type")
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "choice":
        return value in (definition.get("options") or [])
    return isinstance(value, str)


def _custom_changes(texts: dict[str, str], definitions: dict[str, dict],
                    current: dict | None) -> dict:
    """The company's whole set of custom values to send: for a new company (current None)
    the typed flags; for an update the current values with only the flags' keys changed. A
    value the flags leave alone that no longer fits its field (the field was removed or
    retyped) is refused, naming it, rather than sent for the store to refuse or dropped."""
    typed = _typed_custom(texts, definitions, current or {})
    if current is None:
        return {key: value for key, value in typed.items() if value is not None}
    for key, value in current.items():
        if key in typed:
            continue
        definition = definitions.get(key)
        if definition is None or not _still_fits(definition, value):
            why = ("its field is no longer a company field of the store" if definition is None
                   else f"its field is now of type {definition.get('type')}")
            raise _custom_refusal(key, f"the stored value {value!r} no longer fits ({why}); "
                                       f"give --custom {key}=VALUE to replace it or "
                                       f"--custom {key}= to clear it")
    merged = {**current, **typed}
    return {key: value for key, value in merged.items() if value is not None}


def _known_group(rpc, store: str, data: dict) -> None:
    """As the API does: a group segmentation has not saved is refused before anything."""
    group = data.get("group")
    if group and not any(g["slug"] == group for g in rpc.segmentation.list_groups(store)):
        raise ValidationError(f"no group {group} in store {store}",
                              {"fields": {"group": ["no such group; create it first"]}})


def _company_definitions(rpc, store: str) -> dict[str, dict]:
    """The store's company custom field definitions by key, which --custom values are typed
    by."""
    return {d["key"]: d for d in fields_of(rpc.customer_sync.list_custom_fields(store),
                                           "company")}


def _with_detail(rpc, store: str, company: dict) -> dict:
    stats = rpc.segmentation.company_stats(store, [company["company_id"]])
    terms = None
    if company.get("group"):
        terms = next(({k: g.get(k) for k in ("name", "discount_percent",
                                              "free_shipping_threshold", "payment_terms_days")}
                      for g in rpc.segmentation.list_groups(store)
                      if g["slug"] == company["group"]), None)
    return {**company, "stats": stats.get(company["company_id"]), "group_terms": terms}


def cmd_companies(args) -> int:
    actor = getattr(args, "actor", None) or _operator()
    if args.action in ("show", "update", "delete"):
        _company_id(args.company_id)
    if args.action == "list" and not 1 <= args.limit <= 100:
        raise ValidationError("--limit must be 1-100", {"fields": {"limit": ["1-100"]}})
    with _rpc(args) as rpc:
        if args.action == "list":
            page = rpc.customer_sync.list_companies(
                args.store, {"q": args.q} if args.q else None, {"size": args.limit})
            ids = [c["company_id"] for c in page["items"]]
            stats = rpc.segmentation.company_stats(args.store, ids) if ids else {}
            rows = _company_rows(page["items"], stats)
            emit(args, [{**c, "stats": stats.get(c["company_id"])} for c in page["items"]],
                 lambda _: table(rows, COMPANY_COLUMNS))
            if page.get("next_cursor") and not args.json:
                print("(more: narrow with --q, or raise --limit up to 100)", file=sys.stderr)
            return EXIT_OK
        if args.action == "show":
            company = rpc.customer_sync.get_company(args.store, args.company_id)
        elif args.action == "create":
            data = _company_changes(args, is_new=True)
            _known_group(rpc, args.store, data)
            if data.get("custom_fields"):
                data["custom_fields"] = _custom_changes(
                    data["custom_fields"], _company_definitions(rpc, args.store), None)
            company = rpc.customer_sync.create_company(args.store, data, actor)
        elif args.action == "update":
            data = _company_changes(args, is_new=False)
            _known_group(rpc, args.store, data)
            if data.get("address") or data.get("custom_fields"):
                # Flags name some parts; the rest stay as they are, so the whole is sent.
                current = rpc.customer_sync.get_company(args.store, args.company_id)
                if data.get("address"):
                    data["address"] = {**(current.get("address") or {}), **data["address"]}
                if data.get("custom_fields"):
                    data["custom_fields"] = _custom_changes(
                        data["custom_fields"], _company_definitions(rpc, args.store),
                        current.get("custom_fields") or {})
            company = rpc.customer_sync.update_company(args.store, args.company_id, data, actor)
        else:
            if not args.yes and not (sys.stdin.isatty() and _confirmed(
                    f"delete company {args.company_id}? its members then belong to none")):
                print("nothing deleted (--yes deletes without asking)", file=sys.stderr)
                return EXIT_FAILED
            answer = rpc.customer_sync.delete_company(args.store, args.company_id, actor)
            emit(args, answer, _deletion_human)
            return EXIT_OK
        emit(args, _with_detail(rpc, args.store, company), _company_human)
    return EXIT_OK


def _deletion_human(answer: dict) -> str:
    """Done, or (`finishing`) stopped early with the rest left to the background sweep."""
    if answer.get("finishing") and not answer.get("deleted"):
        return (f"company {answer['company_id']} is being deleted; "
                f"{answer['members_released']} members released so far, the rest of its "
                f"members are released in the background")
    return (f"deleted company {answer['company_id']}; "
            f"{answer['members_released']} members belong to none now")


def cmd_customers_company(args) -> int:
    company_id = None if args.company.lower() == "none" else _company_id(args.company)
    with _rpc(args) as rpc:
        answer = rpc.customer_sync.set_customer_company(args.store, args.customer_id,
                                                        company_id, args.actor or _operator())
    emit(args, answer, lambda a: (
        f"customer {a['customer_id']} " + (f"belongs to {a['company_id']}" if a["company_id"]
                                           else "belongs to no company")
        + ("" if a["changed"] else " (already so)")))
    return EXIT_OK


def cmd_keys(args) -> int:
    with _rpc(args) as rpc:
        if args.action == "create":
            key = rpc.customer_sync.create_api_key(args.store, args.name, args.scopes.split(","),
                                                   args.actor or _operator(), args.rate_limit)
            emit(args, key, lambda k: (
                f"API key {k['key_id']} for store {k['store_id']} ({', '.join(k['scopes'])}):\n"
                f"{k['api_key']}\nIt is shown only now: store it safely."))
        elif args.action == "list":
            keys = rpc.customer_sync.list_api_keys(args.store, args.all)
            emit(args, keys, lambda rows: table(
                [{**r, "scopes": ",".join(r["scopes"])} for r in rows],
                ["key_id", "name", "scopes", "rate_limit_per_minute", "created_at",
                 "last_used_at", "revoked_at"]))
        else:
            emit(args, rpc.customer_sync.revoke_api_key(args.store, args.id,
                                                        args.actor or _operator()),
                 lambda k: f"API key {k['key_id']} revoked")
    return EXIT_OK


# -- loyalty: rewards are single-use WooCommerce coupons --------------------------------------
REWARD_COLUMNS = ["reward_id", "code", "kind", "amount", "state", "expires_at", "attempts",
                  "last_error"]


def _reward_rows(rewards: list[dict]) -> list[dict]:
    return [{**r, "amount": present.money(r.get("amount")),
             "expires_at": r.get("expires_at") or "never"} for r in rewards]


def _reward_human(reward: dict) -> str:
    return present.reward_message(reward) + f"\n{table(_reward_rows([reward]), REWARD_COLUMNS)}"


def _confirmed(question: str) -> bool:
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _expiry(text: str | None) -> str | None:
    """--expires as a day (the start of it, UTC) or an ISO-8601 time with a zone."""
    if not text:
        return None
    try:
        return present.to_day_start(text)
    except ValueError:
        pass
    try:
        return check_aware(text).isoformat()
    except RefusedTime as refused:
        raise ValueError({
            "invalid": "--expires must be a date (YYYY-MM-DD) or an ISO-8601 time",
            "naive": "--expires must carry a time zone (Z or +hh:mm) when it has a time",
        }.get(refused.reason, f"--expires {refused}")) from None


def cmd_loyalty(args) -> int:
    actor = args.actor or _operator()
    if getattr(args, "points", 1) < 1:
        print("points must be a whole number of at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        expires_at = _expiry(getattr(args, "expires", None))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    with _rpc(args) as rpc:
        if args.action == "rewards":
            rewards = rpc.loyalty.list_rewards(args.store, args.customer)["items"]
            emit(args, rewards, lambda rows: table(_reward_rows(rows), REWARD_COLUMNS))
            return EXIT_OK
        if args.action == "cancel-reward":
            reward = rpc.loyalty.cancel_reward(args.store, args.customer, args.reward_id, actor)
            emit(args, reward, present.cancel_message)
            return EXIT_OK
        request_id = args.request_id or f"cli-{uuid.uuid4().hex}"
        if args.action == "redeem":
            quote = rpc.loyalty.quote_redemption(args.store, args.customer, args.points)
            if not quote["allowed"]:
                print(f"cannot redeem {args.points} points: {quote.get('reason')} (nothing was "
                      "redeemed)", file=sys.stderr)
                return EXIT_FAILED
            valid = f", coupon valid until {present.day(quote['expires_at'])}" \
                if quote.get("expires_at") else ""
            if not args.yes:
                print(f"{quote['points']} points = {present.money(quote['amount'])}{valid}",
                      file=sys.stderr)
                if not sys.stdin.isatty():
                    print("nothing was redeemed: pass --yes to redeem without the question",
                          file=sys.stderr)
                    return EXIT_USAGE
                if not _confirmed("Redeem?"):
                    print("nothing was redeemed", file=sys.stderr)
                    return EXIT_FAILED
            answer = rpc.loyalty.redeem(args.store, args.customer, args.points, request_id,
                                        actor)
        else:
            account = rpc.loyalty.get_account(args.store, args.customer)
            currency = present.store_currency(account) or present.store_currency(
                None, rpc.loyalty.get_programme(args.store))
            if not currency:
                print("the store's currency is not known yet (no order and no programme "
                      "currency): no credit can be issued", file=sys.stderr)
                return EXIT_FAILED
            try:
                amount = present.to_minor_units(args.amount, currency)
            except ValueError as exc:
                print(f"amount {exc} ({currency})", file=sys.stderr)
                return EXIT_USAGE
            if amount < 1:
                print("amount must be more than zero", file=sys.stderr)
                return EXIT_USAGE
            answer = rpc.loyalty.issue_credit(args.store, args.customer, amount, args.reason,
                                              args.note or "", actor, expires_at, request_id)
    emit(args, answer, lambda a: _reward_human(a["reward"]))
    return EXIT_FAILED if answer["reward"]["state"] == "returned" else EXIT_OK


def cmd_health(args) -> int:
    refused = broker_connection_error(args.amqp_uri, timeout=min(args.service_timeout, 5.0),
                                      ssl=_amqp_ssl(args), retries=1)
    if refused is not None:
        print(f"cannot reach the broker: {describe_broker_error(refused, args.amqp_uri)}",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    names = args.service or list(SERVICES)
    management = Management.from_config(Config(settings=every_setting()), args.amqp_uri)
    report = system_health(args.amqp_uri, names, management, timeout=args.service_timeout)

    def human(r):
        rows = [{**row, "broker": _check(row, "broker"), "database": _check(row, "database")}
                for row in r["services"]]
        lines = [table(rows, ["service", "state", "broker", "database", "instances", "parked",
                              "quarantined"]), ""]
        if r["queues"] is not None:
            lines.append(f"queues of vhost {r['broker']['vhost']} (sampled by the broker every "
                         "few seconds):")
            lines.append(table(r["queues"], ["name", "messages", "messages_ready",
                                             "messages_unacknowledged", "consumers"]))
        lines.append("")
        lines.append("healthy" if r["healthy"] else "NEEDS ATTENTION")
        lines += [f"  {p}" for p in r["problems"]]
        return "\n".join(lines)

    emit(args, report, human)
    return EXIT_OK if report["healthy"] else EXIT_FAILED


def _check(row: dict, name: str) -> str:
    checks = row.get("checks") or {}
    return "-" if name not in checks else ("ok" if checks[name] else "DOWN")


# -- a service's refusal, one line a field ---------------------------------------------------
def flatten_field_messages(fields: Any, prefix: str = "") -> list[tuple[str, list[str]]]:
    """marshmallow's nested messages as (dotted path, texts): `{"rules": {"0": {"key":
    [...]}}}` is `rules.0.key`; a schema-wide `_schema` message belongs to its parent."""
    if isinstance(fields, dict):
        found = []
        for key, value in fields.items():
            name = prefix if key == "_schema" else (f"{prefix}.{key}" if prefix else str(key))
            found += flatten_field_messages(value, name)
        return found
    if isinstance(fields, (list, tuple)):
        texts = [str(t) for t in fields if not isinstance(t, (dict, list, tuple))]
        nested = [n for t in fields if isinstance(t, (dict, list, tuple))
                  for n in flatten_field_messages(t, prefix)]
        return ([(prefix, texts)] if texts else []) + nested
    return [(prefix, [str(fields)])]


def _readable(text: str) -> str:
    """`Not a valid email address.` reads as `not a valid email address` after `email: `."""
    text = text.strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        text = text[0].lower() + text[1:]
    return text


def validation_lines(message: str, fields: Any) -> list[str]:
    """`email: not a valid email address`, one line a field. The service's own sentence when
    it names no fields, or when it says more than its one field does: a code
    (`{"page.size": ["range"]}` beside `page.size must be 1-500`) or a hint (`choose from
    read, write` beside `unknown scope(s): root`)."""
    flat = [(path or "input", texts) for path, texts in flatten_field_messages(fields or {})]
    if not flat:
        return [message]
    if len(flat) == 1 and "{" not in message:  # not marshmallow's dict pasted into a sentence
        path, texts = flat[0]
        sentences = [t for t in texts if " " in t]
        unsaid = [t for t in sentences if t not in message]
        if not sentences or unsaid:
            said = message[len(path) + 1:] if message.startswith(path + " ") else message
            said = said[3:] if said.startswith("is ") else said
            return [f"{path}: {said}"
                    + (f" ({'; '.join(_readable(t) for t in unsaid)})" if unsaid else "")]
    return [f"{path}: {'; '.join(_readable(t) for t in texts) or 'invalid'}"
            for path, texts in sorted(flat, key=lambda item: item[0])]


def _messages_of(value: Any) -> Any:
    """A marshmallow error that crossed RPC without being named arrives as the text of its
    messages dict: read it back (literals only, bounded), or None."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or len(value) > MAX_REMOTE_MESSAGES:
        return None
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, (dict, list)) else None


# -- parser -----------------------------------------------------------------------------------
class CommandParser(argparse.ArgumentParser):
    """argparse without its two surprises: no abbreviated flags (`--stor` is not `--store`),
    and an unknown flag is named by the (sub)command that got it, under that command's usage,
    instead of by the top-level parser after the command's own complaints.

    Sub-commands are made with this class too (argparse's default `parser_class`), which is
    how `allow_abbrev=False` reaches them: argparse does not pass it down by itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._given: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        if self._subcommands():  # before the sub-command complains about what it lacks
            unknown = self._unknown_flags(self._given)
            if unknown:
                self.error(self._unrecognized(unknown))
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras))
        return namespace, extras

    def error(self, message: str):
        """A missing required flag is often a mistyped one: name the typo instead."""
        unknown = self._unknown_flags(self._given)
        if unknown:
            message = self._unrecognized(unknown)
        super().error(message)

    def _unknown_flags(self, given: list[str]) -> list[str]:
        """Flags this parser does not know; a parser with sub-commands looks only before the
        sub-command's name: what follows is the sub-command's to read."""
        subcommands = self._subcommands()
        unknown = []
        for arg in given:
            if arg == "--" or arg in subcommands:
                break
            flag = arg.split("=", 1)[0]
            if (len(flag) > 1 and flag[0] in self.prefix_chars and " " not in flag
                    and not self._negative_number_matcher.match(flag)
                    and flag not in self._option_string_actions):
                unknown.append(flag)
        return unknown

    def _subcommands(self) -> set[str]:
        return {name for a in self._actions if isinstance(a, argparse._SubParsersAction)
                for name in a.choices}

    def _unrecognized(self, extras: list[str]) -> str:
        flags = [e.split("=", 1)[0] for e in extras if e[:1] in self.prefix_chars and len(e) > 1]
        named = flags or extras
        hints = [(flag, self._closest_flag(flag)) for flag in flags]
        hints = [(flag, close) for flag, close in hints if close]
        said = f"unrecognized argument{'s' if len(named) > 1 else ''}: {' '.join(named)}"
        if len(named) == 1 and hints:
            return f"{said} (did you mean {hints[0][1]}?)"
        if hints:
            return f"{said} ({'; '.join(f'{f}: did you mean {c}?' for f, c in hints)})"
        return said

    def _closest_flag(self, flag: str) -> str | None:
        """The flag meant: the one it abbreviates, else one a typo or two away."""
        known = [o for o in self._option_string_actions if o not in ("-h", "--help")]
        started = sorted(o for o in known if o.startswith(flag) and len(flag) > 2)
        if started:
            return started[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        return close[0] if close else None


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="companion", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--amqp-uri", default=Config().get("AMQP_URI"),
                        help="RabbitMQ URI (default: $AMQP_URI)")
    parser.add_argument("--timeout", type=float, default=30.0, help="RPC timeout in seconds")
    commands = parser.add_subparsers(dest="command", required=True)

    stores = commands.add_parser("stores", help="shops this deployment serves")
    stores_cmds = stores.add_subparsers(dest="action", required=True)
    add = stores_cmds.add_parser(
        "add", help="add or update a store",
        description="Secrets come from WOO_WEBHOOK_SECRET, WOO_CONSUMER_KEY and "
                    "WOO_CONSUMER_SECRET, or are prompted for; never from arguments.")
    add.add_argument("--store", required=True, help="store id (lower-case letters, digits, - _)")
    add.add_argument("--shop-url", required=True, help="the shop's URL, e.g. https://shop.example/")
    add.add_argument("--reconcile-minutes", type=int, help="reconciliation interval")
    add.add_argument("--country", help="the shop's country (ISO 3166 two letters, e.g. DE): how "
                                       "customers' national phone numbers are read when their "
                                       "billing address names none; kept when not given")
    add.set_defaults(func=cmd_stores_add)
    stores_cmds.add_parser("list", help="list stores").set_defaults(func=cmd_stores_list)

    health = commands.add_parser("store-health", help="a store's webhooks and reconciliation")
    health.add_argument("--store", required=True)
    health.set_defaults(func=cmd_store_health)

    backfill = commands.add_parser("backfill", help="import a store's customers and orders",
                                   description="Reads the shop's REST API; resumes an "
                                               "interrupted run with the same arguments.")
    backfill.add_argument("--store", required=True)
    backfill.add_argument("--since", help="only orders modified after this ISO-8601 time")
    backfill.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    backfill.set_defaults(func=cmd_backfill)

    dlq = commands.add_parser("dlq", help="parked messages: list, show, replay, purge")
    dlq.add_argument("action", choices=["list", "show", "replay", "purge"])
    dlq.add_argument("--service", required=True, help="the consuming service, e.g. loyalty")
    dlq.add_argument("--id", action="append", help="a park id (repeatable)")
    dlq.add_argument("--all", action="store_true", help="replay or purge every parked message")
    dlq.set_defaults(func=cmd_dlq)

    quarantine = commands.add_parser(
        "quarantine", help="webhook deliveries that could not be applied: list, show, replay",
        description="A delivery customer_sync answered 200 for but could not apply (refused "
                    "content, or an error on every attempt) is kept in quarantine, never "
                    "dropped: WooCommerce does not send it again. List them, show one with "
                    "its body, and replay them once the cause is fixed; a replay that fails "
                    "again is quarantined again with its new error.")
    quarantine.add_argument("action", choices=["list", "show", "replay"])
    quarantine.add_argument("--store", required=True)
    quarantine.add_argument("--id", action="append",
                            help="a quarantine id (as listed; also the correlation id of the "
                                 "delivery's log lines); repeatable")
    quarantine.add_argument("--all", action="store_true",
                            help="replay every quarantined delivery of the store (up to 1000 "
                                 "a run)")
    quarantine.add_argument("--limit", type=int, default=1000, help="most deliveries listed")
    quarantine.set_defaults(func=cmd_quarantine)
    _add_operator_commands(commands)
    _accept_json_anywhere(parser)
    parser.epilog = EPILOG
    return parser


def _add_operator_commands(commands) -> None:
    """webhooks, gdpr, customers and health."""
    webhooks = commands.add_parser("webhooks", help="the shop's webhooks to this deployment")
    webhooks_cmds = webhooks.add_subparsers(dest="action", required=True)
    register = webhooks_cmds.add_parser(
        "register", help="create or re-activate the shop's webhooks for every topic we need",
        description="Through the shop's REST API (the store's consumer key and secret, stored "
                    "by `stores add`), makes sure one active webhook per topic we need "
                    "(customer.created|updated|deleted, order.created|updated|deleted|restored) "
                    "delivers to URL, signed with the store's webhook secret (also stored by "
                    "`stores add`; never passed here). Creates what is missing, re-activates "
                    "paused or disabled ones, leaves the rest: running it again changes "
                    "nothing. The shop pings URL before saving, so URL must be reachable from "
                    "the shop. Exit 1 when a topic could not be set up.")
    register.add_argument("--store", required=True, help="store id")
    register.add_argument("--delivery-url", required=True, metavar="URL",
                          help="where the shop posts: https://HOST/webhooks/woocommerce/STORE, "
                               "or just https://HOST (the path is added)")
    register.set_defaults(func=cmd_webhooks_register)

    gdpr = commands.add_parser("gdpr", help="GDPR requests: submit, status, list, verify, reject")
    gdpr_cmds = gdpr.add_subparsers(dest="action", required=True)
    submit = gdpr_cmds.add_parser(
        "submit", help="record a person's request (due in 30 days)",
        description="Records the request; nothing is done until an operator has confirmed "
                    "who asked (`gdpr verify`). `export` is the right to data portability.")
    submit.add_argument("--store", required=True)
    submit.add_argument("--type", required=True, choices=list(GDPR_TYPES))
    submit.add_argument("--email", required=True, help="the requester's email address")
    submit.add_argument("--details", metavar="JSON",
                        help='a JSON object; rectification needs {"fields": {"first_name": ...}}')
    submit.add_argument("--actor", help="who records it, for the audit trail "
                                        "(default: cli:$COMPANION_ACTOR or cli:$USER)")
    submit.set_defaults(func=cmd_gdpr)
    status = gdpr_cmds.add_parser("status", help="a request's state, due date and audit trail")
    status.add_argument("--id", required=True, help="the request id (req-...)")
    status.set_defaults(func=cmd_gdpr)
    listing = gdpr_cmds.add_parser("list", help="a store's requests, overdue first")
    listing.add_argument("--store", required=True)
    listing.add_argument("--state", choices=["received", "verified", "in_progress", "completed",
                                             "rejected"])
    listing.set_defaults(func=cmd_gdpr)
    verify = gdpr_cmds.add_parser("verify", help="confirm the requester's identity; work starts")
    verify.add_argument("--id", required=True)
    verify.add_argument("--note", help="how the identity was confirmed")
    verify.add_argument("--actor", help="who confirmed it (default: cli:$USER)")
    verify.set_defaults(func=cmd_gdpr)
    reject = gdpr_cmds.add_parser("reject", help="refuse a request, with the reason")
    reject.add_argument("--id", required=True)
    reject.add_argument("--reason", required=True)
    reject.add_argument("--actor", help="who refused it (default: cli:$USER)")
    reject.set_defaults(func=cmd_gdpr)

    capture = commands.add_parser(
        "consent-capture", help="which checkout opt-in meta data means consent",
        description="Each rule maps a meta key of the order (or the customer) and the values "
                    "that mean yes to a purpose (email_marketing, sms_marketing). Any other "
                    "value, or no key, is no signal. See docs/consent-capture.md.")
    capture_cmds = capture.add_subparsers(dest="action", required=True)
    show = capture_cmds.add_parser("show", help="a store's rules")
    show.add_argument("--store", required=True)
    show.set_defaults(func=cmd_consent_capture)
    replace = capture_cmds.add_parser("set", help="replace a store's rules from a JSON file")
    replace.add_argument("--store", required=True)
    replace.add_argument("--rules", required=True, metavar="FILE",
                         help='JSON: {"rules": [{"scope": "order", "key": "_newsletter", '
                              '"yes_values": ["yes"], "purpose": "email_marketing"}]}, '
                              'or - for standard input')
    replace.add_argument("--actor", help="who changed them (default: cli:$USER)")
    replace.set_defaults(func=cmd_consent_capture)

    customers = commands.add_parser("customers", help="look customers up")
    customers_cmds = customers.add_subparsers(dest="action", required=True)
    find = customers_cmds.add_parser(
        "find", help="by exact email, or by part of a name",
        description="Exit 1 when nobody matches (with --json, prints []).")
    find.add_argument("--store", required=True)
    by = find.add_mutually_exclusive_group(required=True)
    by.add_argument("--email", help="exact email address (case does not matter)")
    by.add_argument("--name", help="part of the first name, last name or email")
    find.add_argument("--limit", type=int, default=50, help="most customers listed by --name")
    find.set_defaults(func=cmd_customers_find)
    merge = customers_cmds.add_parser(
        "merge", help="merge duplicate records into a primary record (docs/merging.md)",
        description="The merged records retire and their orders, notes, reminders and timeline "
                    "move to the primary. Each registered record keeps its shop account.")
    merge.add_argument("--store", required=True)
    merge.add_argument("--primary", required=True, help="the customer id that stays")
    merge.add_argument("--merged", required=True, action="append",
                       help="a customer id merged into the primary (repeat for more, up to 10)")
    merge.add_argument("--take", action="append", metavar="FIELD=CUSTOMER_ID",
                       help="whose value of a contact field wins (repeatable); default: the "
                            "primary's, or a merged record's where the primary's is empty")
    merge.add_argument("--actor", help="who merged them (default: cli:$USER)")
    merge.set_defaults(func=cmd_customers_merge)
    unmerge = customers_cmds.add_parser(
        "unmerge", help="undo a merge; prints what went where",
        description="What moved at the merge goes back; what arrived since stays with the "
                    "primary unless it is the restored record's own (docs/merging.md).")
    unmerge.add_argument("--store", required=True)
    unmerge.add_argument("merge_id")
    unmerge.add_argument("--actor", help="who undid it (default: cli:$USER)")
    unmerge.set_defaults(func=cmd_customers_unmerge)
    merges = customers_cmds.add_parser("merges", help="list merges, or show one")
    merges.add_argument("--store", required=True)
    merges.add_argument("merge_id", nargs="?", help="show this merge")
    merges.add_argument("--customer", help="only merges naming this customer id")
    merges.add_argument("--limit", type=int, default=50)
    merges.set_defaults(func=cmd_customers_merges)
    company = customers_cmds.add_parser(
        "company", help="put a customer in a company, or in none",
        description="Exit 1 when the customer or the company is not found.")
    company.add_argument("--store", required=True)
    company.add_argument("customer_id")
    company.add_argument("company", metavar="COMPANY_ID|none",
                         help="the company's id (co_...), or none to leave the company")
    company.add_argument("--actor", help="who does it (default: cli:$USER)")
    company.set_defaults(func=cmd_customers_company)
    _add_company_commands(commands)

    keys = commands.add_parser(
        "keys", help="the gateway's API keys: create, list, revoke",
        description="Keys belong to one store and carry scopes: read, write (includes read), "
                    "gdpr (requests, consent, personal-data exports) and admin (everything, "
                    "including keys). A key is shown once, at creation; only its hash is kept.")
    keys_cmds = keys.add_subparsers(dest="action", required=True)
    create = keys_cmds.add_parser("create", help="a new key; prints it once")
    create.add_argument("--store", required=True)
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'crm sync'")
    create.add_argument("--scopes", required=True, help="comma-separated: read,write,gdpr,admin")
    create.add_argument("--rate-limit", type=int, metavar="PER_MINUTE",
                        help="requests a minute (default: GATEWAY_RATE_LIMIT_PER_MINUTE)")
    create.add_argument("--actor", help="who made it (default: cli:$USER)")
    create.set_defaults(func=cmd_keys)
    listing = keys_cmds.add_parser("list", help="a store's keys (never their secrets)")
    listing.add_argument("--store", required=True)
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.set_defaults(func=cmd_keys)
    revoke = keys_cmds.add_parser("revoke", help="stop a key working (within "
                                                 "GATEWAY_KEY_CACHE_SECONDS)")
    revoke.add_argument("--store", required=True)
    revoke.add_argument("--id", required=True, help="the key id")
    revoke.add_argument("--actor", help="who revoked it (default: cli:$USER)")
    revoke.set_defaults(func=cmd_keys)

    _add_loyalty_commands(commands)

    health = commands.add_parser(
        "health", help="every service's readiness, queue depths, parked messages",
        description="Asks every service for health() at once, reads the vhost's queues from "
                    "the RabbitMQ management API (RABBITMQ_MANAGEMENT_URL; user and password "
                    "from RABBITMQ_MANAGEMENT_USER/PASSWORD, else from AMQP_URI) and counts "
                    "parked messages and quarantined webhook deliveries. Exit 0: every service "
                    "ready, nothing parked or quarantined; 1: something needs attention (a "
                    "service not ready or not answering, parked messages, quarantined "
                    "deliveries, a notifications channel that keeps failing "
                    "(docs/notifications-failures.md), queues unreadable); 3: the broker "
                    "cannot be reached.")
    health.add_argument("--service", action="append",
                        help="only this service (repeatable; default: all)")
    health.add_argument("--service-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for each service's answer (default 5)")
    health.set_defaults(func=cmd_health)


def _add_company_commands(commands) -> None:
    """A store's companies (B2B): list, show, create, update, delete (docs/cli.md)."""
    companies = commands.add_parser(
        "companies", help="a store's companies (B2B): list, show, create, update, delete",
        description="A company's members are customers (`companion customers company`); its "
                    "group gives them the group's B2B terms.")
    companies_cmds = companies.add_subparsers(dest="action", required=True)

    def command(name: str, help_text: str, with_id: bool = False):
        sub = companies_cmds.add_parser(name, help=help_text)
        sub.add_argument("--store", required=True, help="store id")
        if with_id:
            sub.add_argument("company_id", help="the company's id (co_...)")
        sub.set_defaults(func=cmd_companies)
        return sub

    listing = command("list", "companies by name, with their members' orders and spend")
    listing.add_argument("--q", help="name or domain contains this")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-100)")
    command("show", "a company, its members' stats and its group's terms", with_id=True)
    create = command("create", "a new company")
    update = command("update", "change a company (only the flags given)", with_id=True)
    for sub, name_required in ((create, True), (update, False)):
        sub.add_argument("--name", required=name_required, help="1-200 characters")
        sub.add_argument("--domain", help="its email domain, e.g. acme.example (unique; no "
                                          "free-mail domain)")
        sub.add_argument("--vat-id", dest="vat_id", help="e.g. DE123456789")
        sub.add_argument("--group", help="a saved group whose B2B terms the members get")
        for part in COMPANY_ADDRESS_PARTS:
            sub.add_argument("--" + part.replace("_", "-"), dest=part,
                             help="address: " + part.replace("_", " "))
        sub.add_argument("--custom", action="append", metavar="KEY=VALUE",
                         help="a company custom field's value (repeatable)")
        sub.add_argument("--actor", help="who does it (default: cli:$USER)")
    update.add_argument("--clear", action="append", choices=COMPANY_CLEARABLE,
                        help="clear this field (repeatable)")
    delete = command("delete", "delete a company; its members then belong to none",
                     with_id=True)
    delete.add_argument("--yes", action="store_true", help="delete without asking")
    delete.add_argument("--actor", help="who does it (default: cli:$USER)")


def _add_loyalty_commands(commands) -> None:
    """A customer's rewards: list, redeem points, issue store credit, cancel."""
    loyalty = commands.add_parser(
        "loyalty", help="a customer's rewards (coupons): list, redeem, credit, cancel",
        description="Redeemed points and store credit become single-use WooCommerce coupons, "
                    "created at the shop by customer_sync. A coupon the shop cannot take yet "
                    "stays pending and is retried; one it refuses gives its points back.")
    loyalty_cmds = loyalty.add_subparsers(dest="action", required=True)

    def command(name: str, help_text: str, description: str = ""):
        sub = loyalty_cmds.add_parser(name, help=help_text, description=description or None)
        sub.add_argument("--store", required=True, help="store id")
        sub.add_argument("customer", help="the customer id")
        sub.set_defaults(func=cmd_loyalty)
        return sub

    command("rewards", "the customer's rewards, newest first")
    redeem = command("redeem", "redeem points for a coupon (shows its value and asks first)",
                     "Shows what the points are worth and until when the coupon is valid, "
                     "then asks; --yes redeems without asking (needed when not at a "
                     "terminal). Exit 1 when the programme refuses: nothing is taken.")
    redeem.add_argument("points", type=int, help="points to redeem")
    redeem.add_argument("--yes", action="store_true", help="redeem without asking")
    cancel = command("cancel-reward", "cancel a pending or issued reward (points go back)")
    cancel.add_argument("reward_id", help="the reward id, as `loyalty rewards` lists it")
    credit = command("credit", "issue store credit as a coupon",
                     "AMOUNT is in the store's currency, e.g. 12.50 (its minor units are "
                     "worked out from the currency).")
    credit.add_argument("amount", help="e.g. 12.50")
    credit.add_argument("--reason", required=True, choices=["goodwill", "refund_alternative"])
    credit.add_argument("--note", help="why, for the record (up to 2000 characters)")
    credit.add_argument("--expires", metavar="DATE",
                        help="valid until this day (YYYY-MM-DD, UTC) or ISO-8601 time")
    for sub in (redeem, credit):
        sub.add_argument("--request-id", help="run again with the same id and nothing happens "
                                              "twice (default: a new id each run)")
    for sub in (redeem, cancel, credit):
        sub.add_argument("--actor", help="who does it, for the record (default: cli:$USER)")
    loyalty_cmds.choices["rewards"].set_defaults(actor=None)


def _accept_json_anywhere(parser: argparse.ArgumentParser) -> None:
    """`--json` after the command too (`companion health --json`), not only before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--json" in a.option_strings for a in sub._actions):
                    sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                     help="machine-readable output")
                _accept_json_anywhere(sub)


def _without_password(uri: str) -> str:
    from shared.messaging.broker_uri import without_password

    return without_password(uri)


def main(argv: list[str] | None = None) -> int:
    import logging

    # py-amqp warns about a publisher confirm arriving while nameko closes a channel: noise.
    logging.getLogger("amqp").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    from nameko.exceptions import RemoteError, RpcTimeout, UnknownService

    try:
        return args.func(args)
    except ValidationError as exc:
        for line in validation_lines(exc.message, exc.details.get("fields")):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except RemoteError as exc:
        if exc.exc_type == "ValidationError":
            fields = _messages_of(exc.value)
            for line in validation_lines(str(exc.value), fields):
                print(f"error: {line}", file=sys.stderr)
            return EXIT_USAGE
        print(f"error from the service: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RpcTimeout:
        print(f"a service did not answer within {args.timeout:g}s (is it running? "
              "`companion health` says)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except UnknownService as exc:
        print(f"service {exc} is not running on {_without_password(args.amqp_uri)}",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    except Exception as exc:
        if is_broker_failure(exc):  # a refused login or a missing vhost is not an OSError
            print(f"cannot reach the broker: {describe_broker_error(exc, args.amqp_uri)}",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        if isinstance(exc, (OSError, TimeoutError)):
            print(f"cannot reach the services at {_without_password(args.amqp_uri)}: {exc}",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
