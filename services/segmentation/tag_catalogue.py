"""The store's tag catalogue: the tags staff can pick from, with a description and how many
customers carry each, and the store-wide changes to one tag (rename, delete).

A tag exists when it is in the catalogue (created, perhaps carried by nobody yet) or when a
customer carries it (tagging a customer with a new tag needs no catalogue entry first). A
rename or delete goes through each carrying profile's own compare-and-set write, so every
customer publishes what tagging and untagging publish (`customer.untagged`, then
`customer.tagged` for a rename), and running it again after a crash finishes the job without
publishing anything twice. A tag that a rule adds, removes or tests is refused: the rule would
put the old name back, so the rule is changed first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from services.segmentation.profiles import Profiles, ProfileChange
from services.segmentation.repository import SegmentationStorage
from services.segmentation.rules import TAG_PATTERN
from shared.errors import Conflict, NotFound, ValidationError
from shared.times import utcnow

DESCRIPTION_MAX = 500


@dataclass
class CatalogueChange:
    """What a store-wide change did: customers changed, and the profiles that owe events."""

    customers: int = 0
    touched: list = field(default_factory=list)

    def add(self, change: ProfileChange) -> None:
        if change.events:
            self.customers += 1
        self.touched.extend(change.touched)


def tag_slug(value: Any, name: str = "tag") -> str:
    """A tag as given by a caller: a lower-case slug, or a ValidationError naming `name`."""
    if not isinstance(value, str) or not TAG_PATTERN.match(value.strip().lower()):
        raise ValidationError(f"{name} must be 1-64 lower-case letters, digits, '-' or '_'",
                              {"fields": {name: ["not a tag"]}})
    return value.strip().lower()


def description_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > DESCRIPTION_MAX:
        raise ValidationError(f"description must be text of at most {DESCRIPTION_MAX} "
                              "characters", {"fields": {"description": ["too long or not text"]}})
    return value.strip()


class TagCatalogue:
    def __init__(self, storage: SegmentationStorage, profiles: Profiles,
                 clock: Callable = utcnow) -> None:
        self.storage = storage
        self.profiles = profiles
        self.clock = clock

    @property
    def entries(self):
        return self.storage.tag_catalogue

    def list(self, store_id: str) -> list[dict]:
        """Every tag of the store, catalogued or carried, with its active customers."""
        counts = self.storage.profiles.member_counts(store_id, "tag_list")
        described = self.entries.descriptions(store_id)
        return [{"tag": tag, "description": described.get(tag, ""),
                 "customers": counts.get(tag, 0), "catalogued": tag in described}
                for tag in sorted(set(counts) | set(described))]

    def get(self, store_id: str, tag: str) -> dict:
        for entry in self.list(store_id):
            if entry["tag"] == tag:
                return entry
        raise NotFound(f"no tag {tag} in store {store_id}")

    def create(self, store_id: str, tag: Any, description: Any, actor: str | None) -> dict:
        """A new catalogue entry; Conflict when the catalogue has it already."""
        tag, text = tag_slug(tag), description_text(description)
        if self.entries.get(store_id, tag) is not None:
            raise Conflict(f"the tag {tag} exists already")
        self.entries.add(store_id, tag, {"description": text, "created_at": self.clock(),
                                         "created_by": actor})
        return self.get(store_id, tag)

    def describe(self, store_id: str, tag: str, description: Any) -> None:
        """A tag's description; a tag only carried so far enters the catalogue with it."""
        text = description_text(description)
        self._require(store_id, tag)
        self.entries.describe(store_id, tag, text, self.clock())

    def update(self, store_id: str, tag: Any, changes: Any, actor: str | None,
               notify: Callable[[list], None]) -> dict:
        """Rename (`new_tag`: every carrier follows, their profiles told to `notify`) and/or
        describe (`description`) a tag; answers the tag and `renamed`: how many customers now
        carry the new name. A bad description is refused before anything is renamed."""
        if not isinstance(changes, dict) or not changes or \
                set(changes) - {"new_tag", "description"}:
            raise ValidationError("changes must hold new_tag and/or description",
                                  {"fields": {"changes": ["new_tag, description"]}})
        tag = tag_slug(tag)
        if "description" in changes:
            description_text(changes["description"])
        renamed = 0
        if "new_tag" in changes:
            _, change = self.rename(store_id, tag, changes["new_tag"], actor)
            notify(change.touched)
            tag, renamed = tag_slug(changes["new_tag"], "new_tag"), change.customers
        if "description" in changes:
            self.describe(store_id, tag, changes["description"])
        return {**self.get(store_id, tag), "renamed": renamed}

    def rename(self, store_id: str, old: Any, new: Any, actor: str | None
               ) -> tuple[dict, CatalogueChange]:
        """Every customer carrying `old` carries `new` instead (onto an existing tag: the two
        merge); the catalogue entry and its description follow."""
        old, new = tag_slug(old, "tag"), tag_slug(new, "new_tag")
        self._require(store_id, old)
        if old == new:
            return self.get(store_id, new), CatalogueChange()
        self._refuse_if_ruled(store_id, old)

        def move(doc: dict) -> bool:
            tags = doc.setdefault("tags", {})
            if old not in tags:
                return False
            entry = tags.pop(old)
            tags.setdefault(new, {**entry, "source": "manual", "actor": actor,
                                  "added_at": self.clock()})
            return True

        change = self._each_carrier(store_id, old, move, actor)
        held = self.entries.get(store_id, old)
        if held is not None:
            if self.entries.get(store_id, new) is None:
                self.entries.add(store_id, new, {"description": held.get("description", ""),
                                                 "created_at": held.get("created_at"),
                                                 "created_by": held.get("created_by")})
            self.entries.remove(store_id, old)
        return self.get(store_id, new), change

    def delete(self, store_id: str, tag: Any, actor: str | None) -> CatalogueChange:
        """The tag leaves every customer carrying it and the catalogue."""
        tag = tag_slug(tag)
        self._require(store_id, tag)
        self._refuse_if_ruled(store_id, tag)

        def drop(doc: dict) -> bool:
            return (doc.get("tags") or {}).pop(tag, None) is not None

        change = self._each_carrier(store_id, tag, drop, actor)
        self.entries.remove(store_id, tag)
        return change

    def _require(self, store_id: str, tag: str) -> None:
        if self.entries.get(store_id, tag) is None and \
                not self.storage.profiles.anyone_carries(store_id, tag):
            raise NotFound(f"no tag {tag} in store {store_id}")

    def _refuse_if_ruled(self, store_id: str, tag: str) -> None:
        ruling = sorted(rule.get("rule_id", "") for rule in self.storage.rules_of(store_id)
                        if _rule_names_tag(rule, tag))
        if ruling:
            raise Conflict(f"the rules {', '.join(ruling)} use the tag {tag}: change them first")

    def _each_carrier(self, store_id: str, tag: str, change: Callable[[dict], bool],
                      actor: str | None) -> CatalogueChange:
        """Apply `change` to each profile carrying the tag, one compare-and-set each."""
        done = CatalogueChange()
        for customer_id in self.storage.profiles.carriers_of(store_id, tag):
            done.add(self.profiles.change_tags(store_id, customer_id, change, actor))
        return done


def _rule_names_tag(rule: dict, tag: str) -> bool:
    for action in rule.get("actions") or []:
        if action.get("type") in ("add_tag", "remove_tag") and action.get("value") == tag:
            return True
    for condition in rule.get("conditions") or []:
        if condition.get("field") == "tags":
            value = condition.get("value")
            if value == tag or (isinstance(value, list) and tag in value):
                return True
    return False
