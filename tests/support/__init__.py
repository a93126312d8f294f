"""Helpers shared by every test, one small module each, all importable from here: `from tests.support import an_order`.

- events: event factories (an order, an authorization, a decline) and the signed records a publisher would send
- records: raw-record builders (headers and records as Kafka delivers them)
- waiting: `eventually` / `eventually_sync`, asking again until a condition holds or time is up (`NotYet` to show why not)
- kafka: the real broker from a test's side (end and committed offsets, groups started at the end, raw producing, reading back)
- in_memory_broker: services on FastStream's in-memory broker, and what they publish captured
- apps: apps and the gateway running inside the test's process
- fleet_up: `fleet up --demo` watched until an order is through
- config_files: the local brokers' Java properties files
- cli: the `fleet` command run as a user runs it, and what its failures must look like
- tcp_proxy: a proxy in front of a server (the test database), cut and restored to make an outage for one worker
"""

from tests.support.apps import BrokerOnly, RunningApps, running_gateway
from tests.support.cli import LIBRARY_NOISE, assert_fails_in_one_line, run_fleet
from tests.support.config_files import properties
from tests.support.events import (
    NOW,
    a_decline,
    a_record,
    a_record_that_is_not_a_valid_order,
    an_authorization,
    an_order,
    an_order_costing,
    an_order_v2,
    signer_of,
    unique_order_id,
)
from tests.support.fleet_up import WHOLE_FLOW, FleetUpRun, fleet_up_until_an_order_is_through, flow_steps
from tests.support.in_memory_broker import Captured, InMemoryProducer, capture, in_memory
from tests.support.kafka import (
    Seen,
    TopicReader,
    commit_at_end,
    committed_offsets,
    end_offsets,
    groups_have_members,
    produce_raw,
    produce_raw_in_one_batch,
    start_group_at_end,
    topics_have_leaders,
    wait_until_committed,
    wait_until_committed_past,
)
from tests.support.records import FakeRecord, as_raw, raw_headers
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import NotYet, eventually, eventually_sync

__all__ = [
    "LIBRARY_NOISE",
    "NOW",
    "WHOLE_FLOW",
    "BrokerOnly",
    "Captured",
    "FakeRecord",
    "FleetUpRun",
    "InMemoryProducer",
    "NotYet",
    "RunningApps",
    "Seen",
    "TcpProxy",
    "TopicReader",
    "a_decline",
    "a_record",
    "a_record_that_is_not_a_valid_order",
    "an_authorization",
    "an_order",
    "an_order_costing",
    "an_order_v2",
    "as_raw",
    "assert_fails_in_one_line",
    "capture",
    "commit_at_end",
    "committed_offsets",
    "end_offsets",
    "eventually",
    "eventually_sync",
    "fleet_up_until_an_order_is_through",
    "flow_steps",
    "groups_have_members",
    "in_memory",
    "produce_raw",
    "produce_raw_in_one_batch",
    "properties",
    "raw_headers",
    "run_fleet",
    "running_gateway",
    "signer_of",
    "start_group_at_end",
    "topics_have_leaders",
    "unique_order_id",
    "wait_until_committed",
    "wait_until_committed_past",
]
