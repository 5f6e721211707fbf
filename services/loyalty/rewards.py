"""The reward step: a reward's coupon made or deleted at the shop, as a step of its own.

A redemption or store credit is recorded first (points leave the balance, the reward is
`pending` with its code fixed); then this step asks the shop, through the `shop_coupons` port
(customer_sync, which holds the shop's credentials), to make the coupon. The port looks the code
up before it creates, so a retry or a killed worker never makes two. A shop that is down leaves
the reward pending, retried with a doubling wait; a shop that refuses for good gives the points
back. Cancelling or expiring a reward deletes its coupon the same way, and only the shop's
answer that the coupon is gone unused gives points back.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Protocol

from services.loyalty import ledger as lg
from services.loyalty.accounts import Accounts, Outcome, merge_outcomes
from services.loyalty.ledger import coupon_meta
from shared.coupon_withdrawals import CouponWithdrawals, WithdrawalPolicy
from shared.coupons import CouponSpec
from shared.errors import NotFound, Refused, ValidationError

log = logging.getLogger(__name__)

# What customer_sync answers when the shop will never accept the coupon (its form, the store,
# or the shop itself refusing); anything else may pass, and is tried again later.
PERMANENT_FAILURES = (Refused, ValidationError, NotFound)


class ShopCoupons(Protocol):
    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None
                      ) -> dict: ...

    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between tries of a shop step: doubling from `retry_seconds` up to
    `retry_max_seconds`; an attempt is its worker's for `retry_seconds`."""

    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0


def coupon_spec(customer_id: str, reward: dict, individual_use: bool) -> CouponSpec:
    """The single-use coupon a reward is: fixed_cart of its amount, one use, expiring with the
    reward (customer_sync restricts it to the customer's current email)."""
    if reward["kind"] == lg.POINTS:
        description = f"Loyalty reward: {reward['points']} points"
    else:
        description = f"Store credit ({reward['reason']})"
    return CouponSpec(code=reward["code"], discount_type="fixed_cart", amount=reward["amount"],
                      currency=reward["currency"], expires_at=reward["expires_at"],
                      individual_use=individual_use, usage_limit=1, description=description,
                      meta=coupon_meta(customer_id, reward))


class Rewards:
    """Requests that make a reward, tried at once at the shop, and the periodic step that
    retries, expires and deletes."""

    def __init__(self, accounts: Accounts, shop_coupons: ShopCoupons,
                 policy: RetryPolicy = RetryPolicy()) -> None:
        self.accounts = accounts
        self.shop = shop_coupons
        self.policy = policy

    # -- requests ------------------------------------------------------------------------------
    def redeem(self, store_id: str, customer_id: str, points: int, request_id: str | None = None,
               actor: str | None = None) -> Outcome:
        """Points off the balance now; the coupon tried at once, so the answer is usually
        `issued` with its code (`pending` while the shop is down, which is no error)."""
        outcome = self.accounts.redeem(store_id, customer_id, points, request_id, actor)
        return self._try_now(store_id, customer_id, outcome)

    def issue_credit(self, store_id: str, customer_id: str, amount: int, reason: str,
                     note: str = "", actor: str | None = None, expires_at: datetime | None = None,
                     request_id: str | None = None) -> Outcome:
        outcome = self.accounts.issue_credit(store_id, customer_id, amount, reason, note, actor,
                                             expires_at, request_id)
        return self._try_now(store_id, customer_id, outcome)

    def cancel(self, store_id: str, customer_id: str, reward_id: str, actor: str) -> Outcome:
        """Cancelled now, its coupon deleted at once if the shop answers (else by the step)."""
        outcome = self.accounts.cancel_reward(store_id, customer_id, reward_id, actor)
        outcome = merge_outcomes(outcome, self.attempt(store_id, customer_id, reward_id))
        outcome.answer = self.accounts.reward_view(store_id, customer_id, reward_id)
        return outcome

    def _try_now(self, store_id: str, customer_id: str, outcome: Outcome) -> Outcome:
        reward = outcome.answer.get("reward")
        if reward is None or reward["state"] != lg.PENDING:
            return outcome
        answer = outcome.answer
        outcome = merge_outcomes(outcome, self.attempt(store_id, customer_id, reward["reward_id"]))
        outcome.answer = {**answer, "reward": self.accounts.reward_view(
            store_id, customer_id, reward["reward_id"])}
        return outcome

    # -- the step ------------------------------------------------------------------------------
    def run_due(self, limit: int = 100) -> tuple[dict, Outcome]:
        """Every reward whose step is due (accounts longest waiting first): counts, and what
        was touched (for the outbox)."""
        now = self.accounts.clock()
        counts = {"accounts": 0, "attempts": 0}
        done = Outcome()
        for store_id, customer_id in self.accounts.storage.accounts.rewards_due(now, limit):
            counts["accounts"] += 1
            doc = self.accounts.storage.accounts.get(store_id, customer_id) or {}
            for reward in list((doc.get("rewards") or {}).values()):
                due = lg.reward_due_at(reward)
                if due is None or due > now:
                    continue
                counts["attempts"] += 1
                try:
                    done = merge_outcomes(done, self.attempt(store_id, customer_id,
                                                             reward["reward_id"]))
                except Exception:
                    log.exception("a reward step failed; its next attempt retries",
                                  extra={"store_id": store_id})
        return counts, done

    def attempt(self, store_id: str, customer_id: str, reward_id: str) -> Outcome:
        """Claim the reward's due step (recorded before the shop is asked, so a crash is
        retried after the wait), ask the shop, record its answer."""
        claimed: dict = {}
        policy = self.policy

        def claim(account: lg.Account) -> bool:
            claimed["reward"] = account.claim_step(reward_id, policy.retry_seconds,
                                                   policy.retry_max_seconds, policy.retry_seconds)
            claimed["individual_use"] = account.programme.reward_individual_use
            return claimed["reward"] is not None

        outcome = self.accounts.change(store_id, customer_id, claim, create=False)
        reward = claimed.get("reward")
        if reward is None:
            return outcome
        if reward["state"] == lg.PENDING:
            record = self._make(store_id, customer_id, reward, claimed["individual_use"])
        else:
            record = self._delete(store_id, customer_id, reward)
        return merge_outcomes(outcome, self.accounts.change(store_id, customer_id, record,
                                                            create=False))

    def _make(self, store_id: str, customer_id: str, reward: dict, individual_use: bool):
        reward_id = reward["reward_id"]
        try:
            wire = coupon_spec(customer_id, reward, individual_use).to_wire()
            answer = self.shop.ensure_coupon(store_id, wire, customer_id)
        except (ValueError, *PERMANENT_FAILURES) as exc:
            error = _describe(exc)
            log.warning("the shop refused a reward's coupon; its points go back",
                        extra={"store_id": store_id, "reason": error})
            return lambda account: account.step_failed(reward_id, error, permanent=True)
        except Exception as exc:  # the shop or customer_sync is away: the next attempt retries
            error = _describe(exc)
            return lambda account: account.step_failed(reward_id, error, permanent=False)
        return lambda account: account.coupon_made(reward_id, answer)

    def _delete(self, store_id: str, customer_id: str, reward: dict):
        reward_id = reward["reward_id"]
        try:
            answer = self.shop.delete_coupon(store_id, reward["code"],
                                             coupon_meta(customer_id, reward))
        except Exception as exc:  # points go back only once the shop said the coupon is gone
            error = _describe(exc)
            return lambda account: account.step_failed(reward_id, error, permanent=False)
        return lambda account: account.coupon_deleted(reward_id, answer)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def reward_step(rewards: Rewards, withdrawals: CouponWithdrawals,
                notify: Callable[[Iterable[tuple[str, str]]], None]) -> dict:
    """The periodic step: rewards due at the shop (their documents told to `notify` as soon as
    done), then the coupon withdrawals owed for erased customers, through the same shop port
    and retry policy."""
    counts, outcome = rewards.run_due()
    notify(outcome.touched)
    counts["withdrawals"] = withdrawals.run_due(
        rewards.shop.delete_coupon, rewards.accounts.clock(),
        WithdrawalPolicy(rewards.policy.retry_seconds, rewards.policy.retry_max_seconds))
    return counts
