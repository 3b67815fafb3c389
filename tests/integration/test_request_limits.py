"""The request head is bounded: oversized headers are refused with 431, never read on and on.

The gateway's HTTP protocol stops reading a request whose request line and headers pass
MAX_HEADER_BYTES (32 KiB by default, the stack's setting here): it answers 431 and closes the
connection, so a client cannot make the server hold a head of any size.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import httpx

DEFAULT_LIMIT = 32 * 1024
CHUNK = b"a" * 65_536


async def _connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(base_url)
    assert url.hostname is not None
    return await asyncio.open_connection(url.hostname, url.port or 80)


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(15):
        return await reader.readline()


async def test_a_one_megabyte_host_header_is_refused_with_431(base_url: str, client: httpx.AsyncClient) -> None:
    reader, writer = await _connect(base_url)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: " + b"h" * 1_000_000 + b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()  # the server may stop reading and close before it has all of it
        assert (await _status_line(reader)).startswith(b"HTTP/1.1 431 ")
    finally:
        writer.close()
    assert (await client.get("/healthz")).status_code == 200, "the gateway serves on"


async def test_a_header_block_that_never_ends_is_cut_off(base_url: str) -> None:
    reader, writer = await _connect(base_url)
    answer = asyncio.create_task(_status_line(reader))
    closed = False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ")
        # The server answers 431, reads on (and drops) for a moment so the client sees the answer,
        # then closes: writing on fails. A server that read the head on and on never closes.
        async with asyncio.timeout(30):
            while not closed:
                try:
                    writer.write(CHUNK)
                    await writer.drain()
                except ConnectionError:
                    closed = True
        assert (await answer).startswith(b"HTTP/1.1 431 ")
    finally:
        answer.cancel()
        writer.close()
    assert closed, "the server kept reading the never-ending head"


async def test_headers_within_the_limit_are_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Padding": "a" * (DEFAULT_LIMIT - 1024)})

    assert response.status_code == 200


async def test_a_body_larger_than_the_head_limit_sent_with_its_head_is_read(base_url: str) -> None:
    body = b'{"message": "padded"' + b" " * (DEFAULT_LIMIT + 16_000) + b"}"  # JSON's blanks: a valid body
    head = f"POST /send HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    reader, writer = await _connect(base_url)
    try:
        writer.write(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)  # head and body in one write
        await writer.drain()
        assert (await _status_line(reader)).startswith(b"HTTP/1.1 202 ")
    finally:
        writer.close()


async def test_pipelined_requests_are_each_served(base_url: str) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    reader, writer = await _connect(base_url)
    try:
        writer.write(request * 3 + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(15):
            answers = await reader.read()
        assert answers.count(b"HTTP/1.1 200 OK\r\n") == 4
    finally:
        writer.close()
