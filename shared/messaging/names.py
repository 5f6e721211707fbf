"""The names of a service's retry and parking queues and exchange, in one place.

A module of its own that imports nothing, so that the metrics and the operator tools can name
the queues without loading the handler machinery that uses them.
"""
from __future__ import annotations


def parked_queue(service_name: str) -> str:
    """Where a service's handlers park what they gave up on (`companion dlq`)."""
    return f"{service_name}.parked"


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
