"""API keys: when any is configured (``API_KEYS``), every request that changes something needs one.

A client sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Reads (GET, HEAD,
OPTIONS: job status, health, the docs) stay open. The check is one app-level dependency, so
every POST and DELETE route, present and future, gets it without naming it. A presented key is
compared with every configured key in constant time, and no key ever appears in a message.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from services.gateway.dependencies import SettingsDep
from services.settings import Settings

OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that never need a key."""

UNAUTHORIZED = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>` on every POST and DELETE.")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`, instead of the bearer token."
)


def key_matches(presented: str | None, keys: Sequence[SecretStr]) -> bool:
    """True when ``presented`` is one of ``keys``; every key is compared, each in constant time."""
    return _matching(presented, keys) is not None


def _matching(presented: str | None, keys: Sequence[SecretStr]) -> SecretStr | None:
    """The one of ``keys`` that ``presented`` is, or None; every key is compared, each in constant time."""
    if not presented:
        return None
    candidate = presented.encode()
    found = None
    for key in keys:
        if hmac.compare_digest(candidate, key.get_secret_value().encode()):
            found = key
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def presented_key(headers: Mapping[str, str], keys: Sequence[SecretStr]) -> SecretStr | None:
    """The one of ``keys`` the request's headers carry, or None (for code outside FastAPI's routing).

    The bearer token is looked at first, as :func:`require_api_key` does.
    """
    found = _matching(bearer_token(headers.get("authorization")), keys)
    return found if found is not None else _matching(headers.get("x-api-key"), keys)


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> None:
    """Answer 401 to a mutating request without a configured key (no-op when none is configured)."""
    if request.method in OPEN_METHODS or not settings.api_keys:
        return
    if key_matches(bearer.credentials if bearer else None, settings.api_keys):
        return
    if key_matches(api_key, settings.api_keys):
        return
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def dependencies(settings: Settings) -> list[DependsParam]:
    """The app-level dependencies of a gateway built with ``settings`` (none when no key is set)."""
    return [Depends(require_api_key)] if settings.api_keys else []


def document(app: FastAPI) -> None:
    """Keep the security requirement off the open (GET) operations of ``app``'s OpenAPI schema.

    The requirement comes from the app-level dependency, so FastAPI puts it on every operation.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path_item in schema.get("paths", {}).values():
                for method, operation in path_item.items():
                    if method.upper() in OPEN_METHODS and isinstance(operation, dict):
                        operation.pop("security", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
