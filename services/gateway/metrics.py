"""The gateway's Prometheus metrics (``services.gateway.middleware.observation`` counts and times the requests).

The metrics live in a :class:`GatewayMetrics` built by ``create_app`` around a registry of its
own (not prometheus_client's global one), so that several apps in one process never collide.
``GET /metrics`` renders it.

Requests are labelled by their route's path template (``/jobs/{job_id}``), never the raw path,
so the number of series stays bounded; a path no route matches is labelled ``other``, and so is
a method outside the usual ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from starlette.routing import compile_path
from starlette.types import Scope

from services.contract import JobName
from services.ledger.idempotency import TableSize

OTHER = "other"
"""The label of a route or method outside the known ones."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class GatewayMetrics:
    """The gateway's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "afterword_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "afterword_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        # The labelled children of the request and accepted-jobs metrics, looked up once per label set,
        # not per request.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._accepted_children: dict[JobName, Any] = {}
        self.jobs_accepted = Counter(
            "afterword_jobs_accepted",
            "Jobs recorded in the ledger (the 202 follows), by job name.",
            ["name"],
            registry=self.registry,
        )

        self.idempotency_keys = Gauge(
            "afterword_idempotency_keys",
            "Idempotency-Keys kept in Postgres: the table's live rows as Postgres' statistics estimate them "
            "(read at scrape time).",
            registry=self.registry,
        )
        self.idempotency_keys_bytes = Gauge(
            "afterword_idempotency_keys_bytes",
            "Disk space of the Idempotency-Key table, its indexes and TOAST included (read at scrape time).",
            registry=self.registry,
        )

    def idempotency_table(self, size: TableSize) -> None:
        """Set the Idempotency-Key table's gauges."""
        self.idempotency_keys.set(size.rows)
        self.idempotency_keys_bytes.set(size.bytes)

    def observe_request(self, *, method: str, route: str, status: int, duration: float) -> None:
        """Count and time one answered request."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.request_duration.labels(method=method, route=route),
            )
        children[0].inc()
        children[1].observe(duration)

    def accepted(self, names: Iterable[JobName]) -> None:
        """Count jobs whose ledger rows were just committed."""
        for name in names:
            child = self._accepted_children.get(name)
            if child is None:
                child = self._accepted_children[name] = self.jobs_accepted.labels(name=name.value)
            child.inc()

    def render(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry)


class RouteTemplates:
    """Finds the path template of a request that no route saw (answered by a middleware first).

    ``paths`` gives the templates (the OpenAPI schema's paths); it is read on first use.
    """

    def __init__(self, paths: Callable[[], Iterable[str]]) -> None:
        self._paths = paths
        self._compiled: Sequence[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str | None:
        """The template that ``path`` matches, or None."""
        if self._compiled is None:
            try:
                self._compiled = [(compile_path(template)[0], template) for template in self._paths()]
            except Exception:
                self._compiled = []
        return next((template for regex, template in self._compiled if regex.match(path)), None)


def route_label(scope: Scope, templates: RouteTemplates | None = None) -> str:
    """The route template of a request, after the app handled it; ``other`` when no route matches.

    The router records the matched route in ``scope["route"]``; a request answered before routing
    (413 on its Content-Length, an idempotent replay) is matched against ``templates``.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str) and template:
        return template
    if templates is not None:
        return templates.match(scope["path"]) or OTHER
    return OTHER
