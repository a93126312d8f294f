"""What a service whose state is a read model says about it, so that `fleet rebuild` can build it again from its topics.

A read model is a fold of the events the service reads and nothing else: it sends nothing, charges nothing, reserves
nothing. Folding the same events again, in a fresh store, gives the same model; that is what makes it rebuildable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from contracts import Envelope
from fleet.runtime.store import Transaction

__all__ = ["Fold", "ReadModel"]

# The service's own fold of one verified event, in the caller's transaction, claimed under the consumer group (so that
# a record delivered again is folded once): the same function its handler calls.
Fold = Callable[[Transaction, str, Any, Envelope], Awaitable[Any]]


@dataclass(frozen=True)
class ReadModel:
    """A service's read model: the tables that hold it, the migrations that create them, and its fold."""

    tables: tuple[str, ...]  # the service's own tables; a rebuild replaces their whole content (and its inbox claims)
    migrations: Sequence[str]  # the service's migrations, run on the fresh store as on the live one
    fold: Fold

    def __post_init__(self) -> None:
        # The names go into SQL statements as they are (they are code, not input): hold them to plain identifiers.
        for table in self.tables:
            if not table.isidentifier():
                raise ValueError(f"a read model's table must be a plain SQL identifier, not {table!r}")
