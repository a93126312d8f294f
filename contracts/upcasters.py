"""Upcasters: registered, pure functions that turn an event of one topic version into the next (`v1 → v2`).

A subscriber declared on the newest model also reads the older topics whose model upcasts to it: each record is
verified on its own topic's terms (its key may sign that topic), validated against its own model, then upcast, so the
handler sees only the newest model. Upcasters compose into chains (`v1 → v2 → v3`). Each is pure (no I/O, no clock),
and `contracts/vectors/upcasters/` holds the vectors every one is tested with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from .events import Event, OrderPlaced, OrderPlacedV2
from .registry import REGISTRY, Registry

__all__ = [
    "UPCASTERS",
    "NoUpcastPath",
    "Upcaster",
    "UpcasterError",
    "Upcasters",
    "as_current",
    "order_placed_v1_to_v2",
]

E = TypeVar("E", bound=Event)


class UpcasterError(ValueError):
    """An upcaster registered twice for one source, or one that is not from one model to another."""


class NoUpcastPath(LookupError):
    """No chain of upcasters leads from one model to another."""


@dataclass(frozen=True)
class Upcaster:
    """One step: `function` turns a `source` event into a `target` event."""

    source: type[Event]
    target: type[Event]
    function: Callable[[Any], Event]
    # True while `fleet contracts bump` left it a stub: `fleet check` fails until it is written.
    scaffolded: bool = False

    @property
    def name(self) -> str:
        return self.function.__name__

    def __call__(self, event: Event) -> Event:
        upcast = self.function(event)
        if not isinstance(upcast, self.target):
            raise UpcasterError(f"{self.name} returned {type(upcast).__name__}, not {self.target.__name__}")
        return upcast


class Upcasters:
    """Every registered upcaster, at most one per source model (a version has one next version)."""

    def __init__(self) -> None:
        self._by_source: dict[type[Event], Upcaster] = {}

    def register(
        self, source: type[Event], target: type[Event], *, scaffolded: bool = False
    ) -> Callable[[Callable[[Any], E]], Callable[[Any], E]]:
        """Decorator: registers the function as the one upcaster from `source` to `target`."""

        def add(function: Callable[[Any], E]) -> Callable[[Any], E]:
            if source in self._by_source:
                raise UpcasterError(f"{source.__name__} already upcasts with {self._by_source[source].name}")
            if source is target:
                raise UpcasterError(f"{function.__name__} upcasts {source.__name__} to itself")
            self._by_source[source] = Upcaster(source, target, function, scaffolded)
            return function

        return add

    def __iter__(self) -> Iterator[Upcaster]:
        return iter(self._by_source.values())

    def of(self, source: type[Event]) -> Upcaster | None:
        return self._by_source.get(source)

    def path(self, source: type[Event], target: type[Event]) -> tuple[Upcaster, ...] | None:
        """The chain from `source` to `target` (empty when they are the same model), or None when there is none."""
        chain: list[Upcaster] = []
        model = source
        while model is not target:
            step = self._by_source.get(model)
            if step is None or step in chain:  # no next version, or a cycle
                return None
            chain.append(step)
            model = step.target
        return tuple(chain)

    def upcast(self, event: Event, target: type[E]) -> E:
        """`event` as a `target`, through every step of the chain."""
        chain = self.path(type(event), target)
        if chain is None:
            raise NoUpcastPath(f"no upcaster leads from {type(event).__name__} to {target.__name__}")
        for step in chain:
            event = step(event)
        return event  # type: ignore[return-value]  # the chain ends at `target` (each step checks its own)


UPCASTERS = Upcasters()


def as_current(event: Event, registry: Registry = REGISTRY) -> Event:
    """The event as the newest version of its topic's event (itself when it is the newest): what a handler declared
    on the newest model is given, and what a rebuild folds."""
    current = registry.current(registry.of(event)).model
    return event if type(event) is current else UPCASTERS.upcast(event, current)


# The documented default of `channel` for an order of v1: the web shop was the only channel before v2.
V1_ORDER_CHANNEL = "web"


@UPCASTERS.register(OrderPlaced, OrderPlacedV2)
def order_placed_v1_to_v2(order: OrderPlaced) -> OrderPlacedV2:
    """orders.placed.v1 → v2: every field as it was, and `channel` = `web` (the only channel before v2)."""
    return OrderPlacedV2(**dict(order), channel=V1_ORDER_CHANNEL)
