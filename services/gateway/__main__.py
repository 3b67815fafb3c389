"""``python -m services.gateway``: serve the gateway with uvicorn (uvloop, httptools with bounded heads).

Logs are JSON lines on stdout (services.core.log_config), uvicorn's own included; uvicorn's access log
stays off: the request middleware (services.gateway.middleware.observation) writes one line per request.
"""

from __future__ import annotations

import uvicorn

from services.core.heap import freeze_startup_heap
from services.core.log_config import configure_logging
from services.core.settings import load_settings
from services.gateway.app import create_app
from services.gateway.http_protocol import bounded_protocol


def main() -> None:
    """Build the settings and the app, then serve until SIGINT/SIGTERM."""
    settings = load_settings()
    configure_logging("gateway")
    app = create_app(settings)
    freeze_startup_heap()  # fewer, shorter GC pauses: the slowest requests were waiting on them
    uvicorn.run(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        http=bounded_protocol(settings.max_header_bytes),  # uvicorn's httptools protocol, heads bounded
        access_log=False,
        log_config=None,  # keep configure_logging's JSON handler on the root logger
        proxy_headers=True,
        # Open event streams (GET /jobs/{id}/events) never end by themselves: on SIGTERM, requests
        # still running after this many seconds are cut, so that the gateway does stop.
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
