"""The one decorator that turns a job implementation into the coroutine ARQ runs.

The wrapper validates the payload against the contract, records the attempt in the jobs ledger,
bounds the run with the job timeout, and turns the outcome into a ledger status: transient errors
are retried with backoff (through ``arq.Retry``) until the last try, anything else fails at once.

A job runs only as the next attempt of its ledger row. One the ledger does not know was not
accepted by the gateway (whoever can write to Redis can plant a job there): it is refused, never
run, counted (``afterword_jobs_refused_total``) and logged, and ARQ removes it from Redis as it
removes any job that ended. The worker's own scheduled runs (ARQ's cron) have no ledger row: they
run :data:`SCHEDULED`'s coroutine, which takes no payload and touches no ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import structlog
from arq import Retry
from pydantic import ValidationError

from services import ledger
from services.contract import PAYLOADS, JobName, JobStatus, Payload
from services.jobs.context import JobContext
from services.jobs.errors import is_transient, retry_delay
from services.jobs.metrics import JobRun
from services.log_config import direct_logger

log = logging.getLogger("afterword.jobs")
events = direct_logger("jobs", "afterword.jobs")  # the two lines of every run, written directly

P = TypeVar("P", bound=Payload)
JobResult = dict[str, Any]
Implementation = Callable[[JobContext, P], Awaitable[JobResult]]
ArqCoroutine = Callable[..., Awaitable[JobResult | None]]

REGISTRY: dict[JobName, ArqCoroutine] = {}
"""The coroutine ARQ runs for each job name, filled by :func:`job`."""

SCHEDULED: dict[JobName, Callable[[dict[str, Any]], Awaitable[JobResult]]] = {}
"""The coroutine a cron entry runs for each job name: the job with its empty payload, no ledger row."""

NO_LEDGER_ROW = "no ledger row"
"""Why a job is refused: the ledger does not know it (see the module docstring)."""

MAX_TRIES: dict[JobName, int] = {}
"""Jobs whose maximum number of tries differs from the ``JOB_MAX_TRIES`` setting."""


def max_tries(name: JobName, default: int) -> int:
    """How many times ``name`` may be tried."""
    return MAX_TRIES.get(name, default)


def job(name: JobName, *, tries: int | None = None) -> Callable[[Implementation[P]], Implementation[P]]:
    """Register ``implementation`` as the job ``name``; the implementation itself is returned.

    ``tries`` caps the attempts of this job (transient errors are retried until then); by default
    the ``JOB_MAX_TRIES`` setting applies.
    """
    if tries is not None:
        MAX_TRIES[name] = tries

    def register(implementation: Implementation[P]) -> Implementation[P]:
        if name in REGISTRY:
            raise RuntimeError(f"job {name} is registered twice")
        model = cast(type[P], PAYLOADS[name])

        async def run(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> JobResult | None:
            context = cast(JobContext, ctx)
            with _observed(context, name) as observed:
                return await _run_tracked(context, name, model, implementation, payload or {}, observed)

        async def scheduled(ctx: dict[str, Any]) -> JobResult:
            context = cast(JobContext, ctx)
            with _observed(context, name) as observed:
                context["attempt"] = 0  # no ledger row, no attempts
                events.info(
                    "job started", job_try=context["job_try"], attempt=0, pickup_ms=_ms(observed.pickup_seconds)
                )
                data = model.model_validate({})
                async with asyncio.timeout(context["settings"].job_timeout_seconds):
                    return await implementation(context, data)

        run.__qualname__ = run.__name__ = scheduled.__qualname__ = scheduled.__name__ = name.value
        REGISTRY[name] = run
        SCHEDULED[name] = scheduled
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
    observed: JobRun,
) -> JobResult | None:
    settings = ctx["settings"]
    job_id, job_try = ctx["job_id"], ctx["job_try"]
    last_try = job_try >= max_tries(name, settings.job_max_tries)

    def retry_later(cause: BaseException) -> Retry:
        delay = retry_delay(job_try, base=settings.retry_base_delay_seconds)
        log.info("job %s try %d: %s; retrying in %.1fs", job_id, job_try, _describe(cause), delay)
        return Retry(defer=delay)

    try:
        started = await ctx["attempts"].start(job_id)  # batched with concurrent starts
    except Exception as exc:
        if is_transient(exc) and not last_try:
            raise retry_later(exc) from exc
        raise
    if started.previous is None:  # not accepted by the gateway: planted in Redis
        observed.refuse()
        log.warning("job %s (%s) refused, not run: %s (it was not queued by the gateway)", job_id, name, NO_LEDGER_ROW)
        return {"refused": NO_LEDGER_ROW}
    _note_start(ctx, started, observed)
    if not started.may_run:
        observed.skip()
        log.info("job %s is already %s; not running it again", job_id, started.previous)
        return {"skipped": f"already {started.previous}"}
    ctx["attempt"] = started.attempt
    await ctx["leases"].hold(job_id)

    async def finish(status: JobStatus, *, result: Any = None, error: str | None = None) -> None:
        # Recording the outcome can fail too (Postgres away): then the job is tried again, and
        # its effects, keyed on the job id, are not repeated.
        try:
            await ctx["attempts"].finish(
                job_id=job_id, attempt=started.attempt, status=status, result=result, error=error
            )
        except Exception as exc:
            if is_transient(exc) and not last_try:
                raise retry_later(exc) from exc
            raise

    try:
        data = model.model_validate(payload)
        async with asyncio.timeout(settings.job_timeout_seconds):
            result = await implementation(ctx, data)
    except asyncio.CancelledError:
        # Shutdown or abort: ARQ hands the job back (or the gateway already cancelled it).
        interrupted = finish(JobStatus.queued, error="interrupted: the worker stopped or the job was cancelled")
        await asyncio.shield(_quietly(interrupted))
        raise
    except ValidationError as exc:
        await finish(JobStatus.failed, error=f"invalid payload: {exc.errors(include_url=False)}")
        raise
    except Exception as exc:
        if is_transient(exc) and not last_try:
            retry = retry_later(exc)
            with contextlib.suppress(Retry):  # not recorded: the next attempt's start says enough
                await finish(JobStatus.retrying, error=_describe(exc))
            raise retry from exc
        await finish(JobStatus.failed, error=_describe(exc))
        raise
    finally:
        ctx["leases"].release(job_id)
    await finish(JobStatus.succeeded, result=result)
    return result


# --- Observability: the log context and the metrics of one run -----------------------------------


@contextlib.contextmanager
def _observed(ctx: JobContext, name: JobName) -> Iterator[JobRun]:
    """Around one run: ``job_id`` and ``job_name`` on every log line, its metrics, a closing log line."""
    with structlog.contextvars.bound_contextvars(job_id=ctx["job_id"], job_name=name.value):
        run = ctx["metrics"].start(name, due_ms=ctx.get("score"))
        error: BaseException | None = None
        try:
            yield run
        except BaseException as exc:
            error = exc
            raise
        finally:
            outcome = run.end(error)
            events.info(
                "job finished", outcome=outcome, job_try=ctx["job_try"], duration_ms=round(run.elapsed * 1000, 2)
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _note_start(ctx: JobContext, started: ledger.Started, observed: JobRun) -> None:
    """What the ledger said at the start: the request id joins the log context; crash re-runs are counted."""
    if started.request_id is not None:
        structlog.contextvars.bind_contextvars(request_id=started.request_id)
    if started.crash_rerun:
        observed.crash_rerun()
    if started.may_run:
        events.info(
            "job started",
            job_try=ctx["job_try"],
            attempt=started.attempt,
            crash_rerun=started.crash_rerun,
            pickup_ms=_ms(observed.pickup_seconds),
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def _quietly(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:  # Retry included: the worker is stopping, the next start records it
        log.exception("could not record the interrupted attempt")
