"""API keys, end to end: a gateway of its own, started with API_KEYS and API_READ_KEYS, driven over HTTP.

The shared stack runs without keys; this module starts a second gateway process with two full keys
and a read key on its own database and Redis (no worker: nothing here waits for a job to run, and
the shared stack's worker must not sweep these jobs into its queue).

The routes are enumerated from the app itself, so a route added later is checked by these tests
without being named here: every GET that is not one of the open endpoints or pages needs a key (a
read key will do), and every other method needs a full key (a read key gets 403).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from services.core.settings import Settings
from services.gateway.app import create_app
from tests.support.lone_gateway import lone_gateway

KEY_ONE = "key-one-" + uuid.uuid4().hex
KEY_TWO = "key-two-" + uuid.uuid4().hex
READ_KEY = "read-key-" + uuid.uuid4().hex
KEYS = (KEY_ONE, KEY_TWO, READ_KEY)
WRITE_LOG = {"name": "write_log", "payload": {"message": "from the auth tests"}}

OPEN_ENDPOINTS = {"/healthz", "/readyz", "/metrics"}
"""Open by default (OPEN_ENDPOINTS): probes and Prometheus."""
PAGES = {"/dashboard", "/docs", "/redoc"}
"""Pages that hold no data: they load, and their data calls need the key."""
PLAIN_ROUTES = {"/openapi.json", "/dashboard/static", "/docs/static"}
"""Routes outside FastAPI's dependencies (the schema, static files): open, and holding no data."""
READ_METHODS = {"GET", "HEAD"}


def _operations() -> list[tuple[str, str]]:
    """Every (method, path template) of the gateway's API routes, from the app itself."""
    app = create_app(Settings(_env_file=None, api_keys="k"))
    routes = list(iter_route_contexts(app.routes))
    plain = {route.path for route in routes if not isinstance(route.original_route, APIRoute)}
    assert plain == PLAIN_ROUTES, "a route outside FastAPI's dependencies gets no key check: decide what it needs"
    return sorted(
        {
            (method, route.path)
            for route in routes
            if isinstance(route.original_route, APIRoute) and route.path is not None
            for method in route.methods or ()
        }
    )


OPERATIONS = _operations()
DATA_READS = [(m, p) for m, p in OPERATIONS if m in READ_METHODS and p not in OPEN_ENDPOINTS | PAGES]
CHANGES = [(m, p) for m, p in OPERATIONS if m not in READ_METHODS]


@pytest.fixture(scope="module")
async def secured_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The URL of a gateway started with two API keys and a read key (blanks around them, to be trimmed)."""
    workdir = tmp_path_factory.mktemp("auth")
    async with lone_gateway(
        workdir,
        api_keys=f" {KEY_ONE} , {KEY_TWO} ",
        extra_env={"API_READ_KEYS": f" {READ_KEY} "},
        label="secured-gateway",
    ) as (url, gateway):
        yield url
        logged = gateway.output()
        for key in KEYS:
            assert key not in logged, "a key was logged"


@pytest.fixture
async def secured(secured_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the secured gateway, sending no key unless a test adds one."""
    async with httpx.AsyncClient(base_url=secured_url, timeout=15) as http:
        yield http


@pytest.fixture(scope="module")
async def waiting_job(secured_url: str) -> str:
    """A job deferred by an hour (no worker runs it): what the routes' ``{job_id}`` is."""
    async with httpx.AsyncClient(base_url=secured_url, timeout=15) as http:
        response = await http.post("/jobs", json={**WRITE_LOG, "defer_by": 3600}, headers={"X-API-Key": KEY_ONE})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _url(path: str, job_id: str) -> str:
    try:
        return path.format(job_id=job_id)
    except KeyError as missing:
        raise AssertionError(f"give {path}'s parameter {missing} a value in this test") from None


async def _status(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str] | None = None) -> int:
    """The status of a request; an event stream is closed once its head arrived."""
    body: dict[str, object] | None = {} if method not in READ_METHODS else None
    async with http.stream(method, url, json=body, headers=headers) as response:
        return response.status_code


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]
    for key in KEYS:
        assert key not in response.text


async def test_a_post_without_a_key_is_401(secured: httpx.AsyncClient) -> None:
    for path, body in (("/jobs", WRITE_LOG), ("/process", None), ("/send", {"message": "hi"})):
        assert_unauthorized(await secured.post(path, json=body))


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


@pytest.mark.parametrize(("method", "path"), DATA_READS)
async def test_every_data_read_needs_a_key_and_a_read_key_will_do(
    secured: httpx.AsyncClient, waiting_job: str, method: str, path: str
) -> None:
    url = _url(path, waiting_job)

    assert await _status(secured, method, url) == 401
    assert await _status(secured, method, url, {"X-API-Key": "wrong"}) == 401
    assert await _status(secured, method, url, {"X-API-Key": READ_KEY}) == 200
    assert await _status(secured, method, url, {"Authorization": f"Bearer {READ_KEY}"}) == 200
    assert await _status(secured, method, url, {"X-API-Key": KEY_TWO}) == 200, "a full key reads as well"


@pytest.mark.parametrize(("method", "path"), CHANGES)
async def test_every_change_needs_a_full_key_and_a_read_key_gets_403(
    secured: httpx.AsyncClient, waiting_job: str, method: str, path: str
) -> None:
    url = _url(path, waiting_job)

    assert await _status(secured, method, url) == 401
    for headers in ({"X-API-Key": READ_KEY}, {"Authorization": f"Bearer {READ_KEY}"}):
        refused = await secured.request(method, url, json={}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "read" in refused.json()["detail"]
        assert READ_KEY not in refused.text
    job = await secured.get(f"/jobs/{waiting_job}", headers={"X-API-Key": READ_KEY})
    assert job.json()["status"] == "deferred", "a refused request changed nothing"
    # A full key gets past the check (to the route's own answer: here 404 for a job that is not there).
    assert await _status(secured, method, _url(path, "no-such-job"), {"X-API-Key": KEY_ONE}) not in (401, 403)


def test_the_enumeration_found_the_routes() -> None:
    assert ("GET", "/jobs/{job_id}/events") in DATA_READS
    assert ("GET", "/stats") in DATA_READS
    assert ("DELETE", "/jobs/{job_id}") in CHANGES
    assert ("POST", "/jobs/{job_id}/retry") in CHANGES


@pytest.mark.parametrize("path", sorted(OPEN_ENDPOINTS | PAGES | {"/openapi.json"}))
async def test_probes_metrics_and_pages_stay_open(secured: httpx.AsyncClient, path: str) -> None:
    response = await secured.get(path)

    assert response.status_code != 401
    assert response.status_code in (200, 503), response.text  # /readyz: 503, no worker runs here


async def test_a_read_key_reads_the_job_it_could_not_change(secured: httpx.AsyncClient, waiting_job: str) -> None:
    job = await secured.get(f"/jobs/{waiting_job}", headers={"X-API-Key": READ_KEY})

    assert job.status_code == 200
    assert job.json()["payload"] == WRITE_LOG["payload"]
    listed = await secured.get("/jobs", headers={"X-API-Key": READ_KEY})
    assert waiting_job in [j["id"] for j in listed.json()["jobs"]]


async def test_the_openapi_schema_says_which_key_each_operation_needs(secured: httpx.AsyncClient) -> None:
    schema = (await secured.get("/openapi.json")).json()

    schemes = schema["components"]["securitySchemes"]
    assert {(scheme["type"], scheme.get("scheme") or scheme.get("name")) for scheme in schemes.values()} == {
        ("http", "bearer"),
        ("apiKey", "X-API-Key"),
    }
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            requirements = operation.get("security", [])
            roles = {role for requirement in requirements for listed in requirement.values() for role in listed}
            if path in OPEN_ENDPOINTS | PAGES:
                assert "security" not in operation, path
            elif method.upper() in READ_METHODS:
                assert roles == {"read"}, (method, path)
                assert "401" in operation["responses"], (method, path)
            else:
                assert roles == {"full"}, (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            if "security" in operation:
                assert len(requirements) == len(schemes), "either scheme will do"


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


async def test_open_endpoints_can_be_closed(tmp_path: Path) -> None:
    env = {"API_READ_KEYS": READ_KEY, "OPEN_ENDPOINTS": "healthz"}
    async with (
        lone_gateway(tmp_path, api_keys=KEY_ONE, extra_env=env, label="closed-probes-gateway") as (url, _gateway),
        httpx.AsyncClient(base_url=url, timeout=15) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        for path in ("/readyz", "/metrics"):
            assert_unauthorized(await http.get(path))
            answer = await http.get(path, headers={"Authorization": f"Bearer {READ_KEY}"})
            assert answer.status_code in (200, 503), path  # /readyz: 503, no worker runs here
        assert "security" in (await http.get("/openapi.json")).json()["paths"]["/readyz"]["get"]
