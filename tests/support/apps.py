"""Services running inside the test's own process: FastStream apps started and stopped around a test, the gateway under uvicorn."""

from contextlib import contextmanager

from tests.support.waiting import eventually_sync


class BrokerOnly:
    """What RunningApps needs of an app, for a test that builds a bare broker: something with a `broker`."""

    def __init__(self, broker) -> None:
        self.broker = broker


class RunningApps:
    """Starts the brokers of FastStream apps in this process and stops them after; `assignments()` shows who owns what."""

    def __init__(self, *apps) -> None:
        self.apps = apps

    async def __aenter__(self) -> "RunningApps":
        for app in self.apps:
            # A FastStream app runs its startup hooks (stores, relays) too; a bare broker holder just starts the broker.
            await (app.start() if hasattr(app, "start") else app.broker.start())
        return self

    async def __aexit__(self, *exc_info) -> None:
        for app in self.apps:
            await (app.stop() if hasattr(app, "stop") else app.broker.stop())

    def assignments(self, app) -> set:
        owned = set()
        for subscriber in app.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is not None:
                owned |= {(tp.topic, tp.partition) for tp in consumer.assignment()}
        return owned


@contextmanager
def running_gateway(settings):
    """The gateway under uvicorn on a free port, in a thread with its own event loop: the real Publisher, the real lifespan."""
    import threading

    import uvicorn

    from services.gateway import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the gateway's server thread ended before it started"
        return server.started

    eventually_sync(started, "the gateway to start", timeout_s=30, every_s=0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
