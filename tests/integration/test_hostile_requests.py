"""Generated hostile requests on every route, body field, query parameter and header: never a 5xx.

The routes, their body fields and their query parameters are read from the gateway's OpenAPI
schema (and each job's payload fields from the contract), so a route added later is covered
without naming it here. Each request goes to the real gateway process; the values are those of
``tests.support.hostile_values`` (NUL, lone surrogates, line breaks, numbers JSON cannot carry,
deep nesting, broken percent escapes, header bytes past ASCII).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.contract import PAYLOADS, JobName, JobStatus
from services.core.settings import Settings
from services.gateway.app import create_app
from tests.support import hostile_values as hostile
from tests.support.jobs_client import wait_for_job
from tests.support.lone_gateway import lone_gateway

SCHEMA: dict[str, Any] = create_app(Settings(_env_file=None, environment="test", api_keys=[])).openapi()
OPERATIONS = [(method.upper(), path, op) for path, item in SCHEMA["paths"].items() for method, op in item.items()]
UNKNOWN_JOB = "5f0c6d1e2b7a4c8e9d3f1a2b3c4d5e6f"  # well formed; no such job

JOB_ROUTES = sorted((method, path) for method, path, _ in OPERATIONS if "{job_id}" in path)
QUERY_ROUTES = {
    path: sorted(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
    for method, path, op in OPERATIONS
    if method == "GET" and any(p["in"] == "query" for p in op.get("parameters", []))
}
POST_ROUTES = sorted(path for method, path, _ in OPERATIONS if method == "POST")
OPEN_GETS = sorted(path for method, path, _ in OPERATIONS if method == "GET" and "{" not in path)
OPEN_GETS += ["/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/dashboard/static/app.js"]


def body_fields(path: str) -> list[str]:
    """The top-level fields of a POST route's JSON body, as its schema declares them."""
    content = SCHEMA["paths"][path]["post"].get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    for option in [schema, *schema.get("anyOf", [])]:
        if "$ref" in option:
            name = option["$ref"].rpartition("/")[2]
            return sorted(SCHEMA["components"]["schemas"][name].get("properties", {}))
    return []


PAYLOAD_FIELDS = sorted({field for model in PAYLOADS.values() for field in model.model_fields})


def runs(examples: int) -> settings:
    """Hypothesis settings for ``examples`` requests (no deadline: each is a round trip to the gateway)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def served(response: httpx.Response) -> None:
    """The gateway answered without a server error, with a request id, in JSON that is UTF-8."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:2000]}"
    assert response.headers.get("x-request-id")
    if response.content and response.headers.get("content-type", "").startswith("application/json"):
        response.content.decode("utf-8")  # strictly: no lone surrogate's three bytes
        json.loads(response.content)


def refused_by_name(response: httpx.Response, *, names: set[str]) -> None:
    """A 422 names only fields that were sent (under ``query``)."""
    if response.status_code == 422:
        for error in response.json()["detail"]:
            assert error["loc"][0] == "query", error
            assert error["loc"][1] in names, error


@pytest.fixture(scope="module")
async def finished_job(base_url: str) -> str:
    """The id of a job that has ended (so ``?wait`` answers at once)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        response = await http.post("/process")
        assert response.status_code == 202, response.text
        job_id: str = response.json()["jobs"][0]["id"]
        await wait_for_job(http, job_id)
    return job_id


# Path parameters


@runs(80)
@given(route=st.sampled_from(JOB_ROUTES), segment=hostile.path_segments)
@example(route=("GET", "/jobs/{job_id}"), segment="%00")
@example(route=("GET", "/jobs/{job_id}/events"), segment="%00")
@example(route=("DELETE", "/jobs/{job_id}"), segment="%00")
@example(route=("POST", "/jobs/{job_id}/retry"), segment="%00")
@example(route=("GET", "/jobs/{job_id}"), segment="%ED%A0%80")
async def test_any_job_id_on_any_job_route_finds_nothing(
    client: httpx.AsyncClient, route: tuple[str, str], segment: str
) -> None:
    method, template = route
    response = await client.request(method, template.replace("{job_id}", segment) + "?wait=0.1")

    served(response)
    if "/" not in unquote(segment) and segment not in ("", ".", ".."):  # one segment: the route's id
        assert response.status_code == 404, response.text
        assert response.json()["detail"].startswith("no job with id ")
    else:
        assert not 200 <= response.status_code < 300, "no job has a made-up id"


# Query parameters

NUMBERS = ["-1", "0", "1", "1.5", "60", "61", "1e400", "nan", "inf", "-inf", "9" * 400, "0x10", " 1", "1_0"]
query_values = st.one_of(
    hostile.text.map(lambda value: value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")),
    st.sampled_from([*NUMBERS, *JobStatus, *JobName]),
    st.tuples(st.datetimes(timezones=st.just(None)).map(lambda d: d.isoformat() + "+00:00"), hostile.text)
    .map(lambda pair: json.dumps(list(pair)).encode())
    .map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),  # cursors holding anything
)


queries = st.sampled_from(sorted(QUERY_ROUTES)).flatmap(
    lambda path: st.tuples(
        st.just(path),
        st.dictionaries(st.sampled_from(QUERY_ROUTES[path]), query_values, max_size=len(QUERY_ROUTES[path])),
    )
)


@runs(100)
@given(query=queries)
@example(query=("/jobs", {"cursor": base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00","a\\u0000b"]').decode()}))
@example(query=("/jobs", {"cursor": base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00","a\\ud800b"]').decode()}))
async def test_any_query_parameter_is_answered_or_refused_by_name(
    client: httpx.AsyncClient, finished_job: str, query: tuple[str, dict[str, str]]
) -> None:
    path, params = query
    response = await client.get(path.replace("{job_id}", finished_job), params=params)

    served(response)
    assert response.status_code in (200, 422), response.text
    refused_by_name(response, names=set(params))


# Bodies


def bodies(path: str) -> st.SearchStrategy[str]:
    """JSON bodies for POST ``path``: objects of its fields with hostile values, or any JSON value."""
    fields = body_fields(path)
    if path != "/jobs":
        return st.one_of(hostile.json_objects(fields), hostile.json_values)
    names = st.one_of(st.sampled_from([*JobName]).map(json.dumps), hostile.json_values)
    jobs = st.fixed_dictionaries(
        {"name": names, "payload": st.one_of(hostile.json_objects(PAYLOAD_FIELDS), hostile.json_values)},
        optional={"defer_by": hostile.json_values},
    ).map(lambda members: "{" + ",".join(f'"{key}":{value}' for key, value in members.items()) + "}")
    return st.one_of(jobs, hostile.json_objects(fields))


CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/plain",
    b"application/x-www-form-urlencoded",
]


posts = st.sampled_from(POST_ROUTES).flatmap(lambda path: st.tuples(st.just(path), bodies(path)))


@runs(200)
@given(post=posts, content_type=st.one_of(st.sampled_from(CONTENT_TYPES), hostile.header_values))
@example(post=("/send", r'{"message":"a\ud800b"}'), content_type=b"application/json")
@example(post=("/send", '{"message":"a\ud800b"}'), content_type=b"application/json")  # as raw bytes
@example(
    post=("/jobs", '{"name":"write_log","payload":{"message":"m"},"defer_by":NaN}'), content_type=b"application/json"
)
@example(post=("/signup", '{"email":"a@example.com","name":"x"}'), content_type=b"text/plain")
async def test_any_body_on_any_post_route_is_accepted_or_refused(
    client: httpx.AsyncClient, post: tuple[str, str], content_type: bytes
) -> None:
    path, document = post
    response = await client.post(
        path.replace("{job_id}", UNKNOWN_JOB), content=hostile.utf8(document), headers={b"content-type": content_type}
    )

    served(response)
    assert response.status_code in (202, 400, 404, 413, 422), response.text


# Headers

HEADERS = [b"X-Request-ID", b"Idempotency-Key", b"Authorization", b"X-API-Key", b"Content-Type", b"Host"]
REQUESTS = [
    ("GET", "/jobs?limit=1", None),
    ("GET", "/jobs/{finished}", None),
    ("GET", "/stats", None),
    ("GET", "/dashboard", None),
    ("DELETE", f"/jobs/{UNKNOWN_JOB}", None),
    ("POST", "/send", b'{"message": "hostile headers"}'),
    ("POST", "/jobs", b'{"name": "write_log", "payload": {"message": "hostile headers"}}'),
]


@runs(100)
@given(
    request=st.sampled_from(REQUESTS),
    headers=st.dictionaries(st.sampled_from(HEADERS), hostile.header_values, min_size=1),
)
@example(request=REQUESTS[0], headers={b"Host": b"["})
@example(request=REQUESTS[5], headers={b"Host": b"[", b"Idempotency-Key": b"k\xff"})
async def test_any_header_value_is_answered_without_a_server_error(
    client: httpx.AsyncClient, finished_job: str, request: tuple[str, str, bytes | None], headers: dict[bytes, bytes]
) -> None:
    method, path, body = request
    response = await client.request(method, path.replace("{finished}", finished_job), content=body, headers=headers)

    served(response)


KEY = "hostile-key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
async def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A gateway of its own started with an API key (the shared stack has none), so the key checks run."""
    async with lone_gateway(tmp_path_factory.mktemp("hostile-keyed"), api_keys=KEY, label="keyed-gateway") as (url, _):
        yield url


@pytest.fixture
async def keyed(keyed_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the keyed gateway, sending no key unless a test adds one."""
    async with httpx.AsyncClient(base_url=keyed_url, timeout=15) as http:
        yield http


credentials = st.one_of(
    hostile.header_values,
    hostile.header_values.map(lambda value: b"Bearer " + value),
    st.sampled_from([KEY.encode(), b"Bearer " + KEY.encode(), b"bearer " + KEY.encode(), KEY.encode() + b"\xff"]),
).map(lambda value: value.strip(b" \t"))


@runs(80)
@given(
    request=st.sampled_from(REQUESTS[2:]),
    headers=st.dictionaries(st.sampled_from(HEADERS), hostile.header_values, min_size=1),
    authorization=st.none() | credentials,
    api_key=st.none() | credentials,
)
@example(request=REQUESTS[5], headers={b"Idempotency-Key": b"k"}, authorization=b"Bearer \xff", api_key=None)
async def test_any_credentials_are_checked_without_a_server_error(
    keyed: httpx.AsyncClient,
    request: tuple[str, str, bytes | None],
    headers: dict[bytes, bytes],
    authorization: bytes | None,
    api_key: bytes | None,
) -> None:
    method, path, body = request
    sent = dict(headers)
    if authorization is not None:
        sent[b"Authorization"] = authorization
    if api_key is not None:
        sent[b"X-API-Key"] = api_key
    response = await keyed.request(method, path, content=body, headers=sent)

    served(response)
    assert KEY not in response.text


# Everything else: the dashboard, its files, the docs, health and metrics, other methods


@runs(60)
@given(
    path=st.one_of(
        st.sampled_from(OPEN_GETS),
        hostile.path_segments.map(lambda segment: f"/dashboard/static/{segment}"),
        hostile.path_segments.map(lambda segment: f"/{segment}"),
    ),
    query=hostile.path_segments,
    method=st.sampled_from(["GET", "GET", "HEAD", "OPTIONS", "PUT", "PATCH"]),
)
@example(path="/dashboard/static/%00", query="", method="GET")
async def test_any_other_request_is_answered_without_a_server_error(
    client: httpx.AsyncClient, path: str, query: str, method: str
) -> None:
    response = await client.request(method, f"{path}?{query}")

    served(response)
