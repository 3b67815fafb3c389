"""API keys: once any is configured (``API_KEYS``), every request for job data or for a change needs one.

A client sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. There are two kinds:

* a *full* key (``API_KEYS``) does everything;
* a *read* key (``API_READ_KEYS``), for dashboards and monitoring, reads (GET, HEAD, OPTIONS) and
  nothing else: a POST or DELETE with one gets **403**, where a missing or unknown key gets **401**.

Open without a key: the probes and metrics named in ``OPEN_ENDPOINTS`` (``/healthz``, ``/readyz``
and ``/metrics`` by default) and the pages in :data:`PAGES`, which hold no data (the dashboard's
data calls and the docs' schema reads are what need, or do not need, the key); the OpenAPI schema
and the static files are not FastAPI routes and are open too. Everything else is guarded by one
app-level dependency, so every route, present and future, gets it without naming it. A presented
key is compared with every configured key in constant time, and no key ever appears in a message.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from services.core.settings import Settings
from services.gateway.dependencies import SettingsDep

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that a read key is enough for."""

PAGES = frozenset({"/dashboard", "/docs", "/redoc"})
"""Pages that load without a key: they hold no data themselves."""

READ = "read"
FULL = "full"
"""The roles the OpenAPI schema's security requirements name: which kind of key an operation takes."""

UNAUTHORIZED = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
READ_ONLY = "this API key may only read (API_READ_KEYS): a POST or DELETE needs a full key (API_KEYS)"

_KEYS_DOC = (
    "A full key (API_KEYS) for every operation, or a read key (API_READ_KEYS) for the `read` ones (GET); "
    "each operation's security requirement names the kind it takes."
)
_bearer = HTTPBearer(auto_error=False, description=f"`Authorization: Bearer <API key>`. {_KEYS_DOC}")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description=f"`X-API-Key: <API key>`, instead of the bearer token. {_KEYS_DOC}"
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


def open_paths(settings: Settings) -> frozenset[str]:
    """The route paths whose reads need no key: the pages and the open endpoints."""
    return PAGES | {f"/{name}" for name in settings.open_endpoints}


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> None:
    """401 without a configured key, 403 for a read key on a change (no-op when no key is configured)."""
    if not settings.api_keys:
        return
    reading = request.method in READ_METHODS
    if reading and getattr(request.scope.get("route"), "path", None) in open_paths(settings):
        return
    presented = (bearer.credentials if bearer else None, api_key)
    if any(key_matches(key, settings.api_keys) for key in presented):
        return
    if any(key_matches(key, settings.api_read_keys) for key in presented):
        if reading:
            return
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=READ_ONLY)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def dependencies(settings: Settings) -> list[DependsParam]:
    """The app-level dependencies of a gateway built with ``settings`` (none when no key is set)."""
    return [Depends(require_api_key)] if settings.api_keys else []


_RESPONSES = {
    "401": {"description": "No valid API key (the `WWW-Authenticate: Bearer` header says so)"},
    "403": {"description": "A read key (API_READ_KEYS) on an operation that changes something"},
}


def document(app: FastAPI, settings: Settings) -> None:
    """Say in ``app``'s OpenAPI schema which kind of key each operation takes, and none for open ones.

    The requirement comes from the app-level dependency, so FastAPI puts the same one on every
    operation: the open ones lose it, the reads name the role ``read``, the changes ``full``
    (OpenAPI 3.1 lets a requirement list roles for any kind of scheme), with their 401 and 403.
    """
    if not settings.api_keys:
        return
    build: Callable[[], dict[str, Any]] = app.openapi
    open_ = open_paths(settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path, path_item in schema.get("paths", {}).items():
                for method, operation in path_item.items():
                    if not isinstance(operation, dict) or "security" not in operation:
                        continue
                    reading = method.upper() in READ_METHODS
                    if reading and path in open_:
                        operation.pop("security")
                        continue
                    role = READ if reading else FULL
                    operation["security"] = [{name: [role] for name in needed} for needed in operation["security"]]
                    responses = operation.setdefault("responses", {})
                    responses.setdefault("401", _RESPONSES["401"])
                    if not reading:
                        responses.setdefault("403", _RESPONSES["403"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
