"""A TCP relay in the test process whose answers can be held back.

A client connected through the relay reaches the real server: what it sends is passed on at once,
and the server acts on it at once. While the relay is held (:meth:`Relay.hold`), what the server
answers waits in the relay until :meth:`Relay.release`: the client is stopped right after its
request took effect, for as long as the test needs to look at that moment from elsewhere. An
answer the relay drops (:meth:`Relay.drop_answers`) never reaches the client, whose connection
is closed instead: its request took effect, and it cannot know.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Relay:
    """Relays 127.0.0.1:<:attr:`port`> to ``host:port``; use as ``async with Relay(...) as relay``."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._drops = 0
        self.dropped = 0
        """How many answers were dropped so far."""
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    def hold(self) -> None:
        """From now on, keep what the server answers."""
        self._open.clear()

    def release(self) -> None:
        """Pass on what was kept, and everything from now on."""
        self._open.set()

    def drop_answers(self, count: int = 1) -> None:
        """Drop the next ``count`` answers: as each arrives, close its connection to the client instead."""
        self._drops += count

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)
        for pump in (
            self._pump(client_reader, server_writer, gated=False),
            self._pump(server_reader, client_writer, gated=True),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool) -> None:
        try:
            async for chunk in _chunks(reader):
                if gated:
                    await self._open.wait()
                    if self._drops:
                        self._drops -= 1
                        self.dropped += 1
                        return  # the client's connection is closed below, without the answer
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(65536):
        yield chunk
