"""Errors the gateway answers with a status of their own, and their handlers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.core.failures import POSTGRES_UNREACHABLE

LEDGER_UNAVAILABLE = "the jobs ledger (Postgres) is unavailable"


def why_unavailable(exc: BaseException) -> str | None:
    """Postgres' reason for refusing the gateway, in words a client may read, or None for an outage.

    A missing database or refused credentials do not heal by themselves like a restart does:
    the 503 and ``/readyz`` say which (without the database's or the role's name).
    """
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "its database does not exist"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return "it refused the gateway's role or password"
    return None


def ledger_unavailable(exc: BaseException) -> str:
    """What a 503 says when Postgres failed with ``exc`` (one of ``services.core.failures.POSTGRES_UNREACHABLE``)."""
    reason = why_unavailable(exc)
    return LEDGER_UNAVAILABLE if reason is None else f"{LEDGER_UNAVAILABLE}: {reason}"


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
    return JSONResponse({"detail": ledger_unavailable(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    headers = {"Retry-After": "5"} if isinstance(exc, ServiceUnavailable) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MAX_DEPTH = 32


def json_safe(value: Any, *, depth: int = 0) -> Any:
    """``value`` (a 422's errors, echoing the client's input) as JSON can carry it in UTF-8.

    A validation error names the field and echoes what was sent there, which can be anything
    Python's JSON parser accepts: a lone surrogate (``"\\ud800"``, unencodable in UTF-8), NaN
    or Infinity (not JSON), bytes that are not UTF-8, nesting past the recursion limit. Each is
    rendered as what it is: a lone surrogate as U+FFFD, a non-finite number as its name, bytes
    decoded with U+FFFD for what is not UTF-8, and whatever lies deeper than 32 levels as "…".
    """
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {json_safe(str(key)): json_safe(item, depth=depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item, depth=depth + 1) for item in value]
    return json_safe(jsonable_encoder(value), depth=depth + 1)  # an exception in ctx, a date, a Decimal


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler, with the errors made safe to encode first (its jsonable_encoder
    # passes a lone surrogate and NaN on, and decodes bytes as strict UTF-8: each was a 500).
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": json_safe(exc.errors())}, status_code=422)


def install(app: FastAPI) -> None:
    """Register the handlers of the gateway's errors on ``app``."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(GatewayError, _handle)
    for error in POSTGRES_UNREACHABLE:
        app.add_exception_handler(error, _database_down)
