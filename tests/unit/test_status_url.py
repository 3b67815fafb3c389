"""A job's status URL, built without ``url_for``'s search through the routes, is ``url_for``'s URL."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from services.core.settings import Settings
from services.gateway.app import create_app
from services.gateway.routes import jobs as jobs_routes
from services.gateway.routes.jobs import status_url


@pytest.mark.parametrize(
    ("scheme", "host", "root_path"),
    [("http", b"127.0.0.1:8000", ""), ("https", b"jobs.example.com", "/api"), ("http", b"[::1]:9000", "/a/b/")],
)
def test_status_url_is_what_url_for_gives(scheme: str, host: bytes, root_path: str) -> None:
    app = create_app(Settings(_env_file=None))
    request = _request(app, host, scheme=scheme, root_path=root_path)

    assert status_url(request, "0123abcd") == str(request.url_for("get_job", job_id="0123abcd"))


def _request(app: object, host: bytes, *, scheme: str = "http", root_path: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/process",
            "root_path": root_path,
            "query_string": b"",
            "headers": [(b"host", host)],
            "server": ("127.0.0.1", 8000),
            "app": app,
            "router": getattr(app, "router", None),
        }
    )


def test_each_host_scheme_and_root_path_gets_its_own_base_again_and_again() -> None:
    app = create_app(Settings(_env_file=None))
    cases = [
        (b"a.example", "http", ""),
        (b"b.example", "http", ""),
        (b"a.example", "https", ""),
        (b"a.example", "http", "/x"),
    ]
    for _ in range(2):  # the second round is answered from the bases built in the first
        for host, scheme, root_path in cases:
            request = _request(app, host, scheme=scheme, root_path=root_path)
            assert status_url(request, "j1") == str(request.url_for("get_job", job_id="j1"))


def test_the_bases_kept_are_bounded_whatever_hosts_clients_send() -> None:
    app = create_app(Settings(_env_file=None))
    for n in range(jobs_routes._STATUS_URL_BASES + 50):
        request = _request(app, f"host-{n}.example".encode())
        assert status_url(request, "j2") == f"http://host-{n}.example/jobs/j2"
    assert len(jobs_routes._status_url_bases) <= jobs_routes._STATUS_URL_BASES


def test_a_huge_host_header_never_enters_the_cache() -> None:
    app = create_app(Settings(_env_file=None))
    jobs_routes._status_url_bases.clear()  # room to spare: only the Host's size may keep it out
    huge = b"h" * 1_000_000
    request = _request(app, huge)

    assert status_url(request, "j3") == str(request.url_for("get_job", job_id="j3"))
    assert status_url(request, "j4").endswith("/jobs/j4")
    cached_hosts = [key[1] for key in jobs_routes._status_url_bases]
    assert huge not in cached_hosts
    assert all(len(host or b"") <= jobs_routes._MAX_CACHED_HOST_BYTES for host in cached_hosts)
    assert sum(len(base) for base in jobs_routes._status_url_bases.values()) < 10_000


def test_an_ordinary_host_is_still_cached() -> None:
    app = create_app(Settings(_env_file=None))
    jobs_routes._status_url_bases.clear()
    host = b"jobs." + b"a" * 200 + b".example:8443"

    status_url(_request(app, host), "j5")

    assert [key[1] for key in jobs_routes._status_url_bases] == [host]
