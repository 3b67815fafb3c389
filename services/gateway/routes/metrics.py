"""Prometheus metrics of the gateway (``GET /metrics``, left out of the OpenAPI schema)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from services.core.failures import POSTGRES_FAILED
from services.gateway.dependencies import DbDep, MetricsDep
from services.ledger import idempotency as idempotency_keys

router = APIRouter()
log = logging.getLogger("afterword.gateway")

READ_TIMEOUT_SECONDS = 2.0
"""The scrape answers without the figures read from Postgres when they take longer."""


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway_metrics: MetricsDep, db: DbDep) -> Response:
    """The gateway's metrics in Prometheus' text exposition format (see the README's Observability).

    The Idempotency-Key table's size is read from Postgres' statistics now; when Postgres does not
    answer, the gauges keep their last value and the rest is served all the same.
    """
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            gateway_metrics.idempotency_table(await idempotency_keys.table_size(db))
    except POSTGRES_FAILED as exc:
        log.warning("could not read the Idempotency-Key table's size: %s", type(exc).__name__)
    return Response(gateway_metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
