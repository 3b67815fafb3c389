"""``python -m services.gateway``: serve the gateway with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import uvicorn

from services.gateway.app import create_app
from services.settings import load_settings


def main() -> None:
    """Build the settings and the app, then serve until SIGINT/SIGTERM."""
    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
