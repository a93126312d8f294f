"""The gateway in a test's own process: an in-memory stand-in for its publisher, and its settings on a clients file."""

import asyncio

from contracts import Record


class FakePublisher:
    """Keeps the records the gateway would publish; `failure` makes each send raise it, `delay_s` makes each send slow."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.failure: Exception | None = None
        self.delay_s = 0.0
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def send(self, record: Record) -> None:
        await asyncio.sleep(self.delay_s)
        if self.failure is not None:
            raise self.failure
        self.records.append(record)

    async def close(self) -> None:
        self.running = False


def gateway_settings(folder, clients):
    """The gateway's settings with `clients` saved in a clients file under `folder`, and a short publish timeout."""
    from services.gateway import GatewaySettings
    from services.gateway.clients import save_clients

    save_clients(folder / "clients.json", clients)
    return GatewaySettings(clients_file=folder / "clients.json", publish_timeout_s=0.5)
