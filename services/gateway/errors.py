"""Errors the gateway answers with a status of their own, and their handlers."""

from __future__ import annotations

import socket

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.database import POSTGRES_GONE

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    # Connection failures only: a plain OSError (a missing file, say) is a bug, not an outage.
    ConnectionError,
    socket.gaierror,
    TimeoutError,
    *POSTGRES_GONE,
)
"""Errors that mean Postgres cannot be reached: answered with 503, never 500."""


class GatewayError(Exception):
    """Base of the gateway's own errors."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ServiceUnavailable(GatewayError):
    """A backing service (Postgres) cannot be reached: nothing was accepted."""

    status_code = 503


class NotFound(GatewayError):
    """No such job."""

    status_code = 404


class Conflict(GatewayError):
    """The job is not in a state that allows this."""

    status_code = 409


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "the jobs ledger (Postgres) is unavailable"}, status_code=503, headers={"Retry-After": "5"}
    )


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    headers = {"Retry-After": "5"} if isinstance(exc, ServiceUnavailable) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers of the gateway's errors on ``app``."""
    app.add_exception_handler(GatewayError, _handle)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _database_down)
