"""Postgres unreachable with an error that is a plain ``OSError``: the services read it as an outage.

asyncpg hands on whatever the socket raised. A refused connection is ``ConnectionRefusedError``,
but a host name with several addresses that all refuse is asyncio's plain
``OSError("Multiple exceptions: ...")`` (``localhost`` on a machine with IPv6, in compose), which
the gateway answered with 500. The connection attempts here are real: the test only makes a host
name resolve to two loopback addresses on a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest

from services.core.database import Connection, DatabaseUnreachable, _closing_when_out_of_step, create_pool
from services.core.settings import Settings
from services.gateway.identifiers import new_id
from tests.support.in_process import in_process_gateway
from tests.support.ports import free_port

TWO_ADDRESSES = "two-addresses.afterword.test"


@pytest.fixture
async def two_addresses() -> AsyncIterator[int]:
    """``TWO_ADDRESSES`` resolves to 127.0.0.1 and 127.0.0.2; yields a port nobody listens on there."""
    port = free_port()
    loop = asyncio.get_running_loop()
    resolve = loop.getaddrinfo

    async def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != TWO_ADDRESSES:
            return await resolve(host, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
            for address in ("127.0.0.1", "127.0.0.2")
        ]

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
    try:
        yield port
    finally:
        loop.getaddrinfo = resolve  # type: ignore[method-assign]


async def test_asyncpg_alone_raises_a_plain_oserror(two_addresses: int) -> None:
    # What the pool below turns into DatabaseUnreachable, seen without it.
    with pytest.raises(OSError, match=r"^Multiple exceptions") as caught:
        await asyncpg.connect(f"postgresql://postgres@{TWO_ADDRESSES}:{two_addresses}/afterword", timeout=2)
    assert not isinstance(caught.value, ConnectionError)


async def test_a_connection_that_cannot_be_made_is_database_unreachable(two_addresses: int) -> None:
    pool = await create_pool(f"postgresql://postgres@{TWO_ADDRESSES}:{two_addresses}/afterword", min_size=0, timeout=2)
    try:
        with pytest.raises(DatabaseUnreachable, match="Multiple exceptions") as caught:
            async with pool.acquire():
                pass
    finally:
        await pool.close()

    assert isinstance(caught.value, ConnectionError)


async def test_the_gateway_answers_503_not_500(two_addresses: int) -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        api_keys=[],
        database_url=f"postgresql://postgres@{TWO_ADDRESSES}:{two_addresses}/afterword",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    async with in_process_gateway(settings) as http:
        posted = await http.post("/process")
        read = await http.get(f"/jobs/{new_id()}")

    assert posted.status_code == 503, posted.text
    assert "Postgres" in posted.json()["detail"]
    assert read.status_code == 503, read.text


async def test_the_pools_connections_close_themselves_when_out_of_step(database_dsn: str) -> None:
    """A statement raising ``InternalClientError`` closes its connection; the pool hands out a new one.

    The error is raised here by the method the wrapper calls (Postgres stopping while a statement
    waits on a lock leaves a connection in that state only now and then); the connection, the pool
    and the replacement are real.
    """

    async def out_of_step(connection: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")

    pool = await create_pool(database_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as proxy:
            first = cast(Any, proxy)._con  # the connection behind the pool's proxy
            assert isinstance(first, Connection)
            with pytest.raises(asyncpg.InternalClientError):
                await _closing_when_out_of_step(out_of_step)(first, "SELECT 1")
            assert first.is_closed()

        assert await pool.fetchval("SELECT 1") == 1
        async with pool.acquire() as proxy:
            assert cast(Any, proxy)._con is not first
    finally:
        await pool.close()
