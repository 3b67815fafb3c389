"""The blocking client: drives the flows of :mod:`afterword_client.flows` with an ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
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


class Client:
    """A blocking client of the Afterword gateway: ``with Client(url, api_key=key) as client: ...``.

    ``timeout`` bounds each request (long polls and event streams get what they need on top);
    ``retry`` says how often a failed request is sent again. An ``httpx.Client`` of your own may be
    passed as ``http`` (its transport, proxies, headers and hooks apply); it is then yours to close.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | SecretStr | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._endpoint = Endpoint(base_url, api_key=api_key, timeout=timeout)
        self._flows = Flows(retry or RetryPolicy())
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"Client({self._endpoint.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (not those of an ``httpx.Client`` passed in)."""
        if self._owns_http:
            self._http.close()

    @overload
    def enqueue(
        self,
        job: Payload,
        /,
        *,
        defer_by: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted: ...

    @overload
    def enqueue(
        self,
        job: JobName | str,
        payload: Mapping[str, Any] | None = None,
        /,
        *,
        defer_by: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted: ...

    def enqueue(
        self,
        job: Payload | JobName | str,
        payload: Mapping[str, Any] | None = None,
        /,
        *,
        defer_by: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Queue a job: ``enqueue(SendEmail(...))``, or ``enqueue("send_email", {...})``.

        ``defer_by`` (seconds or a timedelta) or ``run_at`` (an aware datetime) delays it. Sent with
        ``idempotency_key`` (a new UUID if None) and retried with it, so the job is queued once.
        """
        flow = self._flows.enqueue(job, payload, defer_by=defer_by, run_at=run_at, idempotency_key=idempotency_key)
        return self._run(flow)

    def get(self, job_id: str) -> Job:
        """The job's record."""
        return self._run(self._flows.get(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job's record once it has ended; ``WaitTimeout`` if it has not after ``timeout`` seconds."""
        return self._run(self._flows.wait(job_id, timeout))

    def events(self, job_id: str) -> Iterator[StatusEvent]:
        """Each status the job takes, from its current one to a final one (reconnecting if need be)."""
        return self._iterate(self._flows.events(job_id))

    def retry(self, job_id: str, *, idempotency_key: str | None = None) -> Accepted:
        """Run a failed or cancelled job again, under the same id."""
        return self._run(self._flows.retry_job(job_id, idempotency_key=idempotency_key))

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not ended; its record, now cancelled."""
        return self._run(self._flows.cancel(job_id))

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        name: JobName | str | None = None,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[JobSummary]:
        """Jobs newest first, at most ``limit`` (all if None), fetched ``page_size`` at a time."""
        return self._iterate(self._flows.jobs(status=status, name=name, limit=limit, page_size=page_size))

    def list_page(
        self,
        *,
        status: JobStatus | str | None = None,
        name: JobName | str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs; pass its ``next_cursor`` as ``cursor`` for the next."""
        return self._run(self._flows.page(status=status, name=name, limit=limit, cursor=cursor))

    def _run(self, flow: Flow[Never, R]) -> R:
        with _Steps(self._http, self._endpoint) as steps:
            outcome: Outcome = None
            try:
                while True:
                    try:
                        step = flow.send(outcome)
                    except StopIteration as done:
                        result: R = done.value
                        return result
                    outcome = steps.perform(step)
            finally:
                flow.close()

    def _iterate(self, flow: Flow[E, None]) -> Iterator[E]:
        with _Steps(self._http, self._endpoint) as steps:
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
                        outcome = steps.perform(step)
            finally:
                flow.close()


class _Steps:
    """Performs a flow's steps with blocking I/O; holds the one answer a flow may keep open."""

    def __init__(self, http: httpx.Client, endpoint: Endpoint) -> None:
        self._http = http
        self._endpoint = endpoint
        self._stream: httpx.Response | None = None
        self._lines: Iterator[str] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def perform(self, step: Step[Any]) -> Outcome:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, Send | Open):
            return self._send(step)
        if isinstance(step, ReadLine):
            if self._lines is None:
                return None
            try:
                return next(self._lines, None)
            except httpx.TransportError as exc:
                return exc
        if isinstance(step, Close):
            self._close()
            return None
        raise AssertionError(f"a flow run for its result emitted {step}")

    def _send(self, step: Send | Open) -> Outcome:
        request = self._endpoint.request(self._http, step.call)
        streaming = isinstance(step, Open)
        try:
            response = self._http.send(request, stream=streaming)
            if streaming and not response.is_success:
                try:
                    response.read()
                finally:
                    response.close()
        except httpx.TransportError as exc:
            return exc
        if streaming and response.is_success:
            self._stream, self._lines = response, response.iter_lines()
        return response

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream, self._lines = None, None
