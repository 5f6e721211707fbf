"""The periodic recompute: every store's profiles looked at again, since a customer drifts into
At Risk by not ordering, which no event announces."""
from __future__ import annotations

import logging
from typing import Callable

from services.segmentation.profiles import Profiles

log = logging.getLogger(__name__)


def recompute_stores(profiles: Profiles, request_sweep: Callable[[], None]) -> None:
    """Each store in turn; one that fails is left to the next round. The bulk-written
    profiles' events are published by the sweep asked for at the end."""
    for store_id in profiles.storage.profiles.store_ids():
        try:
            counts = profiles.recompute_store(store_id)
            log.info("recomputed store", extra={"store_id": store_id, **counts})
        except Exception:
            log.exception("recomputing a store failed; next round retries",
                          extra={"store_id": store_id})
    request_sweep()
