"""The one decorator that turns a job implementation into the coroutine ARQ runs.

The wrapper validates the payload against the contract, records the attempt in the jobs ledger,
bounds the run with the job timeout, and turns the outcome into a ledger status: transient errors
are retried with backoff (through ``arq.Retry``) until the last try, anything else fails at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from arq import Retry
from pydantic import ValidationError

from services import ledger
from services.contract import PAYLOADS, JobName, JobStatus, Payload
from services.jobs.context import JobContext
from services.jobs.errors import is_transient, retry_delay

log = logging.getLogger("afterword.jobs")

P = TypeVar("P", bound=Payload)
JobResult = dict[str, Any]
Implementation = Callable[[JobContext, P], Awaitable[JobResult]]
ArqCoroutine = Callable[..., Awaitable[JobResult | None]]

REGISTRY: dict[JobName, ArqCoroutine] = {}
"""The coroutine ARQ runs for each job name, filled by :func:`job`."""


def job(name: JobName) -> Callable[[Implementation[P]], Implementation[P]]:
    """Register ``implementation`` as the job ``name``; the implementation itself is returned."""

    def register(implementation: Implementation[P]) -> Implementation[P]:
        if name in REGISTRY:
            raise RuntimeError(f"job {name} is registered twice")
        model = cast(type[P], PAYLOADS[name])

        async def run(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> JobResult | None:
            return await _run_tracked(cast(JobContext, ctx), name, model, implementation, payload or {})

        run.__qualname__ = run.__name__ = name.value
        REGISTRY[name] = run
        return implementation

    return register


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _run_tracked(
    ctx: JobContext,
    name: JobName,
    model: type[P],
    implementation: Implementation[P],
    payload: dict[str, Any],
) -> JobResult | None:
    settings = ctx["settings"]
    job_id, job_try = ctx["job_id"], ctx["job_try"]
    last_try = job_try >= settings.job_max_tries

    try:
        previous = await ledger.start_attempt(ctx["db"], job_id=job_id, job_try=job_try, worker=ctx["worker_id"])
    except Exception as exc:
        if is_transient(exc) and not last_try:
            log.warning("job %s: ledger unavailable (%s), retrying", job_id, _describe(exc))
            raise Retry(defer=retry_delay(job_try, base=settings.retry_base_delay_seconds)) from exc
        raise
    if previous is not None and previous.is_final:
        log.info("job %s is already %s; not running it again", job_id, previous)
        return {"skipped": f"already {previous}"}

    async def finish(status: JobStatus, *, result: Any = None, error: str | None = None) -> None:
        await ledger.finish_attempt(
            ctx["db"], job_id=job_id, job_try=job_try, status=status, result=result, error=error
        )

    try:
        data = model.model_validate(payload)
        async with asyncio.timeout(settings.job_timeout_seconds):
            result = await implementation(ctx, data)
    except asyncio.CancelledError:
        # Shutdown or abort: ARQ hands the job back (or the gateway already cancelled it).
        await asyncio.shield(_quietly(finish(JobStatus.queued, error="interrupted by worker shutdown")))
        raise
    except ValidationError as exc:
        await finish(JobStatus.failed, error=f"invalid payload: {exc.errors(include_url=False)}")
        raise
    except Exception as exc:
        error = _describe(exc)
        if is_transient(exc) and not last_try:
            delay = retry_delay(job_try, base=settings.retry_base_delay_seconds)
            await finish(JobStatus.retrying, error=error)
            log.info("job %s try %d: %s; retrying in %.1fs", job_id, job_try, error, delay)
            raise Retry(defer=delay) from exc
        await finish(JobStatus.failed, error=error)
        raise
    await finish(JobStatus.succeeded, result=result)
    return result


async def _quietly(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("could not record the interrupted attempt")
