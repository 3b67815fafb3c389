"""The asyncio client: drives the flows of :mod:`afterword_client.flows` with an ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Never, Self, TypeVar, overload

import httpx
from pydantic import SecretStr

from afterword_client.endpoint import Endpoint
from afterword_client.flows import DEFAULT_PAGE_SIZE, Flows
from afterword_client.models import JobName, JobStatus, Payload
from afterword_client.records import Accepted, Job, JobPage, JobSummary, StatusEvent
from afterword_client.retries import RetryPolicy
from afterword_client.steps import Close, Emit, Flow, Open, Outcome, ReadLine, Send, Sleep, Step

E = TypeVar("E")
R = TypeVar("R")


class AsyncClient:
    """An asyncio client of the Afterword gateway: ``async with AsyncClient(url, api_key=key) as client: ...``.

    The same operations as :class:`~afterword_client.Client`, awaited; ``events`` and ``list`` are
    async iterators. ``http`` may be an ``httpx.AsyncClient`` of your own, then yours to close.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | SecretStr | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._endpoint = Endpoint(base_url, api_key=api_key, timeout=timeout)
        self._flows = Flows(retry or RetryPolicy())
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"AsyncClient({self._endpoint.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (not those of an ``httpx.AsyncClient`` passed in)."""
        if self._owns_http:
            await self._http.aclose()

    @overload
    async def enqueue(
        self,
        job: Payload,
        /,
        *,
        defer_by: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted: ...

    @overload
    async def enqueue(
        self,
        job: JobName | str,
        payload: Mapping[str, Any] | None = None,
        /,
        *,
        defer_by: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted: ...

    async def enqueue(
        self,
        job: Payload | JobName | str,
        payload: Mapping[str, Any] | None = None,
        /,
        *,
        defer_by: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Queue a job: ``await enqueue(SendEmail(...))``, or ``await enqueue("send_email", {...})``.

        ``defer_by`` (seconds or a timedelta) or ``run_at`` (an aware datetime) delays it. Sent with
        ``idempotency_key`` (a new UUID if None) and retried with it, so the job is queued once.
        """
        flow = self._flows.enqueue(job, payload, defer_by=defer_by, run_at=run_at, idempotency_key=idempotency_key)
        return await self._run(flow)

    async def get(self, job_id: str) -> Job:
        """The job's record."""
        return await self._run(self._flows.get(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109 (the poll, not a cancel)
        """The job's record once it has ended; ``WaitTimeout`` if it has not after ``timeout`` seconds."""
        return await self._run(self._flows.wait(job_id, timeout))

    def events(self, job_id: str) -> AsyncIterator[StatusEvent]:
        """Each status the job takes, from its current one to a final one (reconnecting if need be)."""
        return self._iterate(self._flows.events(job_id))

    async def retry(self, job_id: str, *, idempotency_key: str | None = None) -> Accepted:
        """Run a failed or cancelled job again, under the same id."""
        return await self._run(self._flows.retry_job(job_id, idempotency_key=idempotency_key))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not ended; its record, now cancelled."""
        return await self._run(self._flows.cancel(job_id))

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        name: JobName | str | None = None,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[JobSummary]:
        """Jobs newest first, at most ``limit`` (all if None), fetched ``page_size`` at a time."""
        return self._iterate(self._flows.jobs(status=status, name=name, limit=limit, page_size=page_size))

    async def list_page(
        self,
        *,
        status: JobStatus | str | None = None,
        name: JobName | str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs; pass its ``next_cursor`` as ``cursor`` for the next."""
        return await self._run(self._flows.page(status=status, name=name, limit=limit, cursor=cursor))

    async def _run(self, flow: Flow[Never, R]) -> R:
        async with _Steps(self._http, self._endpoint) as steps:
            outcome: Outcome = None
            try:
                while True:
                    try:
                        step = flow.send(outcome)
                    except StopIteration as done:
                        result: R = done.value
                        return result
                    outcome = await steps.perform(step)
            finally:
                flow.close()

    async def _iterate(self, flow: Flow[E, None]) -> AsyncIterator[E]:
        async with _Steps(self._http, self._endpoint) as steps:
            outcome: Outcome = None
            try:
                while True:
                    try:
                        step = flow.send(outcome)
                    except StopIteration:
                        return
                    if isinstance(step, Emit):
                        yield step.value
                        outcome = None
                    else:
                        outcome = await steps.perform(step)
            finally:
                flow.close()


class _Steps:
    """Performs a flow's steps with asyncio I/O; holds the one answer a flow may keep open."""

    def __init__(self, http: httpx.AsyncClient, endpoint: Endpoint) -> None:
        self._http = http
        self._endpoint = endpoint
        self._stream: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def perform(self, step: Step[Any]) -> Outcome:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Send | Open):
            return await self._send(step)
        if isinstance(step, ReadLine):
            if self._lines is None:
                return None
            try:
                return await anext(self._lines, None)
            except httpx.TransportError as exc:
                return exc
        if isinstance(step, Close):
            await self._close()
            return None
        raise AssertionError(f"a flow run for its result emitted {step}")

    async def _send(self, step: Send | Open) -> Outcome:
        request = self._endpoint.request(self._http, step.call)
        streaming = isinstance(step, Open)
        try:
            response = await self._http.send(request, stream=streaming)
            if streaming and not response.is_success:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            return exc
        if streaming and response.is_success:
            self._stream, self._lines = response, response.aiter_lines()
        return response

    async def _close(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream, self._lines = None, None
