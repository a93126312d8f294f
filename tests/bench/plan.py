"""What `make bench` runs, in the order of its table, the ratios it reports as its headline, and issue 17's targets."""

from __future__ import annotations

from .cases import Case, ConsumerCeiling, FleetRelayCase, ProducerCeiling, RelayCase
from .drain import ORDERS, PaymentsDrain
from .flow import FlowLatency
from .stats import Target

__all__ = ["CASES", "RATIOS", "TARGETS"]

# In the order of the table.
CASES: list[Case] = [
    ProducerCeiling(),
    ConsumerCeiling(),
    RelayCase("raw_aiokafka", "2", "Raw aiokafka relay (manual commit)", "raw_aiokafka"),
    RelayCase("faststream_plain", "3", "Plain FastStream relay (defaults)", "faststream_plain"),
    FleetRelayCase("eventfleet_ed25519", "4a", "eventfleet relay, Ed25519 (defaults)"),
    FleetRelayCase("eventfleet_hmac", "4b", "eventfleet relay, HMAC keys", alg="hmac"),
    FleetRelayCase("eventfleet_batch_ed25519", "4c", "eventfleet relay, Ed25519, batches of 500", batch=500),
    FleetRelayCase("eventfleet_batch_hmac", "4d", "eventfleet relay, HMAC keys, batches of 500", alg="hmac", batch=500),
    # The flow's rate, burst size and rest come from the command line (--steady-rate, --burst-orders, --idle-s).
    FlowLatency(key="flow_capacity", number="5a", burst=True, idle_s=20.0,
                title="Order flow, a burst of orders at once: capacity (and the fleet at rest before it)"),
    # A fleet that cannot keep up is a result (saturated), not a failure; it gets 60 s after the last order to finish.
    FlowLatency(key="flow_steady", number="5b", probe=True, wait_s=60.0, title="Order flow at a steady rate: latency, CPU per order"),
    FleetRelayCase("eventfleet_ed25519_2proc", "6", "eventfleet relay, Ed25519, 2 processes", processes=2),
    PaymentsDrain(),
    RelayCase("raw_aiokafka_drain", "7b", "Raw aiokafka relay on the same signed orders", "raw_aiokafka", source=ORDERS, drain=True),
]

# The headline: (numerator, denominator, what it says[, figure]): the ratio of the medians of events/s, or of the figure named.
RATIOS: list[tuple[str, ...]] = [
    ("eventfleet_hmac", "faststream_plain", "eventfleet HMAC / plain FastStream (target >= 1.0)"),
    ("eventfleet_batch_hmac", "faststream_plain", "eventfleet batch HMAC / plain FastStream (target >= 2.0)"),
    ("eventfleet_batch_ed25519", "faststream_plain", "eventfleet batch Ed25519 / plain FastStream (target >= 2.0)"),
    ("eventfleet_ed25519", "faststream_plain", "eventfleet Ed25519 / plain FastStream (target >= 0.6)"),
    ("eventfleet_batch_hmac", "raw_aiokafka", "eventfleet batch HMAC / raw aiokafka relay (target >= 0.5)"),
    ("eventfleet_batch_ed25519", "raw_aiokafka", "eventfleet batch Ed25519 / raw aiokafka relay"),
    ("eventfleet_ed25519", "raw_aiokafka", "eventfleet Ed25519 (defaults) / raw aiokafka relay (target >= 0.15)"),
    ("eventfleet_hmac", "raw_aiokafka", "eventfleet HMAC / raw aiokafka relay"),
    ("payments_drain", "raw_aiokafka_drain", "one payments replica draining / raw aiokafka relay, same orders (target >= 0.15)"),
    ("eventfleet_ed25519_2proc", "eventfleet_ed25519", "2 processes / 1 process, Ed25519 (target >= 1.6)", "steady_events_per_s"),
    ("faststream_plain", "raw_aiokafka", "plain FastStream / raw aiokafka relay"),
    ("raw_aiokafka", "kafka_producer_perf", "raw aiokafka relay / broker producer ceiling"),
]

# Issue 17's figures, each from a case's figure (its median and range over the runs; several: the largest) or a ratio
# ("ratio", "numerator/denominator" of RATIOS), against its target.
TARGETS: list[Target] = [
    Target("flow capacity: a burst of orders, defaults", (("flow_capacity", "events_per_s"),), ">=", 500.0, "orders/s"),
    Target("flow at a steady rate: p99 placed → terminal outcome", (("flow_steady", "p99_ms"),), "<=", 150.0, "ms"),
    Target("worker CPU per order at the steady rate (the busiest worker)", (("flow_steady", "max_worker_cpu_ms_per_order"),),
           "<=", 4.0, "ms"),
    Target("one payments replica draining a backlog / raw aiokafka, same records",
           (("ratio", "payments_drain/raw_aiokafka_drain"),), ">=", 0.15, "x"),
    Target("relay, batch, HMAC keys / raw aiokafka", (("ratio", "eventfleet_batch_hmac/raw_aiokafka"),), ">=", 0.5, "x"),
    Target("relay, defaults (Ed25519) / raw aiokafka", (("ratio", "eventfleet_ed25519/raw_aiokafka"),), ">=", 0.15, "x"),
    Target("the whole fleet at rest (five workers, summed)", (("flow_capacity", "fleet_idle_cores"),), "<=", 0.02, "cores"),
    Target("a worker's peak RSS (the largest: flow workers, drain replica)",
           (("flow_capacity", "max_worker_peak_rss_mb"), ("flow_steady", "max_worker_peak_rss_mb"), ("payments_drain", "peak_rss_mb")),
           "<", 150.0, "MB"),
]
