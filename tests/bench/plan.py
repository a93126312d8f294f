"""What `make bench` runs, in the order of its table, and the ratios it reports as its headline."""

from __future__ import annotations

from .cases import Case, ConsumerCeiling, FleetRelayCase, ProducerCeiling, RelayCase
from .flow import FlowLatency

__all__ = ["CASES", "RATIOS"]

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
    FlowLatency(key="end_to_end_at_half_case_4", number="5a", probe=True, window_s=5.0, once=True,
                title="Order flow at half of case 4a's rate: does the whole fleet keep up?"),
    FlowLatency(key="end_to_end_latency", number="5b", title="Order flow at half of its own capacity: latency"),
    FleetRelayCase("eventfleet_ed25519_2proc", "6", "eventfleet relay, Ed25519, 2 processes", processes=2),
]

# The headline: (numerator, denominator, what it says[, figure]): the ratio of the medians of events/s, or of the figure named.
RATIOS: list[tuple[str, ...]] = [
    ("eventfleet_hmac", "faststream_plain", "eventfleet HMAC / plain FastStream (target >= 1.0)"),
    ("eventfleet_batch_hmac", "faststream_plain", "eventfleet batch HMAC / plain FastStream (target >= 2.0)"),
    ("eventfleet_batch_ed25519", "faststream_plain", "eventfleet batch Ed25519 / plain FastStream (target >= 2.0)"),
    ("eventfleet_ed25519", "faststream_plain", "eventfleet Ed25519 / plain FastStream (target >= 0.6)"),
    ("eventfleet_batch_hmac", "raw_aiokafka", "eventfleet batch HMAC / raw aiokafka relay (target >= 0.5)"),
    ("eventfleet_batch_ed25519", "raw_aiokafka", "eventfleet batch Ed25519 / raw aiokafka relay"),
    ("eventfleet_ed25519", "raw_aiokafka", "eventfleet Ed25519 / raw aiokafka relay"),
    ("eventfleet_hmac", "raw_aiokafka", "eventfleet HMAC / raw aiokafka relay"),
    ("eventfleet_ed25519_2proc", "eventfleet_ed25519", "2 processes / 1 process, Ed25519 (target >= 1.6)", "steady_events_per_s"),
    ("faststream_plain", "raw_aiokafka", "plain FastStream / raw aiokafka relay"),
    ("raw_aiokafka", "kafka_producer_perf", "raw aiokafka relay / broker producer ceiling"),
]
