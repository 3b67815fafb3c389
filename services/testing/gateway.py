"""The gateway in the test's process: the real app, answering httpx requests, with the jobs left in the ledger.

:class:`InProcessGateway` is ``create_app(settings)`` run with its own lifespan (the Postgres pool,
the live status listener, the Idempotency-Key locks): every request goes through the gateway's
middleware, its authentication, its routes and its error handlers, so a payload is validated by
the contract's models with the same 422 as in production, an Idempotency-Key is honoured, and a
job's record, its long poll and its events come from the ledger. One thing differs: the intake
commits the jobs to the ledger and stops there, instead of pushing them to ARQ's queue in Redis
(``services.gateway.intake.Intake``'s ``queue``); the in-process worker reads them from the ledger.

What a route would do with Redis beyond that is attempted on the settings' ``REDIS_URL``, which
the in-process Afterword points at a closed port: ``DELETE /jobs/{id}`` cancels the job in the
ledger and notes that Redis could not be told; ``POST /jobs/{id}/retry`` puts the job back in the
ledger, then fails to make ARQ forget its past runs and answers 500 (as with Redis away).

Each job an answer accepted (202, not replayed) is noted as a :class:`QueuedJob`, with the request's
``defer_by`` and Idempotency-Key, for the test's assertions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from services import ledger
from services.contract import PAYLOADS, JobName, Payload
from services.core.settings import Settings
from services.gateway.app import create_app
from services.gateway.intake import Intake
from services.gateway.middleware.idempotency import HEADER as IDEMPOTENCY_KEY
from services.gateway.middleware.request_id import HEADER as REQUEST_ID


@dataclass(frozen=True)
class QueuedJob:
    """A job the gateway accepted from the test's code: what was asked, and the job's id."""

    id: str
    name: JobName
    payload: Payload
    """The payload as its job's model (``services.contract``): ``job.payload.to``, say."""
    run_at: datetime
    """When the job is due (its ``defer_by`` after it was accepted)."""
    defer_by: float | None
    """The ``defer_by`` of ``POST /jobs``, as sent (None: not sent, or another route)."""
    idempotency_key: str | None
    """The request's Idempotency-Key (the client sends one with every enqueue)."""
    request_id: str | None
    """The request's id (``X-Request-ID`` of the answer), stored with the job."""


async def _kept_in_the_ledger(jobs: Sequence[ledger.NewJob]) -> None:
    """The intake's queue: nothing to push, the in-process worker reads the committed jobs from the ledger."""


class InProcessGateway:
    """The gateway app and its lifespan's state; :meth:`handle` answers one request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: dict[str, Any]) -> None:
        self.db = state["db"]
        """The pool on the ledger's database."""
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is answered, as served
        self.enqueued: list[QueuedJob] = []
        self.after_accepting: Callable[[], Awaitable[object]] | None = None
        """Awaited after each request that accepted jobs, before it is answered (the inline mode)."""

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[InProcessGateway]:
        """The gateway of ``settings``, its lifespan run around it."""
        app = create_app(settings)
        async with app.router.lifespan_context(app) as opened:
            state: dict[str, Any] = dict(opened or {})
            state["intake"] = Intake(
                db=state["db"], redis=state["redis"], metrics=state["metrics"], queue=_kept_in_the_ledger
            )

            async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
                # What the server does with a lifespan's state: each request gets a shallow copy.
                await app({**scope, "state": dict(state)}, receive, send)

            yield cls(with_state, state)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """The gateway's answer to ``request`` (its body read), with its body read."""
        response = await self._asgi.handle_async_request(request)
        content = await response.aread()
        answer = httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(content))
        accepted = await self._note(request, answer, content)
        if accepted and self.after_accepting is not None:
            await self.after_accepting()
        return answer

    async def _note(self, request: httpx.Request, answer: httpx.Response, content: bytes) -> bool:
        """Note the jobs ``answer`` accepted; False if it accepted none."""
        path = request.url.path
        if (
            request.method != "POST"
            or answer.status_code != 202
            or answer.headers.get("idempotent-replayed") == "true"
            or path.endswith("/retry")  # a job run again, not a new one
        ):
            return False
        body = json.loads(content)
        ids = [body["id"]] if "id" in body else [job["id"] for job in body.get("jobs", [])]
        sent = json.loads(request.content) if path == "/jobs" else {}
        for job_id in ids:
            record = await ledger.get_job(self.db, job_id)
            if record is None:  # the ledger is the test's own: nobody else removes a job
                raise RuntimeError(f"job {job_id} was accepted but is not in the ledger")
            name = JobName(record.name)
            self.enqueued.append(
                QueuedJob(
                    id=job_id,
                    name=name,
                    payload=PAYLOADS[name].model_validate(record.payload),
                    run_at=record.run_at,
                    defer_by=sent.get("defer_by"),
                    idempotency_key=request.headers.get(IDEMPOTENCY_KEY),
                    request_id=answer.headers.get(REQUEST_ID.decode("latin-1")),
                )
            )
        return bool(ids)
