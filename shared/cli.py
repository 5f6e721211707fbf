"""`companion`: the operator's command line.

Talks to the running services over nameko RPC (and to RabbitMQ for parked messages), using
AMQP_URI from the environment. Tables for people, `--json` for scripts, a progress bar on long
work, and a non-zero exit code on failure.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from typing import Any, Callable

from shared.config import Config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


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
    from shared.tls import amqp_ssl_options

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
        raise SystemExit(f"set {env_name} (secrets are not taken as arguments)")
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
    with _rpc(args) as rpc:
        result = rpc.customer_sync.register_store(store)
    emit(args, result, lambda r: f"store {r['store_id']} {'added' if r['created'] else 'updated'}")
    return EXIT_OK


def cmd_stores_list(args) -> int:
    with _rpc(args) as rpc:
        stores = rpc.customer_sync.list_stores()
    emit(args, stores, lambda s: table(s, ["store_id", "shop_url", "reconcile_interval_minutes"]))
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
        f"orders {r['items'].get('orders', 0)}; outcomes {r['outcomes']}"
        + (f"\nerror: {r['error']} (run the same command again to resume)" if r.get("error") else "")))
    return EXIT_OK if run["status"] == "completed" else EXIT_FAILED


def cmd_dlq(args) -> int:
    from shared.messaging.parking import ParkedMessages

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


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="companion", description=__doc__,
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
    return parser


def _without_password(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nameko.exceptions import RemoteError
    from shared.errors import ServiceError

    try:
        return args.func(args)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except RemoteError as exc:
        print(f"error from the service: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach the services at {_without_password(args.amqp_uri)}: {exc}",
              file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
