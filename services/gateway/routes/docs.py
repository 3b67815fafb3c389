"""The API docs (``/docs``: Swagger UI, ``/redoc``: ReDoc), served whole by the gateway itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN and start Swagger UI with an inline
script. Here the scripts and stylesheets come from the ``fastapi-offline`` package (the
``swagger-ui-dist`` and ``redoc`` bundles, with a favicon), mounted at :data:`STATIC_PATH` with
the pages' own files (``services/gateway/docs/``): the docs work offline, no third-party script
runs on the origin that holds the dashboard's key, and the pages need no inline script. The
pages hold no data (they read ``/openapi.json``): they are open like the schema (``auth.PAGES``).
"""

from __future__ import annotations

import hashlib
import html
from functools import cache
from importlib import metadata, resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

STATIC_PATH = "/docs/static"
"""Where :func:`static_files` is mounted."""

REDOC_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        # ReDoc (styled-components) writes its styles into <style> elements it makes.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        # ReDoc's search index runs in a worker made from a blob: URL.
        "worker-src blob:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""The policy of ``/redoc``: the gateway's own, with the styles and the worker ReDoc makes. Still no
inline script; Redocly's logo, which ReDoc's menu loads from Redocly's site, is refused. ``/docs``
(Swagger UI) needs nothing more than the gateway's own policy."""

_PACKAGE = "services.gateway"
_DIRECTORY = "docs"
_BUNDLES = ("fastapi_offline", "static")


def static_files() -> StaticFiles:
    """The pages' scripts and stylesheets (ours first, then the bundles), to mount at :data:`STATIC_PATH`."""
    return StaticFiles(packages=[(_PACKAGE, _DIRECTORY), _BUNDLES])


def _read(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(_DIRECTORY, name).read_text("utf-8")


@cache
def _template(name: str) -> str:
    return _read(name)


@cache
def _version() -> str:
    """Changes with the bundles' package or our files, so that a browser never mixes old and new."""
    digest = hashlib.sha256(metadata.version("fastapi-offline").encode())
    for name in ("swagger-init.js", "redoc-page.css"):
        digest.update(_read(name).encode())
    return digest.hexdigest()[:12]


def _page(request: Request, template: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    values = {
        "root": root,
        "openapi": request.app.openapi_url or "/openapi.json",
        "title": request.app.title,
        "version": _version(),
    }
    page = _template(template)
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", html.escape(value, quote=True))
    return HTMLResponse(page, headers=headers)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on the gateway's OpenAPI schema."""
    return _page(request, "swagger.html")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc on the gateway's OpenAPI schema."""
    return _page(request, "redoc.html", {"Content-Security-Policy": REDOC_CONTENT_SECURITY_POLICY})
