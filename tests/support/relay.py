"""A TCP relay in the test process whose answers can be held back, or the network cut.

A client connected through the relay reaches the real server: what it sends is passed on at once,
and the server acts on it at once. While the relay is held (:meth:`Relay.hold`), what the server
answers waits in the relay until :meth:`Relay.release`: the client is stopped right after its
request took effect, for as long as the test needs to look at that moment from elsewhere. An
answer the relay drops (:meth:`Relay.drop_answers`) never reaches the client, whose connection
is closed instead: its request took effect, and it cannot know.

:meth:`Relay.stall` holds both directions (a network that delays everything: what the client sent
arrives when released). :meth:`Relay.cut` is a partition: nothing passes either way and what is
sent is lost, connections stay open on both sides (neither side learns that the other is gone:
the server still counts a subscriber), and new connections are accepted but lead nowhere; after
:meth:`Relay.heal` those connections are closed (as TCP gives up in the end) and new ones work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    severed: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class Relay:
    """Relays 127.0.0.1:<:attr:`port`> to ``host:port``; use as ``async with Relay(...) as relay``."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._sending = asyncio.Event()
        self._sending.set()
        self._cut = False
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._drops = 0
        self.dropped = 0
        """How many answers were dropped so far."""
        self._connections: set[_Connection] = set()
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        self._cut = False
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            _close(connection)
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    def hold(self) -> None:
        """From now on, keep what the server answers."""
        self._open.clear()

    def stall(self) -> None:
        """From now on, keep what either side sends (it goes on, in order, at :meth:`release`)."""
        self._open.clear()
        self._sending.clear()

    def release(self) -> None:
        """Pass on what was kept, and everything from now on."""
        self._open.set()
        self._sending.set()

    def cut(self) -> None:
        """Cut the network: nothing passes either way from now on, and nobody is told."""
        self._cut = True
        for connection in self._connections:
            connection.severed = True

    def heal(self) -> None:
        """End the cut: the connections it severed are closed; new ones go through."""
        self._cut = False
        for connection in [c for c in self._connections if c.severed]:
            self._connections.discard(connection)
            _close(connection)

    def drop_answers(self, count: int = 1) -> None:
        """Drop the next ``count`` answers: as each arrives, close its connection to the client instead."""
        self._drops += count

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connection = _Connection(client_writer, severed=self._cut)
        self._connections.add(connection)
        if connection.severed:  # accepted, but leads nowhere: what the client sends is lost
            self._start(connection, self._drain(client_reader, connection))
            return
        try:
            server_reader, connection.server = await asyncio.open_connection(*self._target)
        except OSError:
            _close(connection)
            return
        self._start(connection, self._pump(client_reader, connection.server, connection, answers=False))
        self._start(connection, self._pump(server_reader, client_writer, connection, answers=True))

    def _start(self, connection: _Connection, pump: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(pump)  # type: ignore[arg-type]
        self._pumps.add(task)
        connection.pumps.append(task)
        task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection, *, answers: bool
    ) -> None:
        try:
            async for chunk in _chunks(reader):
                await (self._open if answers else self._sending).wait()
                if connection.severed:
                    continue  # lost in the cut
                if answers and self._drops:
                    self._drops -= 1
                    self.dropped += 1
                    return  # the connection is closed below, without the answer
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if not connection.severed:  # one side closed: so does the other (a severed one waits for heal)
                self._connections.discard(connection)
                _close(connection)

    async def _drain(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        with contextlib.suppress(ConnectionError):
            async for _ in _chunks(reader):
                pass


def _close(connection: _Connection) -> None:
    for writer in (connection.client, connection.server):
        if writer is not None:
            writer.close()
    for pump in connection.pumps:
        if pump is not asyncio.current_task():
            pump.cancel()


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(65536):
        yield chunk
