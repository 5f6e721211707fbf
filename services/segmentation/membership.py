"""Tags and groups set by hand: one customer at a time or many at once. Only a customer of the
store is changed (a profile held here, or customer_sync's word for one whose events have not
arrived yet); anyone else is not found, and no profile is made for them."""
from __future__ import annotations

from typing import Callable, Iterable

from services.segmentation.profiles import ERASED, ProfileChange, Profiles
from services.segmentation.schemas import customer_id_list, tag_slugs
from services.segmentation.views import active_profile
from shared.customers import CustomerCheck, not_found, valid_customer_id
from shared.errors import Conflict, NotFound

Notify = Callable[[Iterable[tuple[str, str]]], None]


class Membership:
    def __init__(self, profiles: Profiles) -> None:
        self.profiles = profiles
        self.storage = profiles.storage

    def existing(self, check: CustomerCheck, store_id: str, customer_ids: list[str]) -> set[str]:
        """Which of the customers a tag or group may name."""
        def held_here(customer_id: str) -> bool:
            profile = self.storage.profiles.get(store_id, customer_id)
            return profile is not None and profile.get("status") != ERASED

        return check.existing(store_id, customer_ids, held_here)

    def tag(self, check: CustomerCheck, store_id: str, customer_id: object, tags: object,
            actor: str | None) -> tuple[str, ProfileChange]:
        """Tags added to one customer: their checked id, and the change."""
        slugs = tag_slugs(tags)
        customer_id = valid_customer_id(customer_id)
        if not self.existing(check, store_id, [customer_id]):
            raise not_found(store_id, customer_id)
        return customer_id, self.profiles.set_tags(store_id, customer_id, add=slugs, actor=actor)

    def untag(self, store_id: str, customer_id: object, tags: object,
              actor: str | None) -> tuple[str, ProfileChange]:
        """Tags taken off a customer held here: their checked id, and the change."""
        customer_id = valid_customer_id(customer_id)
        active_profile(self.storage, store_id, customer_id)
        return customer_id, self.profiles.set_tags(store_id, customer_id, remove=tag_slugs(tags),
                                                   actor=actor)

    def bulk_tag(self, check: CustomerCheck, store_id: str, customer_ids: object, tags: object,
                 actor: str | None, notify: Notify) -> dict:
        """Tag many customers; answers each customer's outcome."""
        slugs = tag_slugs(tags)
        return self._each(check, store_id, customer_id_list(customer_ids), notify, "tagged",
                          lambda customer_id: self.profiles.set_tags(store_id, customer_id,
                                                                     add=slugs, actor=actor))

    def group(self, check: CustomerCheck, store_id: str, customer_ids: object, group: object,
              actor: str | None, join: bool, notify: Notify) -> dict:
        """Many customers into or out of a saved group; answers each customer's outcome."""
        slug = tag_slugs([group])[0]
        if not self.storage.has_group(store_id, slug):
            raise NotFound(f"no group {slug} in store {store_id}: save_group first")
        if isinstance(customer_ids, str):
            customer_ids = [customer_ids]
        add, remove = ([slug], []) if join else ([], [slug])
        return self._each(check, store_id, customer_id_list(customer_ids), notify, "changed",
                          lambda customer_id: self.profiles.set_groups(
                              store_id, customer_id, add=add, remove=remove, actor=actor))

    def _each(self, check: CustomerCheck, store_id: str, customer_ids: list[str],
              notify: Notify, done: str, change: Callable[[str], ProfileChange]) -> dict:
        """One change to many customers, each on its own: one refused or not found does not
        stop the rest, and each customer's outcome is answered (`done` when it changed)."""
        existing = self.existing(check, store_id, customer_ids)
        results = {}
        for customer_id in customer_ids:
            if customer_id not in existing:
                results[customer_id] = "not found"
                continue
            try:
                made = change(customer_id)
            except Conflict as exc:
                results[customer_id] = f"refused: {exc}"
                continue
            notify(made.touched)
            results[customer_id] = done if made.events else "unchanged"
        return {"results": results}

