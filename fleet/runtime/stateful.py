"""What a stateful worker adds to its app: its store and the relay that publishes its outbox.

The store holds the inbox, the outbox and the service's own tables."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Sequence

import structlog
from faststream import FastStream

from contracts import Envelope, Record, sign
from fleet.runtime.broker import FleetBroker
from fleet.runtime.store import OutboxRelay, OutboxRow, Producer, Store, Transaction, open_store

__all__ = ["StateHandle", "attach_store", "refresh_stale"]

log = structlog.get_logger("fleet.runtime.stateful")
# Re-sign an outbox row that waited longer than this: consumers refuse a ce_time 300 s from the broker's clock.
RESIGN_AFTER = timedelta(seconds=60)


class StateHandle:
    """The worker's store, opened at startup; handlers use `handle.store` only while the worker runs."""

    def __init__(self, commit_took: Callable[[float], None] | None = None) -> None:
        self._store: Store | None = None
        self.relay: OutboxRelay | None = None
        self.commit_took = commit_took  # told how long each batch's commit took, in seconds (a metric)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is opened when the worker starts")
        return self._store

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Transaction]:
        """The store's transaction around one batch of records (fleet.runtime.delivery.batches): each handler's
        `store.transaction()` is a savepoint of it. It also marks the outbox rows the relay published since the last
        batch: no transaction of their own."""
        relay = self.relay
        published = relay.take_acknowledged() if relay is not None else []
        try:
            async with self.store.batch() as tx:
                if published:
                    await self.store.mark_published(tx, published)
                yield tx
                committing = time.perf_counter()
        except BaseException:
            if relay is not None:
                relay.give_back(published)
            raise
        if self.commit_took is not None:
            # Every hop of an event waits for this sync to disk, which takes tens to hundreds of milliseconds on a
            # busy or shared disk (docs/performance.md): operators see it as eventfleet_store_commit_seconds.
            self.commit_took(time.perf_counter() - committing)


def attach_store(
    app: FastStream, broker: FleetBroker, url: str, migrations: Sequence[str], producer: Producer | None = None
) -> StateHandle:
    """Opens the store and starts its relay before the broker consumes; stops both after the broker has stopped,
    so no handler writes to a closed store and the last committed rows still go out. The relay connects as the
    broker's service does (its KafkaConnection: TLS and SCRAM on a secure cluster)."""
    handle = StateHandle(commit_took=broker.state.metrics.store_commit.observe)

    async def open_state() -> None:
        connection = broker.state.connection
        if connection is None:  # create_broker always sets it
            raise RuntimeError(f"{broker.service}'s broker has no Kafka connection: build it with create_broker")
        if producer is None:  # the relay's producer is the worker's first client
            await broker.state.log_in()
        handle._store = await open_store(url)
        await handle._store.migrate(list(migrations))
        handle.relay = OutboxRelay(
            handle._store,
            connection,
            f"{broker.service}-outbox",
            producer=producer,
            refresh=lambda row: refresh_stale(row, broker),
            linger_ms=broker.kafka.linger_ms,
            refused=lambda error: broker.state.report_if_refused(error, "publishing its outbox"),
            crash_point=broker.state.faults.crash_point if broker.state.faults.crashes else None,
        )
        await handle.relay.start()
        broker.batch_scopes.append(handle.batch)
        log.info("store_opened", store=handle._store.dialect)

    async def close_state() -> None:
        if handle.batch in broker.batch_scopes:
            broker.batch_scopes.remove(handle.batch)
        if handle.relay is not None:
            await handle.relay.stop()
        if handle._store is not None:
            await handle._store.close()
            handle._store = None

    app.on_startup(open_state)
    app.after_shutdown(close_state)
    return handle


def refresh_stale(row: OutboxRow, broker: FleetBroker, now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The row's headers, re-signed with a fresh ce_time (same ce_id, flow and cause) when it waited too long."""
    envelope = Envelope.from_headers(row.headers)
    now = now or datetime.now(UTC)
    signed_at = datetime.fromisoformat(envelope.time.replace("Z", "+00:00"))
    if now - signed_at < RESIGN_AFTER:
        return row.headers
    fresh = replace(envelope, time=now.isoformat(timespec="microseconds").replace("+00:00", "Z"))
    record = sign(Record(row.topic, row.key, row.value, fresh), broker.keys.signer())
    others = [(k, v) for k, v in row.headers if not k.startswith("ce_") and k != "content-type"]
    return record.raw_headers() + others
