"""loyalty put together: its repositories, use cases and settings made once, from its database,
its config and a clock, so entrypoints and background tasks share one of each and a test runs
the whole service on a clock it moves."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from pymongo.collection import Collection
from pymongo.database import Database

from services.loyalty.accounts import Accounts
from services.loyalty.merges import Merges
from services.loyalty.repository import LoyaltyStorage
from services.loyalty.rewards import RetryPolicy, Rewards
from services.loyalty.shop_coupons import CouponsOverRpc
from shared.config import Config
from shared.customers import CustomerCheck, customer_sync_over_rpc
from shared.times import utcnow


@dataclass(frozen=True)
class Loyalty:
    """What loyalty's workers and tasks see. customer_sync is reached through the calling
    worker's RPC proxy, which belongs to that worker, so ports over it are made per call."""

    storage: LoyaltyStorage
    accounts: Accounts
    merges: Merges
    retry: RetryPolicy
    customer_check_seconds: float

    def ensure_indexes(self) -> None:
        self.storage.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return self.storage.outbox_collections()

    def clock(self) -> datetime:
        return self.accounts.clock()

    def rewards(self, customer_sync) -> Rewards:
        """The reward use cases, asking the shop through this worker's customer_sync."""
        return Rewards(self.accounts, CouponsOverRpc(customer_sync, self.retry.retry_seconds),
                       self.retry)

    def customer_check(self, customer_sync) -> CustomerCheck:
        return CustomerCheck(customer_sync_over_rpc(customer_sync, self.customer_check_seconds))


def build(database: Database, config: Config,
          clock: Callable[[], datetime] = utcnow) -> Loyalty:
    """loyalty from its own database and settings; `clock` dates expiries and retries."""
    storage = LoyaltyStorage(database)
    accounts = Accounts(storage, clock=clock)
    return Loyalty(
        storage=storage, accounts=accounts, merges=Merges(accounts),
        retry=RetryPolicy(config.float("LOYALTY_REWARD_RETRY_SECONDS"),
                          config.float("LOYALTY_REWARD_RETRY_MAX_SECONDS")),
        customer_check_seconds=config.float("CUSTOMER_CHECK_TIMEOUT_SECONDS"))
