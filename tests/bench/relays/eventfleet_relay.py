"""Case 4 and 6, the eventfleet relay: a fleet service (create_broker, subscriber_for, publisher_for) that verifies,
validates, decides (pure), signs, publishes and commits; its keys, algorithm and batch size from the command line."""

from __future__ import annotations

import asyncio
import os
import time

from aiokafka.admin import AIOKafkaAdminClient

from contracts import Envelope
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for
from fleet.runtime.observe.logs import configure_logging
from fleet.runtime.settings import KafkaSettings, KeySettings
from fleet.runtime.observe.tracing import configure_tracing

from ..contract import RELAY, BenchOrderReceived, BenchOrderRelayed, bench_registry, relay as decide
from ._common import Clock, arguments, write_result

COMMIT_POLL_S = 0.01  # once this process is idle; while it handles events it looks 10x less often


async def relay(bootstrap: str, alg: str, group: str, events: int, batch: int) -> tuple[Clock, list[float]]:
    """The service's defaults (acks=all, idempotence, verify, one JSON line per event, spans sampled at 10 %), except
    the batch size when asked. The window ends when the group's commits cover every event: with several processes in
    one group (case 6), each stops when all of them together are done. Returns the clock and when each event was handled."""
    registry = bench_registry(alg)
    broker = create_broker(RELAY, KafkaSettings(bootstrap_servers=bootstrap), KeySettings(), registry=registry)
    to_bench_order_relayed = publisher_for(broker, BenchOrderRelayed, registry=registry)
    clock, handled_at = Clock(events), []

    # 0: the fleet's default, whatever it is (KafkaSettings' batch_max_records): one record at a time before issue 17,
    # batches of 500 after it; "defaults" means what a user gets.
    @subscriber_for(broker, BenchOrderReceived, group_id=group, registry=registry, batch_max_records=batch or None)
    async def on_bench_order_received(order: BenchOrderReceived, envelope: Envelope) -> None:
        clock.first_consumed()  # the first call: the first record was fetched, verified and validated
        await to_bench_order_relayed.emit(decide(order), cause=envelope)
        handled_at.append(time.perf_counter())

    async with broker:
        await broker.start()
        await _until_committed(bootstrap, registry.of(BenchOrderReceived).name, group, events, handled_at)
        clock.last_done()
    return clock, handled_at


async def _until_committed(bootstrap: str, topic: str, group: str, events: int, handled_at: list[float]) -> None:
    """Waits until the group's committed offsets on `topic` add up to `events` (it holds exactly that many, from offset 0):
    one OffsetFetch for all partitions, rarely while this process is busy (the look must not slow what it measures)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-commit-watch")
    await admin.start()
    try:
        while True:
            busy = handled_at and time.perf_counter() - handled_at[-1] < 0.05
            await asyncio.sleep(COMMIT_POLL_S * (10 if busy or not handled_at else 1))
            offsets = await admin.list_consumer_group_offsets(group)
            if sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0) >= events:
                return
    finally:
        await admin.close()


def main() -> None:
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--alg", choices=("ed25519", "hmac"), default="ed25519")
    extra.add_argument("--batch", type=int, default=0, help="records per poll; 0 = the fleet's default (FLEET_KAFKA_BATCH_MAX_RECORDS)")
    known, rest = extra.parse_known_args()
    args = arguments(__doc__, rest)
    os.environ.setdefault("FLEET_REPLICA_ID", f"{RELAY}-{os.getpid()}")
    configure_logging(RELAY)
    configure_tracing(RELAY)
    clock, handled_at = asyncio.run(relay(args.bootstrap, known.alg, args.group, args.events, known.batch))
    if clock.first is None:  # one of several processes of a group that got no partition before the others were done
        write_result(args.result, {"events": args.events, "handled": 0, "handled_at": [], "first": None, "last": None,
                                   "cpu_window_s": 0.0, "pid": os.getpid()})
        return
    batch = known.batch or KafkaSettings(bootstrap_servers=args.bootstrap).batch_max_records  # what it ran with
    write_result(args.result, clock.result(alg=known.alg, batch_max_records=batch, handled=len(handled_at),
                                           handled_at=[round(t, 6) for t in handled_at],
                                           commit="the fleet's: after each record's outcome is durable (batch: after the batch's acks)"))


if __name__ == "__main__":
    main()
