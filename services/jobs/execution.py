"""What turns a job implementation into the coroutine ARQ runs (:func:`register`).

The wrapper validates the payload against the contract, records the attempt in the jobs ledger,
bounds the run with the job timeout, and turns the outcome into a ledger status: transient errors
are retried with backoff (through ``arq.Retry``, by the job's policy: ``services.jobs.retries``)
until the last try, whose failure the job's error tells as "gave up after N tries over T: ...";
anything else fails at once.

A job runs only as the next attempt of its ledger row. One the ledger does not know was not
accepted by the gateway (whoever can write to Redis can plant a job there): it is refused, never
run, counted (``afterword_jobs_refused_total``) and logged, and ARQ removes it from Redis as it
removes any job that ended. The worker's own scheduled runs (ARQ's cron) have no ledger row: they
run :data:`SCHEDULED`'s coroutine, which takes no payload and touches no ledger.

The run is fenced (``services.queue.fencing``): it starts its attempt with its claim's try, runs
only while it holds the job's lease, and stops (:class:`Fenced`) when its claim is superseded. The
lease is held until the end is written: an end that cannot be written while Postgres is slow or
away is written again, as long as the lease holds (up to :func:`end_retry_seconds`), rather than
the job being run again elsewhere, its effect with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import anyio.to_thread
import structlog
from pydantic import ValidationError

from services import ledger
from services.contract import JobName, JobStatus, Payload
from services.core.log_config import direct_logger
from services.core.settings import Settings
from services.jobs.context import JobContext
from services.jobs.loading import Loaded
from services.jobs.metrics import JobRun
from services.jobs.retries import Decision, RetryOverride, Verdict, declare, gave_up, job_timeout, retry_policy
from services.queue import RetryLater
from services.queue.fencing import Fenced

log = logging.getLogger("afterword.jobs")
events = direct_logger("jobs", "afterword.jobs")  # the two lines of every run, written directly

P = TypeVar("P", bound=Payload)
JobResult = dict[str, Any]
Implementation = Callable[[JobContext, P], Awaitable[JobResult]]
ArqCoroutine = Callable[..., Awaitable[JobResult | None]]

REGISTRY: dict[JobName, ArqCoroutine] = {}
"""The coroutine ARQ runs for each job name, filled by :func:`register`."""

SCHEDULED: dict[JobName, Callable[[dict[str, Any]], Awaitable[JobResult]]] = {}
"""The coroutine a cron entry runs for each job name: the job with its empty payload, no ledger row."""

NO_LEDGER_ROW = "no ledger row"
"""Why a job is refused: the ledger does not know it (see the module docstring)."""

END_RETRY_LEASES = 3
"""An end that cannot be written is tried again for up to this many leases, while the lease holds."""


def end_retry_seconds(settings: Settings) -> float:
    """How long a run keeps trying to write its end (Postgres slow or away) while it holds its lease."""
    return settings.lease_seconds * END_RETRY_LEASES


def register(loaded: Loaded) -> None:
    """Make a loaded job runnable: its coroutine for ARQ (:data:`REGISTRY`), for cron (:data:`SCHEDULED`), its policy.

    A plain ``def`` runs in a worker thread (as FastAPI runs a plain ``def`` endpoint), so that it
    does not hold up the other jobs; its timeout stops waiting for it, not the thread itself.
    """
    definition = loaded.definition
    name = definition.name
    if name in REGISTRY:
        raise RuntimeError(f"job {name} is registered twice")
    declare(
        name,
        RetryOverride(
            tries=definition.tries,
            base_delay=definition.base_delay,
            max_delay=definition.max_delay,
            permanent=loaded.permanent,
        ),
        timeout=definition.timeout,
    )
    model = definition.payload
    implementation = _as_coroutine(loaded.function)

    async def run(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> JobResult | None:
        context = cast(JobContext, ctx)
        with _observed(context, name) as observed:
            return await _run_tracked(context, name, model, implementation, payload or {}, observed)

    async def scheduled(ctx: dict[str, Any]) -> JobResult:
        context = cast(JobContext, ctx)
        with _observed(context, name) as observed:
            context["attempt"] = 0  # no ledger row, no attempts
            events.info("job started", job_try=context["job_try"], attempt=0, pickup_ms=_ms(observed.pickup_seconds))
            data = model.model_validate({})
            async with asyncio.timeout(job_timeout(name, context["settings"])):
                return await implementation(context, data)

    run.__qualname__ = run.__name__ = scheduled.__qualname__ = scheduled.__name__ = name.value
    REGISTRY[name] = run
    SCHEDULED[name] = scheduled


def install(jobs: Mapping[JobName, Loaded]) -> None:
    """:func:`register` every loaded job not registered yet (the worker's set-up calls it once)."""
    for name, loaded in jobs.items():
        if name not in REGISTRY:
            register(loaded)


def _as_coroutine(function: Callable[..., Any]) -> Implementation[Any]:
    if inspect.iscoroutinefunction(function):
        return cast(Implementation[Any], function)

    async def in_a_thread(ctx: JobContext, payload: Any) -> JobResult:
        result: JobResult = await anyio.to_thread.run_sync(functools.partial(function, ctx, payload))
        return result

    return in_a_thread


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
    policy = retry_policy(name, settings)  # consulted once per failure: policy.decide

    def retry_later(cause: BaseException, decision: Decision) -> RetryLater:
        log.info("job %s try %d: %s; retrying in %.1fs", job_id, job_try, _describe(cause), decision.delay)
        return RetryLater(defer=decision.delay)

    try:
        started = await ctx["attempts"].start(job_id, job_try=job_try)  # batched with concurrent starts
    except Exception as exc:
        decision = policy.decide(exc, job_try)
        if decision.retry:
            raise retry_later(exc, decision) from exc
        raise
    if started.previous is None:  # not accepted by the gateway: planted in Redis
        observed.refuse()
        log.warning("job %s (%s) refused, not run: %s (it was not queued by the gateway)", job_id, name, NO_LEDGER_ROW)
        return {"refused": NO_LEDGER_ROW}
    _note_start(ctx, started, observed)
    if started.superseded_by is not None:
        await _stand_aside(ctx, superseded_by=started.superseded_by)
    if not started.may_run:
        observed.skip()
        log.info("job %s is already %s; not running it again", job_id, started.previous)
        return {"skipped": f"already {started.previous}"}
    ctx["attempt"] = started.attempt
    await ctx["leases"].hold(job_id)

    async def finish(
        status: JobStatus,
        *,
        result: Any = None,
        error: str | None = None,
        run_at: datetime | None = None,
        again: bool = True,
    ) -> None:
        # Recording the outcome can fail too (Postgres slow or away). While the lease holds, nobody
        # else runs the job: the end is written again (``again``), for a while. After that the job
        # is tried again, and its effects, keyed on the job id, are not repeated once recorded.
        deadline = time.monotonic() + end_retry_seconds(settings)
        pause = 0.1
        while True:
            try:
                await ctx["attempts"].finish(
                    job_id=job_id, attempt=started.attempt, status=status, result=result, error=error, run_at=run_at
                )
                return
            except Fenced:
                raise
            except Exception as exc:
                decision = policy.decide(exc, job_try)
                if decision.verdict is Verdict.FAIL:
                    raise
                if again and ctx["leases"].holds(job_id) and time.monotonic() + pause < deadline:
                    log.warning("job %s: could not write its end (%s); trying again", job_id, _describe(exc))
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, settings.lease_seconds / 3)
                    continue
                if decision.retry:
                    raise retry_later(exc, decision) from exc
                raise

    try:
        await ctx["leases"].check(job_id, before="run")  # the lease may have run out while the start was on its way
        data = model.model_validate(payload)
        async with asyncio.timeout(job_timeout(name, settings)):
            result = await implementation(ctx, data)
    except asyncio.CancelledError:
        # Shutdown or abort: ARQ hands the job back (or the gateway already cancelled it). A run
        # cancelled because its lease was lost writes nothing more: the next start closes its attempt.
        if ctx["leases"].holds(job_id):
            interrupted = finish(
                JobStatus.queued, error="interrupted: the worker stopped or the job was cancelled", again=False
            )
            await asyncio.shield(_quietly(interrupted))
        raise
    except Fenced:
        raise  # the lease ran out (paused, cut off): nothing more, the next start closes the attempt
    except ValidationError as exc:
        await finish(JobStatus.failed, error=f"invalid payload: {exc.errors(include_url=False)}")
        raise
    except Exception as exc:
        decision = policy.decide(exc, job_try)
        if decision.verdict is Verdict.FAIL:
            await finish(JobStatus.failed, error=_describe(exc))
            raise
        if decision.retry:
            retry = retry_later(exc, decision)
            due = datetime.now(UTC) + timedelta(milliseconds=retry.defer_score or 0)  # the job's run_at from now
            with contextlib.suppress(RetryLater):  # not recorded: the next attempt's start says enough
                await finish(JobStatus.retrying, error=_describe(exc), run_at=due)
            raise retry from exc
        spent = await _time_since_first_try(ctx, attempt=started.attempt)  # Verdict.GIVE_UP
        await finish(JobStatus.failed, error=gave_up(tries=job_try, seconds=spent, error=_describe(exc)))
        raise
    await finish(JobStatus.succeeded, result=result)  # the lease is held until the end is written
    return result


async def _stand_aside(ctx: JobContext, *, superseded_by: int) -> None:
    """The ledger refused this claim's start: a claim at least as late (ARQ try ``superseded_by``) holds the job.

    That claim is live, or Redis lost the job and its try count since (then this worker still holds
    the key): the count is set past that try so that the next claim starts. Raises :class:`Fenced`.
    """
    job_id = ctx["job_id"]
    if await ctx["leases"].count_from(job_id, superseded_by):
        log.warning("job %s: Redis counts no more tries than the ledger; counting from try %d", job_id, superseded_by)
    raise Fenced("start", job_id, f"a claim at ARQ try {superseded_by} holds the job, this one is try {ctx['job_try']}")


async def _time_since_first_try(ctx: JobContext, *, attempt: int) -> float:
    """Seconds since this run's first try started (its ``job_try`` 1, ledger attempt ``attempt``).

    Read from the ledger; if it cannot answer, counted from ARQ's enqueue time instead.
    """
    first = max(attempt - ctx["job_try"] + 1, 1)
    try:
        since = await ledger.time_since_attempt_started(ctx["db"], job_id=ctx["job_id"], attempt=first)
    except Exception as exc:  # the job fails either way; only the figure is less exact
        log.warning("could not read when job %s was first tried: %s", ctx["job_id"], exc)
        since = None
    if since is None:
        return (datetime.now(UTC) - ctx["enqueue_time"]).total_seconds()
    return since.total_seconds()


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
    except Fenced:
        pass  # another claim started the job since: the attempt is closed already
    except Exception:  # RetryLater included: the worker is stopping, the next start records it
        log.exception("could not record the interrupted attempt")
