"""The shop stays alive while the demo runs: a gentle, seeded stream of sign-ups, orders and
shipped orders, each made in the simulated shop at the wall clock's time and sent as its signed
webhook. It opens with two moments worth watching: a new customer's first order (the first-order
SMS) and an opted-in customer's fifth (the "regular" tag and its thank-you email)."""
from __future__ import annotations

import random
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from demo.seed import OPT_IN_KEY, REGULAR_ORDERS
from demo.traffic import Delivery, WooTraffic

NOT_COUNTED = frozenset({"cancelled", "failed", "trash", "checkout-draft"})


def wall_clock() -> datetime:
    """Now, as the shop keeps times (UTC without an offset)."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class LiveTrickle:
    """Drives `traffic` (whose shop already holds the history) live; see the module doc."""

    def __init__(self, traffic: WooTraffic, seed: int, pause: tuple[float, float] = (2.0, 6.0),
                 say: Callable[[str], None] = print) -> None:
        self.traffic = traffic
        self.shop = traffic.shop
        self.rng = random.Random(seed * 97 + 3)
        self.pause = pause
        self.say = say
        self.live_orders: list[int] = []  # placed while the demo runs, to ship later
        self.sent = 0
        self.refused = 0

    def _send(self, delivery: Delivery) -> None:
        status = self.traffic.send_once(delivery)
        self.sent += 1
        if status >= 300:
            self.refused += 1

    def _phone(self) -> str:
        return f"+49 151 {self.rng.randrange(1000000, 9999999)}"

    def newcomer(self, opted_in: bool) -> int:
        """Someone signs up and orders at once; answers their WooCommerce id."""
        signed_up = self.traffic.sign_up_now(consent=opted_in, at=wall_clock(),
                                             billing={"phone": self._phone()})
        self._send(signed_up)
        woo_id = signed_up.resource_id
        meta = [{"id": 800_000_000 + woo_id, "key": OPT_IN_KEY, "value": "yes"}] if opted_in else []
        self._place(woo_id, meta_data=meta)
        return woo_id

    def _place(self, woo_id: int, **overrides: Any) -> None:
        delivery = self.traffic.place_now(woo_id, at=wall_clock(), status="processing",
                                          **overrides)
        self.live_orders.append(delivery.resource_id)
        self._send(delivery)

    def counted_orders(self, woo_id: int) -> tuple[int, int]:
        """(orders counted by segmentation, orders in any status) of a registered customer."""
        mine = [o for o in self.shop.orders.values() if o["customer_id"] == woo_id]
        return sum(o["status"] not in NOT_COUNTED for o in mine), len(mine)

    def almost_regular(self) -> int | None:
        """An opted-in customer closest to the "regular" threshold who never reached it."""
        best = None
        for woo_id in sorted(self.traffic.consenting):
            counted, placed = self.counted_orders(woo_id)
            if placed < REGULAR_ORDERS and counted >= 1 and (best is None or counted > best[0]):
                best = (counted, woo_id)
        return None if best is None else best[1]

    def opening(self) -> None:
        """A first-order SMS and a regular's thank-you email within the first minute."""
        woo_id = self.newcomer(opted_in=True)
        self.say(f"live: customer {woo_id} signed up and placed a first order (an SMS follows)")
        regular = self.almost_regular()
        if regular is None:  # a tiny shop: the newcomer becomes the regular
            regular = woo_id
        counted, _ = self.counted_orders(regular)
        for _ in range(REGULAR_ORDERS - counted):
            self._place(regular)
        self.say(f"live: customer {regular} placed order number {REGULAR_ORDERS} "
                 "(tagged regular: a thank-you email follows)")

    def step(self) -> None:
        """One believable change at the shop, sent as its webhook."""
        roll = self.rng.random()
        processing = [order_id for order_id in self.live_orders
                      if self.shop.orders[order_id]["status"] == "processing"]
        if roll < 0.3 and processing:
            order_id = self.rng.choice(processing)
            self._send(self.traffic.change_status_now(order_id, "completed", at=wall_clock()))
        elif roll < 0.4:
            self.newcomer(opted_in=self.rng.random() < 0.5)
        else:
            registered = sorted(self.shop.customers)
            woo_id = registered[int(len(registered) * self.rng.random() ** 1.5)]
            self._place(woo_id)

    def run(self, stop: threading.Event) -> None:
        """The opening, then a step every few seconds until `stop` is set."""
        try:
            self.opening()
            while not stop.wait(self.rng.uniform(*self.pause)):
                self.step()
        except Exception as exc:  # the demo goes on; the reader is told
            self.say(f"live traffic stopped: {exc!r}")
