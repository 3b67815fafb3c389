"""Every operation of the client, written once as a flow (see :mod:`afterword_client.steps`).

Retries are decided here, by what a request is (:class:`Retry`):

* ``READ`` (a GET) is sent again after any transport error and after a 503;
* ``KEYED`` (a POST, always with an ``Idempotency-Key``) is sent again, with the same key and the
  same bytes, after any transport error, a 503, and a 409 that carries ``Retry-After`` (the first
  request with the key is still running). The gateway answers a repeat with the stored answer of
  the first, so the work is done once;
* ``CHANGE`` (a DELETE, which takes no key) is sent again only when it cannot have reached the
  gateway: the connection was refused, or not made in time.

How many times and how long apart is the :class:`~afterword_client.retries.RetryPolicy`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Never
from urllib.parse import quote

import httpx

from afterword_client import errors
from afterword_client.models import PAYLOADS, JobName, JobStatus, Payload
from afterword_client.records import Accepted, Job, JobPage, JobSummary, StatusEvent
from afterword_client.retries import RetryPolicy
from afterword_client.sse import Decoder
from afterword_client.steps import Call, Close, Emit, Flow, Sleep, open_stream, read_line, send

MAX_WAIT_SECONDS = 60.0
"""The longest ``?wait=`` the gateway takes; :meth:`Flows.wait` asks again for longer waits."""

EVENTS_READ_TIMEOUT = 45.0
"""A silent event stream is given up (and reopened) after this long: three of the gateway's 15 s pings."""

DEFAULT_PAGE_SIZE = 100
"""Jobs asked for per ``GET /jobs`` when walking through a listing (the gateway takes 1 to 500)."""

_NAME_OF: dict[type[Payload], JobName] = {model: name for name, model in PAYLOADS.items()}
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before the request could reach the gateway."""


class Retry(Enum):
    """Which failures a request may be sent again after (see the module's docstring)."""

    READ = "read"
    KEYED = "keyed"
    CHANGE = "change"


def _retryable(kind: Retry, outcome: httpx.Response | httpx.TransportError) -> bool:
    if isinstance(outcome, httpx.TransportError):
        return kind is not Retry.CHANGE or isinstance(outcome, _NOT_SENT)
    if outcome.status_code == 503:
        return kind is not Retry.CHANGE
    return kind is Retry.KEYED and outcome.status_code == 409 and "retry-after" in outcome.headers


def _job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise ValueError("job_id must not be empty")
    return f"/jobs/{quote(job_id, safe='')}{suffix}"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def idempotency_key(given: str | None) -> str:
    """``given``, checked as the gateway checks it, or a new random key."""
    if given is None:
        return str(uuid.uuid4())
    if not _VALID_KEY.fullmatch(given):
        raise ValueError("an Idempotency-Key is 1 to 255 printable ASCII characters")
    return given


def defer_seconds(*, defer_by: float | timedelta | None, run_at: datetime | None) -> float | None:
    """The ``defer_by`` to send for ``defer_by`` or ``run_at`` (at most one of them), or None to run now.

    The gateway takes a delay, not a time: ``run_at`` becomes the seconds from this machine's clock
    to it, so the job is due at ``run_at`` by the gateway's clock only as far as the two clocks
    agree (and a little later, by the time the request takes). A ``run_at`` in the past runs now.
    """
    if defer_by is not None and run_at is not None:
        raise ValueError("give defer_by or run_at, not both")
    if run_at is not None:
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValueError("run_at must be timezone-aware (datetime.now(UTC) + ..., say)")
        seconds = (run_at - datetime.now(UTC)).total_seconds()
        return seconds if seconds > 0 else None
    if isinstance(defer_by, timedelta):
        return defer_by.total_seconds()
    return defer_by


class Flows:
    """The client's operations as flows, retried by ``retry``."""

    def __init__(self, retry: RetryPolicy) -> None:
        self.retry = retry

    def exchange(self, call: Call, kind: Retry) -> Flow[Never, httpx.Response]:
        """Send ``call`` until it gets a successful answer; raise the error of the last failure.

        A failure that ``kind`` allows is retried while the policy has tries left.
        """
        failures = 0
        while True:
            outcome = yield from send(call)
            failures += 1
            if _retryable(kind, outcome) and failures < self.retry.attempts:
                hint = errors.retry_after(outcome) if isinstance(outcome, httpx.Response) else None
                yield Sleep(self.retry.delay(failures, hint))
                continue
            if isinstance(outcome, httpx.TransportError):
                raise errors.TransportError(f"{call.method} {call.path}: {_describe(outcome)}") from outcome
            if outcome.is_error:
                raise errors.error_for(outcome)
            return outcome

    def enqueue(
        self,
        job: Payload | JobName | str,
        payload: Mapping[str, Any] | None,
        *,
        defer_by: float | timedelta | None,
        run_at: datetime | None,
        idempotency_key: str | None,
    ) -> Flow[Never, Accepted]:
        """``POST /jobs``: a payload model (its job is known from its class) or a job's name and payload.

        The body and the key are made once, before the first try, so that every retry is the same
        request to the gateway.
        """
        if isinstance(job, Payload):
            if payload is not None:
                raise TypeError("a payload model carries its payload: pass no second argument")
            if type(job) not in _NAME_OF:
                raise TypeError(f"{type(job).__name__} is not the payload model of a job")
            body: dict[str, Any] = {"name": str(_NAME_OF[type(job)]), "payload": job.model_dump(mode="json")}
        else:
            body = {"name": str(job), "payload": dict(payload or {})}
        seconds = defer_seconds(defer_by=defer_by, run_at=run_at)
        if seconds is not None:
            body["defer_by"] = seconds
        return self._accept(Call("POST", "/jobs", content=_json(body)), idempotency_key)

    def retry_job(self, job_id: str, *, idempotency_key: str | None) -> Flow[Never, Accepted]:
        """``POST /jobs/{id}/retry``: run a failed or cancelled job again."""
        return self._accept(Call("POST", _job_path(job_id, "/retry")), idempotency_key)

    def _accept(self, call: Call, given_key: str | None) -> Flow[Never, Accepted]:
        key = idempotency_key(given_key)
        headers = {"Idempotency-Key": key}
        if call.content is not None:
            headers["Content-Type"] = "application/json"
        keyed = Call(call.method, call.path, content=call.content, headers=headers)
        response = yield from self.exchange(keyed, Retry.KEYED)
        replayed = response.headers.get("idempotent-replayed") == "true"
        return Accepted.model_validate({**response.json(), "idempotency_key": key, "replayed": replayed})

    def get(self, job_id: str) -> Flow[Never, Job]:
        """``GET /jobs/{id}``."""
        response = yield from self.exchange(Call("GET", _job_path(job_id)), Retry.READ)
        return Job.model_validate_json(response.content)

    def wait(self, job_id: str, timeout: float | None) -> Flow[Never, Job]:
        """Long-poll ``GET /jobs/{id}?wait=N`` until the job ends; WaitTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            remaining = MAX_WAIT_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            seconds = min(MAX_WAIT_SECONDS, remaining)
            call = Call(
                "GET",
                _job_path(job_id),
                params=[("wait", f"{seconds:.3f}")],
                read_timeout=seconds + 10,  # the gateway answers after ``seconds`` at the latest
            )
            response = yield from self.exchange(call, Retry.READ)
            job = Job.model_validate_json(response.content)
            if job.status.is_final:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeout(job, timeout or 0.0)

    def cancel(self, job_id: str) -> Flow[Never, Job]:
        """``DELETE /jobs/{id}``: the job's record, now cancelled."""
        response = yield from self.exchange(Call("DELETE", _job_path(job_id)), Retry.CHANGE)
        return Job.model_validate_json(response.content)

    def page(
        self,
        *,
        status: JobStatus | str | None,
        name: JobName | str | None,
        limit: int,
        cursor: str | None,
    ) -> Flow[Never, JobPage]:
        """``GET /jobs``: one page, newest first."""
        params = [("limit", str(limit))]
        params += [
            (key, str(value)) for key, value in (("status", status), ("name", name), ("cursor", cursor)) if value
        ]
        response = yield from self.exchange(Call("GET", "/jobs", params=params), Retry.READ)
        return JobPage.model_validate_json(response.content)

    def jobs(
        self,
        *,
        status: JobStatus | str | None,
        name: JobName | str | None,
        limit: int | None,
        page_size: int,
    ) -> Flow[JobSummary, None]:
        """Every job that matches, newest first, page after page (at most ``limit`` of them)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        left = limit
        cursor: str | None = None
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = yield from self.page(status=status, name=name, limit=size, cursor=cursor)
            for job in page.jobs[:left]:
                yield Emit(job)
            if left is not None:
                left -= len(page.jobs)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def events(self, job_id: str) -> Flow[StatusEvent, None]:
        """``GET /jobs/{id}/events``: each status the job takes, until a final one.

        A stream that breaks or ends early is opened again (the retry policy bounds how often in a
        row); its first event, the job's current status, is passed on only when it is new.
        """
        call = Call("GET", _job_path(job_id, "/events"), read_timeout=EVENTS_READ_TIMEOUT)
        last_at: datetime | None = None
        failures = 0
        while True:
            opened = yield from open_stream(call)
            hint: float | None = None
            problem: str
            if isinstance(opened, httpx.Response) and not opened.is_success:
                if not _retryable(Retry.READ, opened) or failures + 1 >= self.retry.attempts:
                    raise errors.error_for(opened)
                hint = errors.retry_after(opened)
                problem = f"answered {opened.status_code}"
            elif isinstance(opened, httpx.Response):
                decoder = Decoder()
                while True:
                    line = yield from read_line()
                    if not isinstance(line, str):
                        break
                    event = decoder.feed(line)
                    if event is None or event.event != "status":
                        continue
                    status = StatusEvent.model_validate_json(event.data)
                    if last_at is not None and status.at <= last_at:
                        continue  # the current status, sent again on a reopened stream
                    last_at, failures = status.at, 0
                    yield Emit(status)
                    if status.status.is_final:
                        yield Close()
                        return
                yield Close()
                hint = decoder.retry_seconds
                problem = "the stream ended before the job did" if line is None else _describe(line)
            else:
                problem = _describe(opened)
            failures += 1
            if failures >= self.retry.attempts:
                raise errors.TransportError(f"GET {call.path}: {problem}")
            yield Sleep(self.retry.delay(failures, hint))


def _describe(error: httpx.TransportError) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
