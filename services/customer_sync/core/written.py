"""What a use case that writes answers: its RPC answer and the documents it wrote, so the service
publishes every write the same way (`CustomerSyncApp.publish(result.touched)`).

`ApplyResult` (a resource state applied) and `ErasureReport` carry the same `touched`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

# A written document: (collection name, _id). Those in an outbox collection may owe events,
# those in a timeline source may owe timeline entries.
DocumentRef = tuple[str, Any]


@dataclass(frozen=True)
class Written:
    """The caller's answer, unchanged in shape, and the documents to publish."""

    answer: dict
    touched: tuple[DocumentRef, ...] = ()


def written(answer: dict, touched: Iterable[DocumentRef] = ()) -> Written:
    """`Written` with each document named once, in the order first written."""
    return Written(answer, tuple(dict.fromkeys(touched)))
