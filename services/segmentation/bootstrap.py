"""segmentation put together: its repositories and use cases made once from its database and
config, so entrypoints and the periodic recompute share one of each."""
from __future__ import annotations

from dataclasses import dataclass

from pymongo.collection import Collection
from pymongo.database import Database

from services.segmentation.membership import Membership
from services.segmentation.merges import Merges
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from services.segmentation.saved_segments import SavedSegments
from services.segmentation.tag_catalogue import TagCatalogue
from shared.config import Config
from shared.customers import CustomerCheck, customer_sync_over_rpc


@dataclass(frozen=True)
class Segmentation:
    """What segmentation's workers and tasks see. customer_sync is asked through the calling
    worker's RPC proxy, which belongs to that worker, so the check over it is made per call."""

    storage: SegmentationStorage
    profiles: Profiles
    merges: Merges
    membership: Membership
    catalogue: TagCatalogue
    saved_segments: SavedSegments
    customer_check_seconds: float

    def ensure_indexes(self) -> None:
        self.storage.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return self.storage.outbox_collections()

    def customer_check(self, customer_sync) -> CustomerCheck:
        return CustomerCheck(customer_sync_over_rpc(customer_sync, self.customer_check_seconds))


def build(database: Database, config: Config) -> Segmentation:
    """segmentation from its own database and settings."""
    storage = SegmentationStorage(database)
    profiles = Profiles(storage)
    return Segmentation(
        storage=storage, profiles=profiles, merges=Merges(storage, profiles),
        membership=Membership(profiles),
        catalogue=TagCatalogue(storage, profiles),
        saved_segments=SavedSegments(storage.saved_segments),
        customer_check_seconds=config.float("CUSTOMER_CHECK_TIMEOUT_SECONDS"))
