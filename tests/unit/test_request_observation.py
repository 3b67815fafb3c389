"""The gateway's request middlewares on a small real app: request ids, route-template labels, counts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.metrics import OTHER, GatewayMetrics, RouteTemplates, route_label
from services.gateway.middleware.body_limit import BodyLimitMiddleware
from services.gateway.middleware.observation import RequestObservationMiddleware
from services.gateway.middleware.request_id import request_id_from


def build_app(metrics: GatewayMetrics) -> FastAPI:
    """Routes under a prefixed router, a failing route, and the gateway's middlewares in its order."""
    app = FastAPI()
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @items.post("/{item_id}")
    async def post_item(item_id: str, request: Request) -> dict[str, str]:
        await request.body()
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/request-id")
    async def request_id(request: Request) -> dict[str, object]:
        return {"state": request.state.request_id, "log_context": structlog.contextvars.get_contextvars()}

    app.include_router(items)
    app.add_middleware(BodyLimitMiddleware, max_bytes=1024)
    app.add_middleware(
        RequestObservationMiddleware, metrics=metrics, templates=RouteTemplates(lambda: app.openapi()["paths"])
    )
    return app


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
async def client(metrics: GatewayMetrics) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(build_app(metrics), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def requests_counted(metrics: GatewayMetrics) -> dict[tuple[str, str, str], float]:
    """(method, route, status) -> count, parsed from the exposition text."""
    counts = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "afterword_http_requests_total":
                counts[sample.labels["method"], sample.labels["route"], sample.labels["status"]] = sample.value
    return counts


async def test_requests_are_labelled_by_route_template(client: httpx.AsyncClient, metrics: GatewayMetrics) -> None:
    for item in ("a", "b", "c"):
        assert (await client.get(f"/items/{item}")).status_code == 200
    assert (await client.get("/nowhere")).status_code == 404
    assert (await client.get("/nowhere/else")).status_code == 404
    assert (await client.delete("/items/a")).status_code == 405
    assert (await client.request("BREW", "/items/a")).status_code == 405

    assert requests_counted(metrics) == {
        ("GET", "/items/{item_id}", "200"): 3,
        ("GET", OTHER, "404"): 2,
        ("DELETE", "/items/{item_id}", "405"): 1,
        (OTHER, "/items/{item_id}", "405"): 1,
    }


async def test_a_request_refused_before_routing_keeps_its_template(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    response = await client.post("/items/a", content=b"x" * 2048)

    assert response.status_code == 413
    assert requests_counted(metrics) == {("POST", "/items/{item_id}", "413"): 1}


async def test_an_unhandled_error_is_a_500_with_the_request_id(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "failing-1"})

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "failing-1"
    assert requests_counted(metrics) == {("GET", "/boom", "500"): 1}


async def test_the_request_id_reaches_the_route_and_the_log_context(client: httpx.AsyncClient) -> None:
    sent = await client.get("/request-id", headers={"X-Request-ID": "abc-123"})
    generated = await client.get("/request-id")

    assert sent.json() == {"state": "abc-123", "log_context": {"request_id": "abc-123"}}
    assert sent.headers["x-request-id"] == "abc-123"
    request_id = generated.headers["x-request-id"]
    assert generated.json() == {"state": request_id, "log_context": {"request_id": request_id}}
    assert structlog.contextvars.get_contextvars() == {}  # unbound once the request is over


async def test_duration_is_observed_per_route(client: httpx.AsyncClient, metrics: GatewayMetrics) -> None:
    await client.get("/items/a")
    await client.get("/items/b")

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    counts = {
        (s.labels["method"], s.labels["route"]): s.value
        for s in families["afterword_http_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {("GET", "/items/{item_id}"): 2}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"abc", True),
        (b"test-0123456789abcdef", True),
        (b"with spaces are printable", True),
        (b"x" * 200, True),
        (b"x" * 201, False),
        (b"", False),
        (b"tab\there", False),
        (b"new\nline", False),
        (None, False),
    ],
)
def test_request_id_from_the_header(sent: bytes | None, kept: bool) -> None:
    request_id = request_id_from(sent)

    if kept:
        assert sent is not None
        assert request_id == sent.decode()
    else:
        assert len(request_id) == 32
        int(request_id, 16)


def test_route_label_without_a_route_or_templates() -> None:
    assert route_label({"type": "http", "path": "/x"}) == OTHER
    templates = RouteTemplates(lambda: ["/jobs", "/jobs/{job_id}", "/jobs/{job_id}/retry"])
    assert route_label({"type": "http", "path": "/jobs/abc/retry"}, templates) == "/jobs/{job_id}/retry"
    assert route_label({"type": "http", "path": "/jobs/abc"}, templates) == "/jobs/{job_id}"
    assert route_label({"type": "http", "path": "/jobs/abc/other"}, templates) == OTHER


def test_route_templates_that_cannot_be_read_match_nothing() -> None:
    def broken() -> list[str]:
        raise RuntimeError("no schema")

    assert RouteTemplates(broken).match("/jobs") is None


def test_each_app_has_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.requests.labels(method="GET", route="/x", status="200").inc()

    assert b'route="/x"' in first.render()
    assert b'route="/x"' not in second.render()
