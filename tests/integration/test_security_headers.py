"""Every response carries the browser security headers, whichever layer answered it."""

from __future__ import annotations

import uuid

import httpx
import pytest

EXPECTED = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy's directives: name -> sources."""
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        if part.strip():
            name, *sources = part.split()
            parsed[name.lower()] = sources
    return parsed


def assert_secured(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get_list(name) == [value], (response.request.url, name)
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, response.request.url
    policy = directives(policies[0])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"], "no inline script, no eval, no other origin"
    assert policy["default-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/healthz", {}, 200),
        ("GET", "/jobs?limit=1", {}, 200),
        ("GET", "/jobs/no-such-job", {}, 404),
        ("GET", "/no-such-page", {}, 404),
        ("POST", "/jobs", {"json": {"name": "nope"}}, 422),
        ("POST", "/send", {"content": b"x" * 70_000, "headers": {"Content-Type": "application/json"}}, 413),
        ("GET", "/dashboard", {}, 200),
        ("GET", "/dashboard/static/app.js", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/openapi.json", {}, 200),
        ("GET", "/docs", {}, 200),
        ("GET", "/redoc", {}, 200),
    ],
)
async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    assert response.status_code == status, response.text[:300]
    assert_secured(response)
    if path != "/redoc":  # ReDoc writes <style> elements: the one page whose styles may be inline
        assert directives(response.headers["content-security-policy"])["style-src"] == ["'self'"]


async def test_an_idempotent_replay_carries_them_too(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": f"security-headers-{uuid.uuid4().hex}"}
    first = await client.post("/process", headers=headers)
    again = await client.post("/process", headers=headers)

    assert again.headers.get("idempotent-replayed") == "true"
    for response in (first, again):
        assert_secured(response)
