"""The dashboard: one HTML page with its script and stylesheet, shipped as files of this package.

The page (``services/gateway/dashboard/``) is plain HTML, CSS and JavaScript: no build step and
nothing fetched from another site. It reads the gateway's own API (``/stats``, ``/jobs``,
``/jobs/{id}``, ``/jobs/{id}/events``) and calls ``POST /jobs/{id}/retry`` and ``DELETE /jobs/{id}``
for its buttons. The page and its files hold no data and load without a key; when the gateway has
API keys, its data calls need one, and the page asks for a key when the gateway answers 401 (a
read key shows the data; retry and cancel need a full key, and the page asks again on 403). The
event stream is read with ``fetch`` rather than ``EventSource``, so that it carries the key in a
header as every other call does, never in the URL.
"""

from __future__ import annotations

import hashlib
import html
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from services.contract import JobName, JobStatus
from services.gateway.dependencies import SettingsDep

router = APIRouter(tags=["dashboard"])

STATIC_PATH = "/dashboard/static"
"""Where :func:`static_files` is mounted."""

_PACKAGE = "services.gateway"
_DIRECTORY = "dashboard"
_ASSETS = ("app.js", "style.css")


def static_files() -> StaticFiles:
    """The dashboard's script and stylesheet, to mount at :data:`STATIC_PATH`."""
    return StaticFiles(packages=[(_PACKAGE, _DIRECTORY)])


def _read(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(_DIRECTORY, name).read_text("utf-8")


@cache
def _template() -> str:
    return _read("index.html")


@cache
def _version() -> str:
    """A short hash of the assets, so that a browser never mixes an old script with a new page."""
    digest = hashlib.sha256()
    for name in _ASSETS:
        digest.update(_read(name).encode())
    return digest.hexdigest()[:12]


def render(*, root: str, auth_required: bool) -> str:
    """The page, for a gateway served under ``root`` (its ASGI root path, usually empty)."""
    values = {
        "root": root,
        "version": _version(),
        "auth": "required" if auth_required else "open",
        "statuses": " ".join(JobStatus),
        "names": " ".join(JobName),
    }
    page = _template()
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", html.escape(value, quote=True))
    return page


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The dashboard page: queue, throughput, latency, workers, recent and failed jobs."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return HTMLResponse(render(root=root, auth_required=bool(settings.api_keys)), headers={"Cache-Control": "no-cache"})
