"""Where the gateway is, and what every request to it carries: the API key, a User-Agent, the timeout."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import httpx
from pydantic import SecretStr

from afterword_client.steps import Call

try:
    USER_AGENT = f"afterword-client/{version('afterword-client')}"
except PackageNotFoundError:  # run from a source tree that was not installed
    USER_AGENT = "afterword-client"


class Endpoint:
    """The gateway's base URL with the client's credentials; builds each :class:`~afterword_client.steps.Call`."""

    def __init__(self, base_url: str, *, api_key: str | SecretStr | None, timeout: float) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = str(url).rstrip("/")
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r})"

    def request(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        """The request ``call`` stands for, built by ``http`` (so its own default headers apply too)."""
        headers = {"User-Agent": USER_AGENT, **call.headers}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        timeout = httpx.Timeout(self.timeout)
        if call.read_timeout is not None:
            timeout = httpx.Timeout(self.timeout, read=call.read_timeout)
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params=list(call.params),
            content=call.content,
            headers=headers,
            timeout=timeout,
        )
