"""A service's container as its dependency providers see it: a provider that needs a peer (the
storage, the outbox relay, the application) takes it by the attribute name the service gives
it, so the wiring is written in the service class and a peer is never picked by type."""
from __future__ import annotations

from typing import Iterable

from nameko.extensions import DependencyProvider


def _quoted(names: Iterable[str], joiner: str) -> str:
    return f" {joiner} ".join(repr(name) for name in names)


def named_dependencies(container, names: Iterable[str], needed_by: str, *,
                       one_of: bool = False, what: str = "dependency providers",
                       advice: str = "") -> dict[str, DependencyProvider]:
    """The container's dependency providers declared as attributes `names`, by name.

    Raises RuntimeError naming the service, `needed_by` and the missing names where any is
    missing, or with `one_of` where none is there (then only those found are answered).
    `what` says what the names should hold and `advice` how to fix it, in that error."""
    wanted = list(dict.fromkeys(names))
    found = {d.attr_name: d for d in container.dependencies if d.attr_name in wanted}
    missing = [] if (one_of and found) else [name for name in wanted if name not in found]
    if missing:
        noun = "attribute" if one_of or len(missing) == 1 else "attributes"
        listed = _quoted(missing, "or" if one_of else "and")
        raise RuntimeError(
            f"{container.service_name}: {needed_by} needs {what} as {noun} {listed}, which the "
            f"service lacks" + (f"; {advice}" if advice else ""))
    return found
