"""A DATABASE_URL that Postgres refuses: every route that needs it is 503 and says why.

Postgres refuses the connection itself when the database named does not exist
(``invalid_catalog_name``, asyncpg's ``InvalidCatalogNameError``) or the role is not let in
(``InvalidAuthorizationSpecificationError``): errors of the server rather than of the socket,
which the gateway answered with 500. The server here is the local one, with a database name
nobody created, or a role that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.core.settings import Settings
from tests.support.database import ADMIN_DSN, database_dsn
from tests.support.in_process import in_process_gateway
from tests.support.redis_server import RedisServer

JOB = "5f0c6d1e2b7a4c8e9d3f1a2b3c4d5e6f"  # well formed; no such job
REFUSALS = {
    "its database does not exist": database_dsn(f"afterword_never_created_{uuid.uuid4().hex[:10]}"),
    "it refused the gateway's role or password": ADMIN_DSN.replace("//postgres@", "//no_such_role@", 1),
}


@pytest.fixture(scope="module", params=sorted(REFUSALS))
async def refused(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A gateway whose DATABASE_URL Postgres refuses, and the reason its 503s should give."""
    reason: str = request.param
    settings = Settings(
        _env_file=None, environment="test", api_keys=[], database_url=REFUSALS[reason], redis_url=redis_server.url
    )
    async with in_process_gateway(settings) as http:
        yield reason, http


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/process", None),
        ("POST", "/send", {"message": "hello"}),
        ("POST", "/signup", {"email": "ada@example.com", "name": "Ada"}),
        ("POST", "/jobs", {"name": "write_log", "payload": {"message": "hello"}}),
        ("GET", "/jobs", None),
        ("GET", f"/jobs/{JOB}", None),
        ("GET", f"/jobs/{JOB}?wait=0.2", None),
        ("GET", f"/jobs/{JOB}/events", None),
        ("DELETE", f"/jobs/{JOB}", None),
        ("POST", f"/jobs/{JOB}/retry", None),
        ("GET", "/stats", None),
    ],
)
async def test_every_route_on_the_ledger_is_503_saying_why(
    refused: tuple[str, httpx.AsyncClient], method: str, path: str, body: object
) -> None:
    reason, gateway = refused
    response = await gateway.request(method, path, json=body)

    assert response.status_code == 503, response.text
    assert reason in response.json()["detail"]
    assert response.headers["retry-after"] == "5"


async def test_a_keyed_post_is_503_too(refused: tuple[str, httpx.AsyncClient]) -> None:
    _, gateway = refused
    response = await gateway.post("/process", headers={"Idempotency-Key": uuid.uuid4().hex})

    assert response.status_code == 503, response.text


async def test_readyz_names_postgres_and_says_why(refused: tuple[str, httpx.AsyncClient]) -> None:
    reason, gateway = refused
    response = await gateway.get("/readyz")

    assert response.status_code == 503
    assert "postgres" in response.json()["down"]
    assert reason in response.json()["checks"]["postgres"]
