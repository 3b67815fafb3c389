"""The body-limit middleware: bodies over the limit get 413, with or without a Content-Length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.gateway.middleware.body_limit import BodyLimitMiddleware

LIMIT = 1024
TOO_LARGE = {"detail": f"request body larger than {LIMIT} bytes"}


async def _echo_length(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body)})


async def _no_body(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _starlette(**kwargs: object) -> Starlette:
    routes = [Route("/echo", _echo_length, methods=["POST"]), Route("/ignore", _no_body, methods=["POST", "GET"])]
    return Starlette(routes=routes, **kwargs)  # type: ignore[arg-type]


def _client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test")  # type: ignore[arg-type]


async def _chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = min(size, total - sent)
        sent += chunk
        yield b"x" * chunk


async def test_a_body_under_the_limit_passes() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        response = await client.post("/echo", content=b"x" * 100)

    assert response.status_code == 200
    assert response.json() == {"length": 100}


async def test_a_body_of_exactly_the_limit_passes() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        response = await client.post("/echo", content=b"x" * LIMIT)
        chunked = await client.post("/echo", content=_chunks(LIMIT))

    assert (response.status_code, response.json()) == (200, {"length": LIMIT})
    assert (chunked.status_code, chunked.json()) == (200, {"length": LIMIT})


async def test_a_content_length_over_the_limit_gets_413_json() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        response = await client.post("/echo", content=b"x" * (LIMIT + 1))

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == TOO_LARGE


async def test_a_content_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        response = await client.post("/ignore", content=b"x" * (LIMIT * 4))

    assert response.status_code == 413
    assert response.json() == TOO_LARGE


async def test_a_small_chunked_body_passes() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        response = await client.post("/echo", content=_chunks(600))

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == {"length": 600}


async def test_a_chunked_body_over_the_limit_gets_413() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        response = await client.post("/echo", content=_chunks(LIMIT * 4))

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


async def test_a_chunked_body_over_the_limit_gets_413_as_app_middleware() -> None:
    app = _starlette(middleware=[Middleware(BodyLimitMiddleware, max_bytes=LIMIT)])

    async with _client(app) as client:
        response = await client.post("/echo", content=_chunks(LIMIT * 4))

    assert response.status_code == 413
    assert response.json() == TOO_LARGE


class _Note(BaseModel):
    text: str


async def _json_chunks(text_bytes: int) -> AsyncIterator[bytes]:
    yield b'{"text": "'
    async for chunk in _chunks(text_bytes):
        yield chunk
    yield b'"}'


async def test_a_chunked_json_body_over_the_limit_gets_413_from_a_fastapi_route() -> None:
    # How the gateway uses it: FastAPI, add_middleware, a route with a pydantic body.
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_bytes=LIMIT)

    @app.post("/notes")
    async def create_note(note: _Note) -> dict[str, int]:
        return {"length": len(note.text)}

    async with _client(app) as client:
        small = await client.post("/notes", content=_json_chunks(100), headers={"content-type": "application/json"})
        large = await client.post(
            "/notes", content=_json_chunks(LIMIT * 4), headers={"content-type": "application/json"}
        )

    assert (small.status_code, small.json()) == (200, {"length": 100})
    assert large.status_code == 413
    assert large.json() == TOO_LARGE


async def test_an_unparseable_content_length_falls_back_to_counting() -> None:
    async with _client(BodyLimitMiddleware(_starlette(), max_bytes=LIMIT)) as client:
        small = await client.post("/echo", content=b"x" * 10, headers={"content-length": "ten"})

    assert small.status_code == 200
    assert small.json() == {"length": 10}
