"""What a chaos run found, computed from what the broker and the services' stores hold (pure: no I/O)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from statistics import median
from typing import Iterable

__all__ = ["Expected", "Observed", "Poison", "Figures", "WireEvent", "expected_notifications", "figures_of", "progress_after_strike"]

# An order's terminal status in the tracker, and the notifications its customer gets, per expected outcome.
TERMINAL_STATUS = {"declined": "payment_declined", "backordered": "backordered", "shipped": "shipment_scheduled"}
NOTIFICATIONS = {
    "declined": ("payment_declined",),
    "backordered": ("payment_authorized", "order_backordered"),
    "shipped": ("payment_authorized", "shipment_scheduled"),
}
# The topics whose events decide an order, by outcome they stand for.
DECISIONS = {
    "payments.authorized.v1": "authorized",
    "payments.declined.v1": "declined",
    "inventory.reserved.v1": "reserved",
    "inventory.backordered.v1": "backordered",
    "shipments.scheduled.v1": "shipped",
}


def expected_notifications(outcome: str) -> tuple[str, ...]:
    return NOTIFICATIONS[outcome]


@dataclass(frozen=True)
class WireEvent:
    """One record the harness read back from a flow topic."""

    topic: str
    partition: int
    offset: int
    key: str
    event_id: str


@dataclass(frozen=True)
class Poison:
    """A bad record the harness injected, where it landed, and the reason every consuming group must give."""

    name: str
    topic: str
    partition: int
    offset: int
    reason: str
    groups: tuple[str, ...]


@dataclass
class Expected:
    outcomes: dict[str, str]  # order id → declined | backordered | shipped
    stock: dict[str, int]  # sku → units left at the end
    poison: list[Poison] = field(default_factory=list)


@dataclass
class Observed:
    wire: list[WireEvent]  # every record on the flow topics, in (topic, partition, offset) order
    ledger: list[str]  # order id of each charge in payments' ledger
    stock: dict[str, int]  # inventory's levels at the end
    notifications: list[tuple[str, str]]  # (order id, template) of each row in notifications' table
    feed: list[str]  # notification id of each line of the mail feed
    statuses: dict[str, str]  # tracker: order id → status
    stock_handled: list[str]  # inventory's inbox: ids of handled stock receipts, in the order they were handled
    receipts: list[WireEvent]  # warehouse.stock_received.v1 as on the wire
    retried: set[str]  # ids of every event that went through a retry topic
    dead_letters: list[tuple[str, int, int, str, str]]  # (original topic, partition, offset, group, reason)


@dataclass
class Figures:
    orders: int
    lost: int
    wrong_outcome: int
    double_effects: dict[str, int]
    inversions: int
    dead_letters: dict[str, int]
    wire_duplicates: int
    retried_events: int
    examples: dict[str, list[str]]

    @property
    def passed(self) -> bool:
        return (self.lost == 0 and self.wrong_outcome == 0 and not any(self.double_effects.values()) and self.inversions == 0
                and self.dead_letters["missing"] == 0 and self.dead_letters["unexpected"] == 0 and self.dead_letters["wrong_reason"] == 0)

    def as_dict(self) -> dict:
        return {
            "orders": self.orders, "lost": self.lost, "wrong_outcome": self.wrong_outcome,
            "double_effects": self.double_effects, "double_effects_total": sum(self.double_effects.values()),
            "per_key_inversions": self.inversions, "dead_letters": self.dead_letters,
            "wire_duplicates_deduplicated": self.wire_duplicates, "retried_events": self.retried_events,
            "passed": self.passed, "examples": self.examples,
        }


def figures_of(expected: Expected, observed: Observed) -> Figures:
    examples: dict[str, list[str]] = defaultdict(list)
    lost = _lost(expected, observed, examples)
    wrong = _wrong_outcomes(expected, observed, examples)
    doubles = _double_effects(expected, observed, examples)
    inversions = _inversions(observed, examples)
    dead = _dead_letters(expected, observed, examples)
    by_id = Counter((e.topic, e.event_id) for e in observed.wire)
    return Figures(
        orders=len(expected.outcomes), lost=lost, wrong_outcome=wrong, double_effects=doubles, inversions=inversions,
        dead_letters=dead, wire_duplicates=sum(n - 1 for n in by_id.values()), retried_events=len(observed.retried),
        examples={k: v[:5] for k, v in examples.items()},
    )


def _lost(expected: Expected, observed: Observed, examples) -> int:
    """An order is lost when it did not reach its terminal status, or its customer misses a notification."""
    told = set(observed.notifications)
    lost = 0
    for order_id, outcome in expected.outcomes.items():
        reached = observed.statuses.get(order_id) == TERMINAL_STATUS[outcome]
        notified = all((order_id, template) in told for template in NOTIFICATIONS[outcome])
        if not (reached and notified):
            lost += 1
            examples["lost"].append(f"{order_id}: expected {outcome}, tracker says {observed.statuses.get(order_id)}")
    return lost


def _decisions(observed: Observed) -> dict[str, dict[str, set[str]]]:
    """order id → decision → distinct event ids (a record read twice with one id is one decision)."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for event in observed.wire:
        if event.topic in DECISIONS:
            found[event.key][DECISIONS[event.topic]].add(event.event_id)
    return found


def _wrong_outcomes(expected: Expected, observed: Observed, examples) -> int:
    allowed = {"declined": {"declined"}, "backordered": {"authorized", "backordered"}, "shipped": {"authorized", "reserved", "shipped"}}
    wrong = 0
    for order_id, decisions in _decisions(observed).items():
        outcome = expected.outcomes.get(order_id)
        if outcome is None or set(decisions) - allowed[outcome]:
            wrong += 1
            examples["wrong_outcome"].append(f"{order_id}: expected {outcome}, got {sorted(decisions)}")
    return wrong


def _double_effects(expected: Expected, observed: Observed, examples) -> dict[str, int]:
    """Every effect that happened more than once: a second decision, charge, reservation, shipment or notification."""
    decided_twice = 0
    for order_id, decisions in _decisions(observed).items():
        for decision, ids in decisions.items():
            if len(ids) > 1:
                decided_twice += len(ids) - 1
                examples["double_effects"].append(f"{order_id}: {decision} {len(ids)} times")
    charges = Counter(observed.ledger)
    should_be_charged = {o for o, outcome in expected.outcomes.items() if outcome != "declined"}
    charged_twice = sum(n - 1 for n in charges.values()) + len(set(charges) - should_be_charged)
    stock_off = sum(abs(observed.stock.get(sku, 0) - units) for sku, units in expected.stock.items())
    if stock_off:
        examples["double_effects"].append(f"stock off by {stock_off} units: {_differences(expected.stock, observed.stock)}")
    notified_twice = sum(n - 1 for n in Counter(observed.notifications).values())
    fed_twice = sum(n - 1 for n in Counter(observed.feed).values())
    return {"decisions": decided_twice, "charges": charged_twice, "stock_units": stock_off,
            "notifications": notified_twice, "mail_feed_lines": fed_twice}


def _differences(want: dict[str, int], got: dict[str, int]) -> str:
    return ", ".join(f"{sku} {got.get(sku, 0)} (want {units})" for sku, units in sorted(want.items()) if got.get(sku, 0) != units)


def _inversions(observed: Observed, examples) -> int:
    """Per key, handled in the order of the partition: a stock receipt handled before an earlier one of its sku is an
    inversion. Receipts that went through a retry topic left their key's order on purpose and are not counted."""
    handled_at = {event_id: n for n, event_id in enumerate(observed.stock_handled)}
    inversions = 0
    last_by_key: dict[str, tuple[int, str]] = {}
    for receipt in sorted(observed.receipts, key=lambda e: (e.partition, e.offset)):
        position = handled_at.get(receipt.event_id)
        if position is None or receipt.event_id in observed.retried:
            continue
        previous = last_by_key.get(receipt.key)
        if previous is not None and position < previous[0]:
            inversions += 1
            examples["inversions"].append(f"{receipt.key}: {receipt.event_id} handled before {previous[1]}")
        if previous is None or position > previous[0]:
            last_by_key[receipt.key] = (position, receipt.event_id)
    return inversions


def _dead_letters(expected: Expected, observed: Observed, examples) -> dict[str, int]:
    """Exactly the injected poison, once per consuming group, each with its reason. A group that dead-lettered a
    record twice (killed between publishing the dead letter and committing) counts once: the same record, same group."""
    want = {(p.topic, p.partition, p.offset, group): p for p in expected.poison for group in p.groups}
    got: dict[tuple, set[str]] = defaultdict(set)
    for topic, partition, offset, group, reason in observed.dead_letters:
        got[(topic, partition, offset, group)].add(reason)
    missing = [where for where in want if where not in got]
    unexpected = [where for where in got if where not in want]
    wrong_reason = [where for where, reasons in got.items() if where in want and reasons != {want[where].reason}]
    for label, places in (("dead_letter_missing", missing), ("dead_letter_unexpected", unexpected), ("dead_letter_wrong_reason", wrong_reason)):
        examples[label] += [f"{t}[{p}]@{o} group {g}: {sorted(got.get((t, p, o, g), ()))}" for t, p, o, g in places]
    return {
        "injected": len(expected.poison), "expected": len(want), "distinct": len(got),
        "records": len(observed.dead_letters), "missing": len(missing), "unexpected": len(unexpected), "wrong_reason": len(wrong_reason),
        "by_reason": dict(sorted(Counter(reason for *_, reason in observed.dead_letters).items())),
    }


def progress_after_strike(strike_at: float, sent_at: dict[str, float], done_at: dict[str, float]) -> dict:
    """How long the fleet stood still after a failover scenario's strike, from time.monotonic() stamps.

    `progress_resumed_after_s`: from the strike until the first order whose send began after it reached its terminal
    status in the tracker. That order had to be acknowledged by the cluster (acks=all: the struck node must have left the
    partition's ISR first), then decided by payments, inventory and shipping, whose publishes wait for the same, and
    tracked: the fleet works end to end again. It is an upper bound of the stall, since it includes one order's trip
    through the fleet; `order_latency_before_strike_s` is the median trip of the orders that completed before the strike.
    None when no order sent after the strike completed (the strike came too late to measure anything)."""
    after = [done_at[order] for order, sent in sent_at.items() if sent >= strike_at and order in done_at]
    before = [done_at[order] - sent for order, sent in sent_at.items() if done_at.get(order, strike_at) < strike_at]
    return {
        "progress_resumed_after_s": round(min(after) - strike_at, 2) if after else None,
        "order_latency_before_strike_s": round(median(before), 2) if before else None,
        "orders_sent_after_strike": sum(1 for sent in sent_at.values() if sent >= strike_at),
    }


def sorted_wire(events: Iterable[WireEvent]) -> list[WireEvent]:
    return sorted(events, key=lambda e: (e.topic, e.partition, e.offset))
