"""loyalty's use cases: order events in, requests from people and systems, the daily run.

Each use case reads one account, changes a working copy through `ledger.Account`, and writes it
back with a compare-and-set on the account's version, together with the ledger entries and the
events the change owes. Two changes at once (fifty redemptions against one balance) cannot
both win: the loser reads the account again and is judged against the new balance.
"""
from __future__ import annotations

import copy
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from services.loyalty import ledger as lg
from services.loyalty.programme import DEFAULT_PROGRAMME, Programme, load_programme
from services.loyalty.repository import (DELETED, ERASED, MERGED, AccountWrite,
                                           LoyaltyStorage)
from shared.coupons import new_coupon_code
from shared.customers import CustomerCheck
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import Event, build_event
from shared.events.facts import fact_time
from shared.times import iso, utcnow
from shared.paging import page_size
from shared.read_cache import ReadCache
from shared.conflicts import attempts

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("a3f1e0c2-6b1d-4e8a-9a7c-5d2b8e4f1c37")
# An account is written by every order, redemption, expiry and staff change of its customer,
# and a loser here backs off before it reads again, so it is given longer than the default.
_LOYALTY_RETRIES = 200
_PROGRAMME_SECONDS = 5.0  # how long a process trusts its copy of a store's programme
# How many merges an order event follows from the record it names to the one now holding it.
_MAX_MERGE_HOPS = 8
# Programmes by (storage, store): read once per few seconds, not once per event.
_programmes = ReadCache(_PROGRAMME_SECONDS)


@dataclass
class Outcome:
    """What a use case did: the entries it made, the events it owes, the documents that
    owe them (for the outbox relay), and its answer for the caller."""

    entries: list[dict] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    touched: list[tuple[str, str]] = field(default_factory=list)
    answer: dict = field(default_factory=dict)


def snapshot(event: Event) -> lg.OrderSnapshot:
    data = event.data
    return lg.OrderSnapshot(
        order_id=data["order_id"], status=data["status"], currency=data["currency"],
        total=data["total"]["amount"], shipping=data["shipping_total"]["amount"],
        tax=data["tax_total"]["amount"], refunded=data["total_refunded"]["amount"],
        created_at=data.get("date_created"), paid_at=data.get("date_paid"),
        is_guest=bool(data.get("is_guest")), as_of=event.occurred_at)


class Accounts:
    def __init__(self, storage: LoyaltyStorage, clock: Callable[[], datetime] = utcnow,
                 choose: Callable[[str], str] = secrets.choice) -> None:
        self.storage = storage
        self.clock = clock
        self.choose = choose  # draws coupon code characters: a CSPRNG, seeded in tests

    # -- the programme -------------------------------------------------------------------------
    def programme(self, store_id: str) -> Programme:
        def load() -> Programme:
            stored = self.storage.programmes.get(store_id)
            return load_programme(stored) if stored else DEFAULT_PROGRAMME
        return _programmes.get(self.storage, store_id, load)

    def save_programme(self, store_id: str, data: dict) -> Programme:
        """Validate and store; the stored form is the full programme, defaults filled in."""
        programme = load_programme(data)
        stored = programme.to_dict()
        self.storage.programmes.save(store_id, stored)
        _programmes.forget(self.storage, store_id)
        return programme

    # -- events in -----------------------------------------------------------------------------
    def apply_order_event(self, event: Event) -> Outcome:
        """The order earns (or gives back) its customer's points, and spends (or gives back)
        any reward whose code it carries, whoever's account holds that reward."""
        customer_id = event.data.get("customer_id")
        outcome = Outcome()
        if customer_id:  # an order nobody can be identified by earns nothing
            outcome = self._apply_order(event.store_id, customer_id, snapshot(event), event)
        codes = _coupon_codes(event)
        if codes:
            for holder in self.storage.accounts.holding_codes(event.store_id, codes):
                outcome = merge_outcomes(outcome, self.change(
                    event.store_id, holder, _coupon_use(event, codes), cause=event,
                    create=False))
        return outcome

    def apply_order_events(self, events: Sequence[Event]) -> Outcome:
        """Order events with the effects `apply_order_event` gives them one after another, in
        delivery order, in a few round trips: the accounts they name and the holders of the
        codes they carry are read at once, the events applied in memory, and every account
        written at once with a compare-and-set. The events that looked at an account somebody
        changed meanwhile are applied again, one at a time, the one-event way."""
        events = list(events)
        batch = _Batch(self, events)
        examined: dict[str, list[int]] = {}  # account key -> the events that looked at it
        for position, event in enumerate(events):
            for key in self._apply_in_batch(batch, event):
                examined.setdefault(key, []).append(position)
        # A merged account the batch only passed through is never written, so no
        # compare-and-set guards it: one changed since it was read (an unmerge) withholds
        # every account its events looked at, and those events go the one-event way.
        withheld = self._moved_hops(batch, examined)
        changes = [held.write for held in batch.held.values()
                   if held.write.writes and held.key not in withheld]
        conflicted = self.storage.accounts.save_many(changes) | withheld
        written = [change for change in changes if change.working["_id"] not in conflicted]
        entries = [entry for change in written for entry in change.entries]
        self.storage.ledger.flush_many(entries)
        collection = self.storage.accounts.collection.name
        outcome = Outcome(entries, [e.event_type for change in written for e in change.events],
                          [(collection, change.working["_id"]) for change in written
                           if change.events])
        again = sorted({position for key in conflicted for position in examined.get(key, [])})
        if again:
            log.info("%d of %d order events met accounts changed meanwhile; applying them "
                     "one at a time", len(again), len(events))
        for position in again:
            outcome = merge_outcomes(outcome, self.apply_order_event(events[position]))
        return outcome

    def _moved_hops(self, batch: "_Batch", examined: dict[str, list[int]]) -> set[str]:
        """The keys of the merged accounts the batch followed that changed since it read
        them, and of every account the events that followed them looked at."""
        hops = {held.key: held.write.version for held in batch.held.values()
                if held.exists and held.key in examined
                and held.write.working.get("status") == MERGED}
        if not hops:
            return set()
        current = self.storage.accounts.versions(hops)
        moved = {key for key, version in hops.items() if current.get(key) != version}
        positions = {position for key in moved for position in examined[key]}
        return moved | {key for key, seen in examined.items() if positions.intersection(seen)}

    def _apply_in_batch(self, batch: "_Batch", event: Event) -> list[str]:
        """`apply_order_event` on the batch's working copies; answers the keys of the accounts
        it looked at."""
        looked: list[str] = []
        store_id, customer_id = event.store_id, event.data.get("customer_id")
        if customer_id:
            order = snapshot(event)
            for _ in range(_MAX_MERGE_HOPS):
                held = batch.account(store_id, customer_id)
                looked.append(held.key)
                doc = held.write.working
                if doc.get("status") == ERASED:
                    break
                if doc.get("status") == MERGED:
                    customer_id = (doc.get("merged_into") or {}).get("customer_id")
                    if not customer_id:
                        break
                    continue
                self._change_held(batch, held, lambda account: account.apply_order(order), event)
                break
            else:
                log.warning("order %s: its customer's merges go more than %d deep; not applied",
                            order.order_id, _MAX_MERGE_HOPS)
        codes = _coupon_codes(event)
        for holder in batch.holders(store_id, codes):
            held = batch.account(store_id, holder)
            looked.append(held.key)
            if held.exists and held.write.working.get("status") != ERASED:
                self._change_held(batch, held, _coupon_use(event, codes), event)
        return looked

    def _change_held(self, batch: "_Batch", held: "_Held", change: Callable[[lg.Account], bool],
                     cause: Event) -> None:
        """`change`'s one attempt on a batch's working copy: what it would write is gathered
        onto the account's write; what it would not write is forgotten, as a re-read would."""
        working = copy.deepcopy(held.write.working)
        account = lg.Account(working, batch.programme(working["store_id"]), self.clock())
        if not change(account) and not account.entries and held.exists:
            return
        entries = self._number(working, account.entries)
        events = self._events(working, account, cause)
        working["updated_at"] = self.clock()
        write = held.write
        write.working = working
        write.writes += 1
        write.entries.extend(entries)
        write.events.extend(events)
        write.touched_orders |= account.touched_orders
        write.new_request_keys.extend(account.new_request_keys)
        write.touched_rewards |= account.touched_rewards
        write.touched_transfers |= account.touched_transfers

    def _apply_order(self, store_id: str, customer_id: str, order: lg.OrderSnapshot,
                     event: Event) -> Outcome:
        """An order earns on its customer's account; one naming a record merged into another
        (late, or delivered again) earns on the account it was merged into, which holds the
        merged orders' states, so nothing earns twice and a closed account earns nothing."""
        for _ in range(_MAX_MERGE_HOPS):
            def apply(account: lg.Account) -> bool:
                if account.doc.get("status") == MERGED:
                    raise _MergedAway((account.doc.get("merged_into") or {}).get("customer_id"))
                return account.apply_order(order)

            try:
                return self.change(store_id, customer_id, apply, cause=event)
            except _MergedAway as moved:
                if not moved.into:
                    return Outcome()
                customer_id = moved.into
        log.warning("order %s: its customer's merges go more than %d deep; not applied",
                    order.order_id, _MAX_MERGE_HOPS)
        return Outcome()

    def apply_customer_deleted(self, event: Event) -> Outcome:
        """The shop deleted the customer: the account is kept (points and credit are the
        shop's liability until it decides) and marked, and earns nothing new."""
        def change(account: lg.Account) -> bool:
            if account.doc.get("status") != "active":
                return False
            account.doc["status"], account.doc["deleted_at"] = DELETED, event.occurred_at
            return True

        return self.change(event.store_id, event.data["customer_id"], change, cause=event,
                            create=False)

    # -- requests ------------------------------------------------------------------------------
    def redeem(self, store_id: str, customer_id: str, points: int, request_id: str | None = None,
               actor: str | None = None) -> Outcome:
        """Points leave the balance and a pending reward names the coupon to make (the reward
        step, `Rewards`, makes it)."""
        points = _whole("points", points, positive=True)
        key = f"redeem:{_request_id(request_id)}"
        reward_id, code = self._new_reward_names(store_id, customer_id, key)

        def change(account: lg.Account) -> bool:
            account.redeem(key, points, actor, reward_id, code)
            return True

        return self._request(store_id, customer_id, key, change)

    def quote_redemption(self, store_id: str, customer_id: str, points: int) -> dict:
        """What redeeming would give, and whether it is allowed now; changes nothing."""
        points = _whole("points", points, positive=True)
        account = self._read(store_id, customer_id)
        reason, amount = None, None
        try:
            amount = account.redemption_value(points)
        except (lg.InvalidRequest, lg.InsufficientBalance) as exc:
            reason = str(exc)
        currency = account.currency
        if amount is None and currency is not None:
            amount = account.programme.credit_for(points, currency)
        expires = self.clock() + timedelta(days=account.programme.reward_expiry_days)
        return {"points": points, "amount": {"amount": amount, "currency": currency},
                "balance": account.balance, "allowed": reason is None, "reason": reason,
                "expires_at": iso(expires)}

    def _new_reward_names(self, store_id: str, customer_id: str, key: str) -> tuple[str, str]:
        """A reward's id (from its request) and its coupon code (random, unguessable), fixed
        before the request is recorded; a repeated request keeps the first ones."""
        reward_id = str(uuid.uuid5(_NAMESPACE, f"{store_id}:{customer_id}:reward:{key}"))
        return reward_id, new_coupon_code(self.programme(store_id).coupon_prefix, self.choose)

    def adjust(self, store_id: str, customer_id: str, points: int, reason: str, actor: str,
               request_id: str | None = None) -> Outcome:
        points = _whole("points", points)
        if points == 0:
            raise ValidationError("points must not be 0", {"fields": {"points": ["zero"]}})
        _text("reason", reason)
        _text("actor", actor)
        key = f"adjust:{request_id or uuid.uuid4().hex}"
        return self._request(store_id, customer_id, key,
                             lambda account: bool(account.adjust(key, points, reason, actor)))

    def issue_credit(self, store_id: str, customer_id: str, amount: int, reason: str,
                     note: str = "", actor: str | None = None, expires_at: datetime | None = None,
                     request_id: str | None = None) -> Outcome:
        """Store credit from staff becomes a pending credit reward: a coupon of `amount` minor
        units the reward step makes. What the shop's orders spend of it is what was spent."""
        amount = _whole("amount", amount, positive=True)
        if not isinstance(note, str) or len(note) > 2000:
            raise ValidationError("note must be text of at most 2000 characters",
                                  {"fields": {"note": ["invalid"]}})
        if reason not in lg.CREDIT_REASONS:
            raise ValidationError(f"reason must be one of {', '.join(lg.CREDIT_REASONS)}",
                                  {"fields": {"reason": ["invalid"]}})
        key = f"credit:{_request_id(request_id)}"
        reward_id, code = self._new_reward_names(store_id, customer_id, key)
        return self._request(store_id, customer_id, key, lambda account: bool(
            account.issue_credit(key, amount, reason, note, actor, expires_at, reward_id, code)))

    def cancel_reward(self, store_id: str, customer_id: str, reward_id: str, actor: str
                      ) -> Outcome:
        """An operator withdraws an unused reward: its coupon is deleted by the reward step,
        then its points come back."""
        _text("actor", actor)
        if not isinstance(reward_id, str) or not 0 < len(reward_id) <= 64:
            raise ValidationError("reward_id must be a reward's id",
                                  {"fields": {"reward_id": ["invalid"]}})

        def change(account: lg.Account) -> bool:
            try:
                account.cancel_reward(reward_id, actor)
            except lg.UnknownReward:
                raise NotFound(f"no reward {reward_id} for customer {customer_id}") from None
            except lg.RewardStateConflict as exc:
                raise Conflict(str(exc)) from None
            return True

        outcome = self.change(store_id, customer_id, change, create=False)
        outcome.answer = self.reward_view(store_id, customer_id, reward_id)
        return outcome

    def reward_view(self, store_id: str, customer_id: str, reward_id: str) -> dict:
        account = self._read(store_id, customer_id)
        try:
            return _reward_public(account.reward(reward_id))
        except lg.UnknownReward:
            raise NotFound(f"no reward {reward_id} for customer {customer_id}") from None

    def list_rewards(self, store_id: str, customer_id: str) -> dict:
        """Every reward of the account, newest first."""
        account = self._read(store_id, customer_id)
        rewards = sorted(account.doc["rewards"].values(),
                         key=lambda r: (r["created_at"], r["reward_id"]), reverse=True)
        return {"items": [_reward_public(r) for r in rewards]}

    def _read(self, store_id: str, customer_id: str) -> lg.Account:
        doc = self.storage.accounts.get(store_id, customer_id)
        if doc is None or doc.get("status") == ERASED:
            raise NotFound(f"no loyalty account for customer {customer_id} in store {store_id}")
        return lg.Account(doc, self.programme(store_id), self.clock())

    def ledger_check(self, store_id: str, customer_id: str) -> dict:
        """The customer's ledger against their account (see `ledger.ledger_check`)."""
        doc = self.storage.accounts.get(store_id, customer_id)
        if doc is None:
            raise NotFound(f"no loyalty account for customer {customer_id} in store {store_id}")
        entries = self.storage.ledger.history(store_id, customer_id, None, 10 ** 9)
        return lg.ledger_check(entries, doc)

    def _request(self, store_id: str, customer_id: str, key: str,
                 change: Callable[[lg.Account], bool], create: bool = True) -> Outcome:
        """A request with an idempotency key: asked twice, applied once, answered the same."""
        def guarded(account: lg.Account) -> bool:
            if account.has_request(key):
                return False
            if account.doc.get("status") != "active":
                raise Conflict(f"the account of customer {customer_id} is {account.doc.get('status')}")
            try:
                return change(account)
            except lg.InsufficientBalance as exc:
                raise Conflict(f"insufficient balance: {exc}") from None
            except lg.InvalidRequest as exc:
                raise ValidationError(str(exc), {"fields": {"request": [str(exc)]}}) from None

        outcome = self.change(store_id, customer_id, guarded, create=create)
        outcome.answer = {"request_key": key, "entries": [
            _public(e) for e in self.storage.ledger.history(store_id, customer_id, None, 50)
            if e["key"] == key or e["key"] == f"{key}:credit"]}
        doc = self.storage.accounts.get(store_id, customer_id) or {}
        reward = next((r for r in (doc.get("rewards") or {}).values()
                       if r["request_key"] == key), None)
        if reward is not None:
            outcome.answer["reward"] = _reward_public(reward)
        return outcome

    # -- timers --------------------------------------------------------------------------------
    def daily(self, store_id: str, customer_id: str) -> Outcome:
        """Expire what is due (oldest first), turn credit held from before coupons into credit
        coupons, warn of points expiring soon, and re-evaluate the tier (points leave the
        window with time)."""
        def name(credit_id: str) -> tuple[str, str]:
            return self._new_reward_names(store_id, customer_id, f"legacy:{credit_id}")

        def change(account: lg.Account) -> bool:
            expired = account.expire_due()
            converted = account.convert_legacy_credit(name)
            warned = account.warn_expiring()
            account.evaluate_tier()
            return bool(expired or converted or warned or account.entries or account.tier_change)

        return self.change(store_id, customer_id, change, create=False)

    def active_accounts(self) -> list[tuple[str, str]]:
        """Every active account: each may have points to expire, and any tier can fall as
        points leave the window, so the daily run looks at all of them."""
        return self.storage.accounts.active_keys()

    def require_customer(self, check: CustomerCheck, store_id: str, customer_id: object) -> str:
        """Points and credit move only for a customer of the store (404 otherwise, no
        account made): an account held here says so, customer_sync answers for the rest."""
        def held_here(candidate: str) -> bool:
            account = self.storage.accounts.get(store_id, candidate)
            return account is not None and account.get("status") != ERASED

        return check.require(store_id, customer_id, held_here)

    # -- GDPR ----------------------------------------------------------------------------------
    def erase(self, store_id: str, customer_ids, request_id: str) -> dict:
        """Each account becomes a marker holding nothing about the person (no lots, orders,
        credit, owed events); their ledger entries stay for the shop's accounts, anonymised
        (reasons and details blanked), their merge notes keep ids and state only; their unused
        rewards' coupons are owed a withdrawal from the shop (shared.coupon_withdrawals).
        Idempotent; counts are of what the request left erased."""
        accounts = self.storage.accounts
        ids = sorted(set(customer_ids))
        now = self.clock()
        for customer_id in ids:
            held = accounts.stored(store_id, customer_id)
            if held is not None and held.get("status") == ERASED:
                continue
            # Owed before the account forgets them: their coupons carry the person's email.
            for reward, meta, lease in lg.coupons_to_withdraw(held or {}):
                self.storage.coupon_withdrawals.add(store_id, reward["code"], meta,
                                                    max(now, lease) if lease else now, now)
            accounts.mark_erased(store_id, customer_id, held, self.clock(), request_id)
        ledger_entries = self.storage.ledger.anonymise(store_id, ids)
        self.storage.merges.forget(store_id, ids)  # the points and rewards a merge moved
        return {
            "accounts": accounts.count_erased(store_id, ids),
            "ledger_entries": ledger_entries,
            "coupons_to_withdraw": self.storage.coupons_owed_for(store_id, ids),
        }

    # -- reading -------------------------------------------------------------------------------
    def account_view(self, store_id: str, customer_id: str) -> dict:
        doc = self.storage.accounts.get(store_id, customer_id)
        if doc is None or doc.get("status") == ERASED:
            raise NotFound(f"no loyalty account for customer {customer_id} in store {store_id}")
        programme = self.programme(store_id)
        account = lg.Account(doc, programme, self.clock())
        currency = account.currency
        balance = account.balance
        cash = programme.credit_for(max(0, balance) - max(0, balance) % programme.redeem_step(
            currency), currency) if currency else None
        expiry = account.next_expiry()
        return {
            "store_id": store_id, "customer_id": customer_id, "status": doc.get("status"),
            "balance": balance, "negative_balance": balance < 0, "debt": doc.get("debt", 0),
            "cash_value": {"amount": cash, "currency": currency} if currency else None,
            "tier": account.current_tier().name, "points_in_window": account.points_in_window(),
            "member_since": iso(doc.get("member_since")),
            "next_expiry": ({"at": iso(expiry["at"]), "points": expiry["points"]}
                            if expiry else None),
            "store_credit": {"amount": account.rewards_credit, "currency": currency},
            "rewards_pending": sum(1 for r in doc.get("rewards", {}).values()
                                   if r["state"] == lg.PENDING),
            # Credit made inside the system before credit became coupons: shown, not spendable
            # here (it is the shop's to honour).
            "legacy_credit": {"amount": account.credit_balance, "currency": currency},
        }

    def history(self, store_id: str, customer_id: str, page: dict | None) -> dict:
        page = page or {}
        size = page_size(page, default=50)
        cursor = page.get("cursor")
        if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)):
            raise ValidationError("page.cursor must be the next_cursor of a previous page",
                                  {"fields": {"page.cursor": ["invalid"]}})
        doc = self.storage.accounts.get(store_id, customer_id)
        if doc is None or doc.get("status") == ERASED:
            raise NotFound(f"no loyalty account for customer {customer_id} in store {store_id}")
        entries = self.storage.ledger.history(store_id, customer_id, cursor, size + 1)
        more = len(entries) > size
        entries = entries[:size]
        return {"items": [_public(e) for e in entries],
                "next_cursor": entries[-1]["seq"] if more and entries else None}

    def export(self, store_id: str, customer_id: str) -> dict | None:
        """Everything held about one person (GDPR access and portability): the account, the
        whole ledger (read a page at a time) and the rewards; None when no account is held."""
        doc = self.storage.accounts.get(store_id, customer_id)
        if doc is None or doc.get("status") == ERASED:
            return None
        view = self.account_view(store_id, customer_id)
        entries, cursor = [], None
        while True:
            page = self.history(store_id, customer_id, {"size": 500, "cursor": cursor})
            entries.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        return {"account": view, "ledger": entries,
                "rewards": self.list_rewards(store_id, customer_id)["items"]}

    # -- the one write path --------------------------------------------------------------------
    def change(self, store_id: str, customer_id: str, change: Callable[[lg.Account], bool],
                cause: Event | None = None, create: bool = True) -> Outcome:
        accounts = self.storage.accounts
        programme = self.programme(store_id)
        for attempt in attempts(f"account {customer_id}", limit=_LOYALTY_RETRIES):
            stored = accounts.get(store_id, customer_id)
            if stored is None and not create:
                raise NotFound(f"no loyalty account for customer {customer_id} in store {store_id}")
            if stored is not None and stored.get("status") == ERASED:
                return Outcome()  # forgotten: nothing about them is kept again
            # find_one answered a private copy: the working copy can be that copy itself.
            working = (stored if stored is not None
                       else accounts.new(store_id, customer_id, self.clock()))
            version = {"version": stored["version"]} if stored is not None else None
            account = lg.Account(working, programme, self.clock())
            if not change(account) and not account.entries and stored is not None:
                return Outcome()
            entries = self._number(working, account.entries)
            events = self._events(working, account, cause)
            working["updated_at"] = self.clock()
            if accounts.save(version, working, entries, events, account.touched_orders,
                             account.new_request_keys, account.touched_rewards,
                             account.touched_transfers):
                self.storage.ledger.flush(working["_id"], entries)
                return Outcome(entries, [e.event_type for e in events],
                               [(accounts.collection.name, working["_id"])] if events else [])
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))  # let the winner finish

    def _number(self, working: dict, entries: list[lg.Entry]) -> list[dict]:
        numbered = []
        for entry in entries:
            seq = working["next_seq"]
            working["next_seq"] = seq + 1
            numbered.append({**entry.to_dict(), "_id": self.storage.ledger.entry_id(
                working["store_id"], working["customer_id"], entry.key),
                "store_id": working["store_id"], "customer_id": working["customer_id"],
                "seq": seq})
        return numbered

    def _events(self, working: dict, account: lg.Account, cause: Event | None) -> list[Event]:
        store_id, customer_id = working["store_id"], working["customer_id"]
        correlation = cause.correlation_id if cause else None
        causation = cause.event_id if cause else None

        def make(event_type: str, data: dict, key: str) -> Event:
            event_id = str(uuid.uuid5(_NAMESPACE, f"{store_id}:{customer_id}:{event_type}:{key}"))
            return build_event(event_type, store_id=store_id, data=data, event_id=event_id,
                               correlation_id=correlation or event_id, causation_id=causation,
                               occurred_at=self.clock())

        # When the change happened: an order's time at the shop (a backfill's history earns
        # points and tiers dated in the past), else now (a person's request, the daily run).
        fact_at = (fact_time(cause.event_type, cause.data) or cause.occurred_at
                   if cause is not None else self.clock())
        events = [make("loyalty.points_changed", {
            "customer_id": customer_id, "entry_key": e.key, "kind": e.kind, "delta": e.delta,
            "balance": e.balance, "reason": e.reason, "order_id": e.order_id,
            "fact_at": fact_at.isoformat()}, e.key)
            for e in account.entries if e.book == lg.POINTS]
        events.extend(make(event_type, data, key) for event_type, data, key in account.notices)
        change = account.tier_change
        if change is not None:
            events.append(make("loyalty.tier_changed", {
                "customer_id": customer_id, "old_tier": change.old, "new_tier": change.new,
                "direction": change.direction, "points_in_window": change.points_in_window,
                "fact_at": fact_at.isoformat()},
                f"{working['next_seq']}:{change.old}:{change.new}"))
        return events


class _MergedAway(Exception):
    """The account named was merged into `into`'s: what was meant for it goes there."""

    def __init__(self, into: str | None) -> None:
        super().__init__(into)
        self.into = into


def _coupon_codes(event: Event) -> list[str]:
    """The coupon codes an order event carries, as rewards hold them."""
    return sorted({str(c).lower() for c in event.data.get("coupon_codes") or [] if c})


def _coupon_use(event: Event, codes: list[str]) -> Callable[[lg.Account], bool]:
    """The change an order carrying `codes` makes to an account holding any of them."""
    return lambda account: any([account.apply_coupon_use(
        code, event.data["order_id"], event.data["status"], event.occurred_at)
        for code in codes])


@dataclass
class _Held:
    """An account as a batch holds it: whether it is stored (as read, or written by an earlier
    event of the batch) and the write gathered for it, whose working copy is its state now."""

    key: str
    stored: bool
    write: AccountWrite

    @property
    def exists(self) -> bool:
        return self.stored or self.write.writes > 0


class _Batch:
    """The accounts a batch of order events reads: the customers they name, the holders of
    the codes they carry and the accounts those were merged into, read at once up front."""

    def __init__(self, accounts: "Accounts", events: list[Event]) -> None:
        self.accounts = accounts
        self.repository = accounts.storage.accounts
        self.held: dict[str, _Held] = {}
        codes: dict[str, set[str]] = {}
        for event in events:
            codes.setdefault(event.store_id, set()).update(_coupon_codes(event))
        self.holding = self.repository.holding_codes_by_store(codes)
        wanted = {(event.store_id, event.data["customer_id"])
                  for event in events if event.data.get("customer_id")}
        wanted |= {(store_id, doc["customer_id"])
                   for store_id, docs in self.holding.items() for doc in docs}
        for _ in range(_MAX_MERGE_HOPS):
            self._read(wanted)
            wanted = {(doc["store_id"], into) for doc in
                      (held.write.working for held in self.held.values())
                      if doc.get("status") == MERGED
                      and (into := (doc.get("merged_into") or {}).get("customer_id"))}
            wanted = {pair for pair in wanted if self.repository.key(*pair) not in self.held}
            if not wanted:
                break

    def _read(self, wanted: set[tuple[str, str]]) -> None:
        """Hold each (store, customer) of `wanted`: as stored, or new when none is."""
        keys = {self.repository.key(*pair): pair for pair in wanted}
        stored = self.repository.get_many(keys) if keys else {}
        for key, (store_id, customer_id) in keys.items():
            doc = stored.get(key)
            if doc is None:
                working = self.repository.new(store_id, customer_id, self.accounts.clock())
                self.held[key] = _Held(key, False, AccountWrite(None, working, writes=0))
            else:
                self.held[key] = _Held(key, True, AccountWrite(doc["version"], doc, writes=0))

    def account(self, store_id: str, customer_id: str) -> _Held:
        key = self.repository.key(store_id, customer_id)
        if key not in self.held:  # merges deeper than read up front
            self._read({(store_id, customer_id)})
        return self.held[key]

    def holders(self, store_id: str, codes: list[str]) -> list[str]:
        """The customers holding any of `codes`, as `holding_codes` would answer."""
        if not codes:
            return []
        wanted = set(codes)
        return [doc["customer_id"] for doc in self.holding.get(store_id, [])
                if wanted.intersection(doc.get("reward_codes") or [])]

    def programme(self, store_id: str) -> Programme:
        return self.accounts.programme(store_id)


def merge_outcomes(first: Outcome, second: Outcome) -> Outcome:
    """Two use cases' outcomes as one (the later answer wins when both have one)."""
    return Outcome(first.entries + second.entries, first.events + second.events,
                   first.touched + second.touched, second.answer or first.answer)


def _request_id(request_id) -> str:
    """The caller's idempotency key, or a fresh one (a request asked once)."""
    if request_id is None:
        return uuid.uuid4().hex
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 100:
        raise ValidationError("request_id must be text of 1-100 characters",
                              {"fields": {"request_id": ["invalid"]}})
    return request_id


def _reward_public(reward: dict) -> dict:
    """A reward as RPC answers show it (RewardView)."""
    return {"reward_id": reward["reward_id"], "kind": reward["kind"], "state": reward["state"],
            "code": reward["code"],
            "amount": {"amount": reward["amount"], "currency": reward["currency"]},
            "points": reward["points"], "created_at": iso(reward["created_at"]),
            "expires_at": iso(reward["expires_at"]), "issued_at": iso(reward.get("issued_at")),
            "order_id": reward.get("order_id"), "attempts": reward.get("attempts", 0),
            "next_attempt_at": iso(reward.get("next_attempt_at")),
            "last_error": reward.get("last_error"), "reason": reward.get("reason"),
            "note": reward.get("note")}


def _whole(name: str, value, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be a whole number", {"fields": {name: ["not an integer"]}})
    if positive and value <= 0:
        raise ValidationError(f"{name} must be positive", {"fields": {name: ["not positive"]}})
    return value


def _text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} is required", {"fields": {name: ["required"]}})
    return value


def _public(entry: dict) -> dict:
    """A ledger entry as RPC answers show it (JSON-ready)."""
    return {k: iso(v) for k, v in entry.items() if k not in ("_id",)}
