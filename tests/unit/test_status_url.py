"""A job's status URL, built without ``url_for``'s search through the routes, is ``url_for``'s URL."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from services.gateway.app import create_app
from services.gateway.routes.jobs import status_url
from services.settings import Settings


@pytest.mark.parametrize(
    ("scheme", "host", "root_path"),
    [("http", b"127.0.0.1:8000", ""), ("https", b"jobs.example.com", "/api"), ("http", b"[::1]:9000", "/a/b/")],
)
def test_status_url_is_what_url_for_gives(scheme: str, host: bytes, root_path: str) -> None:
    app = create_app(Settings(_env_file=None))
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": scheme,
        "path": "/process",
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", host)],
        "server": ("127.0.0.1", 8000),
        "app": app,
        "router": app.router,
    }
    request = Request(scope)

    assert status_url(request, "0123abcd") == str(request.url_for("get_job", job_id="0123abcd"))
