"""API keys, end to end: a gateway of its own, started with API_KEYS, driven over HTTP.

The shared stack runs without keys; this module starts a second gateway process with two keys on
its own database and Redis (no worker: nothing here waits for a job to run, and the shared
stack's worker must not sweep these jobs into its queue).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr

from services.gateway.app import create_app
from services.gateway.auth import OPEN_METHODS
from services.settings import Settings
from tests.support.lone_gateway import lone_gateway

KEY_ONE = "key-one-" + uuid.uuid4().hex
KEY_TWO = "key-two-" + uuid.uuid4().hex
WRITE_LOG = {"name": "write_log", "payload": {"message": "from the auth tests"}}


@pytest.fixture(scope="module")
async def secured_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The URL of a gateway started with two API keys (blanks around them, to be trimmed)."""
    workdir = tmp_path_factory.mktemp("auth")
    async with lone_gateway(workdir, api_keys=f" {KEY_ONE} , {KEY_TWO} ", label="secured-gateway") as (url, gateway):
        yield url
        logged = gateway.output()
        assert KEY_ONE not in logged, "a key was logged"
        assert KEY_TWO not in logged, "a key was logged"


@pytest.fixture
async def secured(secured_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the secured gateway, sending no key unless a test adds one."""
    async with httpx.AsyncClient(base_url=secured_url, timeout=15) as http:
        yield http


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]
    assert KEY_ONE not in response.text
    assert KEY_TWO not in response.text


async def test_a_post_without_a_key_is_401(secured: httpx.AsyncClient) -> None:
    for path, body in (("/jobs", WRITE_LOG), ("/process", None), ("/send", {"message": "hi"})):
        assert_unauthorized(await secured.post(path, json=body))


def mutating_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route of the gateway that does not only read."""
    app = create_app(Settings(_env_file=None, api_keys=[SecretStr(KEY_ONE)]))
    found = []
    for route in iter_route_contexts(app.routes):  # included routers' routes with their prefixes
        if route.path is not None:
            found += [(method, route.path) for method in sorted((route.methods or set()) - OPEN_METHODS)]
    return found


async def test_every_mutating_route_is_401_without_a_key(secured: httpx.AsyncClient) -> None:
    routes = mutating_routes()
    # The list comes from the app itself, so a new route is checked without being named here.
    assert {("DELETE", "/jobs/{job_id}"), ("POST", "/jobs/{job_id}/retry"), ("POST", "/jobs")} <= set(routes)

    for method, template in routes:
        path = re.sub(r"\{[^}]+\}", uuid.uuid4().hex, template)
        response = await secured.request(method, path)
        assert response.status_code == 401, f"{method} {template} answered {response.status_code} without a key"
        assert_unauthorized(response)


async def test_a_post_with_a_wrong_key_is_401(secured: httpx.AsyncClient) -> None:
    assert_unauthorized(await secured.post("/jobs", json=WRITE_LOG, headers={"Authorization": "Bearer wrong"}))
    assert_unauthorized(await secured.post("/jobs", json=WRITE_LOG, headers={"X-API-Key": "wrong"}))
    assert_unauthorized(await secured.post("/jobs", json=WRITE_LOG, headers={"Authorization": f"Basic {KEY_ONE}"}))
    assert_unauthorized(await secured.post("/jobs", json=WRITE_LOG, headers={"X-API-Key": KEY_ONE[:-1]}))


async def test_the_key_is_checked_before_the_body(secured: httpx.AsyncClient) -> None:
    assert_unauthorized(await secured.post("/signup", json={"email": "not-an-email"}))


async def test_a_bearer_key_is_accepted(secured: httpx.AsyncClient) -> None:
    response = await secured.post("/jobs", json=WRITE_LOG, headers={"Authorization": f"Bearer {KEY_ONE}"})

    assert response.status_code == 202, response.text


async def test_an_x_api_key_is_accepted(secured: httpx.AsyncClient) -> None:
    response = await secured.post("/process", headers={"X-API-Key": KEY_ONE})

    assert response.status_code == 202, response.text


async def test_every_configured_key_works(secured: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": f"Bearer {KEY_TWO}"}, {"X-API-Key": KEY_TWO}):
        response = await secured.post("/send", json={"message": "second key"}, headers=headers)
        assert response.status_code == 202, response.text


async def test_reads_stay_open(secured: httpx.AsyncClient) -> None:
    accepted = await secured.post("/jobs", json=WRITE_LOG, headers={"X-API-Key": KEY_ONE})
    job_id = accepted.json()["id"]

    job = await secured.get(f"/jobs/{job_id}")
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "queued"
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert (await secured.get(path)).status_code == 200, path


async def test_the_openapi_schema_declares_the_keys_on_writes_only(secured: httpx.AsyncClient) -> None:
    schema = (await secured.get("/openapi.json")).json()

    schemes = schema["components"]["securitySchemes"].values()
    assert {(scheme["type"], scheme.get("scheme") or scheme.get("name")) for scheme in schemes} == {
        ("http", "bearer"),
        ("apiKey", "X-API-Key"),
    }
    assert schema["paths"]["/jobs"]["post"]["security"]
    assert "security" not in schema["paths"]["/jobs/{job_id}"]["get"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_an_unauthenticated_request_cannot_claim_an_idempotency_key(secured: httpx.AsyncClient) -> None:
    key = uuid.uuid4().hex

    assert_unauthorized(await secured.post("/process", headers={"Idempotency-Key": key}))
    first = await secured.post("/process", headers={"Idempotency-Key": key, "X-API-Key": KEY_ONE})
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers

    assert_unauthorized(await secured.post("/process", headers={"Idempotency-Key": key}))
    again = await secured.post("/process", headers={"Idempotency-Key": key, "Authorization": f"Bearer {KEY_ONE}"})
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
