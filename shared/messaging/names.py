"""The names of a service's retry and parking queues and exchange, in one place.

A module of its own that imports nothing but the standard library, so that the metrics and the operator tools can name
the queues without loading the handler machinery that uses them.
"""
from __future__ import annotations

import re

# Where a service's handlers park what they gave up on (`companion dlq`): `<service>.parked`.
PARKED_SUFFIX = ".parked"
# Any service's parked queue, as a broker permission pattern (service names are [a-z_]+).
PARKED_QUEUE_PATTERN = r"[a-z_]+" + re.escape(PARKED_SUFFIX)


def parked_queue(service_name: str) -> str:
    """The queue a service's reliable handlers park messages in."""
    return service_name + PARKED_SUFFIX


def parked_service(queue_name: str) -> str | None:
    """The service whose parked queue this is; None for any other queue."""
    return queue_name[: -len(PARKED_SUFFIX)] if queue_name.endswith(PARKED_SUFFIX) else None


def retry_queue(queue: str, delay_ms: int) -> str:
    """The delay queue of `queue`'s retries after `delay_ms`. `ms` marks the queues that
    dead-letter through `<service>.retry`; queues named `<queue>.retry.<n>` (dead-lettering
    through the default exchange) predate it."""
    return f"{queue}.retry.{delay_ms}ms"


def retry_exchange(service_name: str) -> str:
    """The direct exchange a service's retries, their way back and parked messages go
    through: the service's broker user may publish there and not to the default exchange,
    which reaches any queue (deploy/README.md, broker users)."""
    return f"{service_name}.retry"
