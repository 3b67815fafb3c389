"""Prometheus metrics of the gateway (``GET /metrics``, left out of the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from services.gateway.dependencies import MetricsDep

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway_metrics: MetricsDep) -> Response:
    """The gateway's metrics in Prometheus' text exposition format (see the README's Observability)."""
    return Response(gateway_metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
