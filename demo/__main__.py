"""`python -m demo` (`make demo`): the whole companion running against a simulated WooCommerce
shop, a mail catcher and an SMS stand-in, with a believable store and live orders, on a machine
with nothing but RabbitMQ. Ctrl-C (or SIGTERM) stops all of it. docs/demo.md says more."""
from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from demo.companion import Broker, Services, companion_ok, stand_in_settings
from demo.inbox_page import InboxPage
from demo.mailbox import SmtpServer
from demo.seed import DEFAULT_SEED, Api, build_history, configure_store
from demo.shop import FakeWooShop
from demo.sms import FakeTwilio
from demo.trickle import LiveTrickle
from ops.settings import every_setting
from shared.config import Config

STORE = "demo"
STATUS_SECONDS = 30


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything, children included."""


def _stop(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - a signal handler
    raise Stop(signal.Signals(signum).name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"the same seed makes the same shop (default {DEFAULT_SEED})")
    parser.add_argument("--customers", type=int, default=300,
                        help="registered customers in the shop's history (default 300)")
    parser.add_argument("--orders", type=int, default=3000,
                        help="orders over the last two years (default 3000)")
    parser.add_argument("--pause", type=float, default=4.0,
                        help="average seconds between live shop changes (default 4)")
    parser.add_argument("--log-dir", type=Path,
                        help="where the services' log goes (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.customers < 1 or args.orders < 1 or args.pause <= 0:
        parser.error("--customers and --orders must be at least 1, --pause above 0")
    return args


def say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="companion-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stop_trickle = threading.Event()
    broker = smtp = twilio = shop = inbox = services = trickle_thread = None
    try:
        broker = Broker.open(Config(settings=every_setting()))
        smtp = SmtpServer().start()
        twilio = FakeTwilio(seed=args.seed, auth_token=secrets.token_hex(16)).start()
        inbox = InboxPage(smtp, twilio).start()
        shop = FakeWooShop(seed=args.seed, consumer_key="ck_" + secrets.token_hex(20),
                           consumer_secret="cs_" + secrets.token_hex(20), ping_webhooks=True)
        say(f"Building the shop's history (seed {args.seed}): {args.customers} customers, "
            f"{args.orders} orders over two years ...")
        traffic = build_history(shop, args.seed, args.customers, args.orders)
        shop.start()
        summary = traffic.summary()
        say(f"Shop: {shop.base_url} ({summary['customers']} customers, {summary['orders']} "
            f"orders, {summary['guests']} guests, {summary['refunded_orders']} refunded)")

        services = Services(broker.amqp_uri, log_dir / "services.log", {
            "LOG_LEVEL": "WARNING",
            **stand_in_settings(smtp, twilio),
            "MAIL_FROM": "Demo Tea House <shop@demo.localhost>",
            "NOTIFY_POLL_SECONDS": "1", "OUTBOX_SWEEP_SECONDS": "1",
            "INBOX_SWEEP_SECONDS": "1", "GATEWAY_KEY_CACHE_SECONDS": "5"})
        say(f"Starting every service (python -m services, in-memory databases; log: "
            f"{services.log_path}) ...")
        services.start()

        amqp = broker.amqp_uri
        say(companion_ok(amqp, "stores", "add", "--store", STORE, "--shop-url", shop.base_url,
                         env={"WOO_WEBHOOK_SECRET": secrets.token_hex(20),
                              "WOO_CONSUMER_KEY": shop.consumer_key,
                              "WOO_CONSUMER_SECRET": shop.consumer_secret}).rstrip())
        key = json.loads(companion_ok(amqp, "--json", "keys", "create", "--store", STORE,
                                      "--name", "demo admin", "--scopes", "admin"))
        api = Api(services.gateway_url, key["api_key"])
        say("Setting the store up through the API: checkout consent, templates, workflows, "
            "loyalty programme, tagging rules, saved segments ...")
        configure_store(api, shop.base_url)
        say(companion_ok(amqp, "webhooks", "register", "--store", STORE,
                         "--delivery-url", services.webhooks_url).rstrip())
        companion_ok(amqp, "backfill", "--store", STORE, show=True)

        say("")
        say(f"Woo Companion demo is running ({time.monotonic() - started:.0f} s to start).")
        say(f"Console: {services.gateway_url}/console/   (sign in with the API key)")
        say(f"API key: {key['api_key']}")
        say(f"API: {services.gateway_url}/api/v1   (OpenAPI: {services.gateway_url}"
            "/api/v1/openapi.json)")
        say(f"Mailbox: {inbox.url}   (emails and SMS the companion sent)")
        say(f"Shop: {shop.base_url}wp-json/wc/v3/   (store id: {STORE}, log: {log_dir})")
        say(f"CLI: companion --amqp-uri {broker.shown_uri} stores list")
        say("Live orders keep arriving as webhooks. Ctrl-C stops everything.")
        say("")
        trickle = LiveTrickle(traffic, args.seed, (args.pause / 2, args.pause * 1.5), say=say)
        trickle_thread = threading.Thread(target=trickle.run, args=(stop_trickle,),
                                          name="live-trickle", daemon=True)
        trickle_thread.start()
        told = None
        while True:  # now and then, what the live shop has set off
            time.sleep(STATUS_SECONDS)
            status = (trickle.sent, smtp.received, len(twilio.messages))
            if status != told:
                say(f"live: {status[0]} webhooks sent so far; the mailbox holds {status[1]} "
                    f"emails and {status[2]} SMS")
                told = status
    except Stop as why:
        say(f"\n{why}: stopping the demo ...")
        return 0
    except RuntimeError as exc:
        say(f"The demo could not start: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping is not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_trickle.set()
        if trickle_thread is not None:
            trickle_thread.join(2)
        for part in (services, inbox, shop, twilio, smtp, broker):
            if part is not None:
                try:
                    part.stop() if not isinstance(part, Broker) else part.close()
                except Exception as exc:  # stop the rest whatever one of them says
                    say(f"stopping {type(part).__name__}: {exc!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = run(args)
    say("Stopped.")
    return code


if __name__ == "__main__":
    sys.exit(main())
