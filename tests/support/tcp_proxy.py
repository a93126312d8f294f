"""A TCP proxy in front of a server (a database), so a test can take the server away from a client and give it back
without stopping it for anyone else: while the proxy is cut, nothing listens on its port (a connection is refused) and
every connection it carried is dropped; restored, it listens on the same port again."""

import asyncio
import contextlib
import random
import socket

__all__ = ["TcpProxy"]

# The proxy's port lies below Linux's ephemeral range (32768-60999): a client retrying the port while nothing listens
# there can never be given that port as its own source port and connect to itself.
PORTS = range(21_000, 25_000)


def a_free_port(host: str) -> int:
    """A port below the ephemeral range that nothing listens on now."""
    for port in random.sample(PORTS, 50):
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.bind((host, port))
            return port
    raise RuntimeError(f"no free port in {PORTS} on {host}")


class TcpProxy:
    """Forwards `host:port` (a free port of its own) to `target_host:target_port`; `cut()` and `restore()` an outage.

    It runs on the test's event loop: the client it serves is another process (a worker), or code that awaits.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host, self.target_port = target_host, target_port
        self.host = host
        self.port = a_free_port(host)
        self._server: asyncio.Server | None = None
        self._carried: set[asyncio.Task] = set()

    @property
    def cut_off(self) -> bool:
        return self._server is None

    async def __aenter__(self) -> "TcpProxy":
        await self.restore()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.cut()

    async def restore(self) -> None:
        """Listens again: new connections reach the target."""
        if self._server is None:
            self._server = await asyncio.start_server(self._carry, self.host, self.port, reuse_address=True)

    async def cut(self) -> None:
        """Stops listening (a connection is refused) and drops every connection it carried, as a server that died."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for carried in list(self._carried):
            carried.cancel()
        await asyncio.gather(*self._carried, return_exceptions=True)

    async def _carry(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._carried.add(task)
        writers = [client_writer]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
            writers.append(upstream_writer)
            pipes = [
                asyncio.create_task(self._pipe(client_reader, upstream_writer)),
                asyncio.create_task(self._pipe(upstream_reader, client_writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)  # one side closed: close the other
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # the target refused, or the proxy was cut: the client sees its connection drop
        finally:
            for writer in writers:
                writer.transport.abort()  # at once, as a dead server's connections go: no orderly goodbye
            self._carried.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
