"""loyalty's nameko entrypoints. Thin: each translates and calls the application `bootstrap`
built once."""
from __future__ import annotations

from datetime import datetime

from nameko.rpc import RpcProxy, rpc

from services.loyalty.accounts import Outcome
from services.loyalty.bootstrap import build
from services.loyalty.daily import run_daily
from services.loyalty.repository import LoyaltyStorage
from services.loyalty.rewards import reward_step
from shared.customers import valid_customer_id
from shared.dependencies import OutboxRelayProvider, Settings, WorkerLogContext
from shared.errors import EXPECTED_ERRORS, NotFound
from shared.messaging.batches import batch_event_handler
from shared.messaging.handlers import event_handler
from shared.mongo import MongoStorage
from shared.periodic import MINUTES, PeriodicTasks, Task
from shared.service_rpc import DataOwnerRpc
from shared.timers import ConfiguredTimer
from shared.times import parse_aware


def _time(name: str, value) -> datetime | None:
    """An optional time a caller sends: None, or aware UTC (parse_aware says why)."""
    return None if value is None else parse_aware(name, value)


# The batch entrypoint of the four order-event handlers reads these settings by name.
_ORDER_BATCHES = {"size_setting": "LOYALTY_ORDER_BATCH_SIZE",
                  "wait_setting": "LOYALTY_ORDER_BATCH_WAIT_MS"}

class LoyaltyService(DataOwnerRpc):
    name = "loyalty"

    app = MongoStorage(build)
    outbox = OutboxRelayProvider(lambda app: app.outbox_collections())
    log_context = WorkerLogContext()
    settings = Settings()
    # Expire points and credit that are due, warn of expiries, re-evaluate every tier; first
    # finish ledger copies a crash left in account journals.
    background = PeriodicTasks(
        Task("daily", lambda uses: run_daily(uses.app.accounts, uses.outbox.notify),
             setting="LOYALTY_DAILY_MINUTES", unit=MINUTES,
             at_start=lambda uses: uses.app.storage.ledger.sweep()),
        uses=("app", "outbox"))
    customer_sync = RpcProxy("customer_sync")

    @property
    def storage(self) -> LoyaltyStorage:
        """The repositories, where DataOwnerRpc looks for the database."""
        return self.app.storage

    def _customer(self, store_id: str, customer_id: str) -> str:
        return self.app.accounts.require_customer(self.app.customer_check(self.customer_sync),
                                                  store_id, customer_id)

    def _done(self, outcome: Outcome) -> dict:
        self.outbox.notify(outcome.touched)
        return outcome.answer

    # -- events in ---------------------------------------------------------------------------
    # Order and customer events need no applied-events record: each account update is a
    # compare-and-set judged by the order's own state (earned once, reversed up to a total),
    # so a duplicate, even at the same moment, finds its effect already there. Order events
    # come in batches, each applied with one read and one write of all the accounts it names.
    @batch_event_handler("customer_sync", "order.placed", claims=False, **_ORDER_BATCHES)
    def on_order_placed(self, events):
        self._done(self.app.accounts.apply_order_events(events))

    @batch_event_handler("customer_sync", "order.updated", claims=False, **_ORDER_BATCHES)
    def on_order_updated(self, events):
        self._done(self.app.accounts.apply_order_events(events))

    @batch_event_handler("customer_sync", "order.refunded", claims=False, **_ORDER_BATCHES)
    def on_order_refunded(self, events):
        self._done(self.app.accounts.apply_order_events(events))

    @batch_event_handler("customer_sync", "order.cancelled", claims=False, **_ORDER_BATCHES)
    def on_order_cancelled(self, events):
        self._done(self.app.accounts.apply_order_events(events))

    @event_handler("customer_sync", "customer.deleted", claims=False)
    def on_customer_deleted(self, event):
        try:
            self._done(self.app.accounts.apply_customer_deleted(event))
        except NotFound:
            pass  # no account: nothing to mark

    # A merge moves the merged record's account to the primary's; an unmerge hands back
    # what remains of it. Claimed (the default): merges are rare, and a duplicate waits for
    # the first delivery rather than racing it (each step is idempotent by its key anyway).
    @event_handler("customer_sync", "customer.merged")
    def on_customer_merged(self, event):
        self._done(self.app.merges.apply_merge(event))

    @event_handler("customer_sync", "customer.unmerged")
    def on_customer_unmerged(self, event):
        self._done(self.app.merges.apply_unmerge(event))

    # -- GDPR: DataOwnerRpc handles the request and the export; these say what loyalty holds --
    def erase_person(self, store_id: str, customer_ids: list[str], request_id: str,
                     email: str | None) -> dict:
        """Accounts by customer id (the email is not needed)."""
        return self.app.accounts.erase(store_id, customer_ids, request_id)

    def export_person(self, store_id: str, customer_id: str) -> dict | None:
        return self.app.accounts.export(store_id, customer_id)

    # -- the reward step ---------------------------------------------------------------------
    @ConfiguredTimer.decorator(setting="LOYALTY_REWARD_STEP_SECONDS")
    def reward_step(self) -> None:
        """Coupons to make, retry or delete at the shop, and rewards past their expiry. A timer
        entrypoint (not a managed thread) so its worker has the customer_sync proxy."""
        self._run_reward_step()

    def _run_reward_step(self) -> dict:
        return reward_step(self.app.rewards(self.customer_sync),
                           self.app.storage.coupon_withdrawals, self.outbox.notify)

    # -- RPC ---------------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_account(self, store_id: str, customer_id: str) -> dict:
        """Balance (negative after a reversal outran a redemption), its cash value, tier,
        member since, next expiry, store credit (unused credit coupons), rewards pending."""
        return self.app.accounts.account_view(store_id, valid_customer_id(customer_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def history(self, store_id: str, customer_id: str, page: dict | None = None) -> dict:
        """Ledger entries newest first: page = {"size": 50, "cursor": null}."""
        return self.app.accounts.history(store_id, valid_customer_id(customer_id), page)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def adjust(self, store_id: str, customer_id: str, points: int, reason: str, actor: str,
               request_id: str | None = None) -> dict:
        """A manual adjustment with its reason and who made it; `request_id` makes a retry safe."""
        customer_id = self._customer(store_id, customer_id)
        return self._done(self.app.accounts.adjust(store_id, customer_id, points, reason, actor,
                                                  request_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def redeem(self, store_id: str, customer_id: str, points: int, request_id: str | None = None,
               actor: str | None = None) -> dict:
        """Points for a single-use coupon worth their cash value (100 points = 1.00 by
        default); never beyond the balance, however many redemptions run at once.
        `request_id` makes a retry safe. The reward is `issued` with its code, or `pending`
        while the shop is away (retried)."""
        customer_id = self._customer(store_id, customer_id)
        return self._done(self.app.rewards(self.customer_sync).redeem(store_id, customer_id, points, request_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def quote_redemption(self, store_id: str, customer_id: str, points: int) -> dict:
        """What a redemption would give and whether it is allowed now; changes nothing."""
        return self.app.accounts.quote_redemption(store_id, valid_customer_id(customer_id), points)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_rewards(self, store_id: str, customer_id: str) -> dict:
        """The customer's rewards (coupons), newest first."""
        return self.app.accounts.list_rewards(store_id, valid_customer_id(customer_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def cancel_reward(self, store_id: str, customer_id: str, reward_id: str, actor: str) -> dict:
        """Withdraw an unused reward: its coupon is deleted at the shop, then its points come
        back (a coupon the shop says was used stays spent). Only a reward held here can be
        cancelled, so no customer_sync check: an unknown customer is NotFound."""
        customer_id = valid_customer_id(customer_id)
        return self._done(self.app.rewards(self.customer_sync).cancel(store_id, customer_id, reward_id, actor))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def issue_credit(self, store_id: str, customer_id: str, amount: int, reason: str,
                     note: str = "", actor: str | None = None, expires_at: str | None = None,
                     request_id: str | None = None) -> dict:
        """Store credit in minor units (reason goodwill or refund_alternative) as a single-use
        coupon; it expires after the programme's `credit_expiry_days` unless `expires_at`."""
        customer_id = self._customer(store_id, customer_id)
        return self._done(self.app.rewards(self.customer_sync).issue_credit(
            store_id, customer_id, amount, reason, note, actor, _time("expires_at", expires_at),
            request_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def run_reward_step(self) -> dict:
        """Run the reward step now (operators; tests)."""
        return self._run_reward_step()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def ledger_check(self, store_id: str, customer_id: str) -> dict:
        """Whether the customer's ledger sums to their balance and no reward's points were
        both spent and returned (operators; tests)."""
        return self.app.accounts.ledger_check(store_id, customer_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_programme(self, store_id: str) -> dict:
        return self.app.accounts.programme(store_id).to_dict()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def save_programme(self, store_id: str, programme: dict) -> dict:
        """Validated (tiers must not overlap or leave gaps, rates positive), refused with the
        failing field named; absent keys take the defaults."""
        return self.app.accounts.save_programme(store_id, programme).to_dict()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def run_daily(self) -> dict:
        """Run the daily expiry and tier check now (operators; tests)."""
        return self.background.run_now("daily")
