"""The event contract: one envelope, and one catalogue of every event's schema.

Publishers build events with `build_event` (validated before anything is stored or sent);
consumers read them with `parse_event` (unknown fields excluded, so additive changes are safe).
"""
from shared.events.envelope import Event, InvalidEvent, build_event, parse_event
from shared.events.catalogue import CATALOGUE, EventContract, contract, contracts_from

__all__ = [
    "CATALOGUE",
    "Event",
    "EventContract",
    "InvalidEvent",
    "build_event",
    "contract",
    "contracts_from",
    "parse_event",
]
