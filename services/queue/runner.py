"""Running a job the worker claimed, with the job already fetched by the claim.

ARQ's ``Worker.run_job`` starts with a MULTI/EXEC of its own for each job: read the job, count
the try (``arq:retry:<id>``) and take the job off the abort set. Our worker's claim script
(``services.queue.claim``) does those same commands for every job it claims, in the round trip
that claims them, and hands the answers to :meth:`ClaimedJobRunner.run_claimed`: one round trip
per look instead of one more per job, on the path from a job's arrival to its start.

:meth:`ClaimedJobRunner.run_claimed` is the rest of ARQ's ``run_job`` (arq 0.28.0, pinned with the
other internals we rely on in ``services.queue.arq_internals``), step for step: expiry,
deserialization, abort before start, unknown function, the try count and ``max_tries``, the
``on_job_start``/``on_job_end``/``after_job_end`` hooks, the job's task in ``job_tasks`` (for
aborts), its timeout, retries, the result and ``finish_job``. Three things differ: ARQ's INFO line
at each job's start and end is not written (the jobs service writes its own, with ids, attempt,
outcome and timings, in ``services.jobs.execution``); the job's lease and any attempt begun at
its claim are let go when it ends, after its end is written (``services.queue.leases``,
``services.jobs.attempts``); and a run that lost its claim on the job (:class:`Fenced`: its lease
ran out, or another claim took the job over) is neither a failure nor a retry: it is logged as
fenced, stores no result and hands the job back, which changes nothing in Redis unless the
worker still holds the job's key (``services.queue.fencing``). ARQ's warnings and errors are kept,
word for word. A job whose fields have types ARQ's ``serialize_job`` never writes (anyone who can
write to Redis can plant one) fails as one that could not be deserialized, and so does a job
whose key is not a string; ARQ would raise on them in its main loop.

:meth:`ClaimedJobRunner.close` is ARQ's ``Worker.close`` made safe for the jobs still running.
ARQ's ``run()`` closes the worker whenever its main loop ends, a Redis outage included, and ARQ's
``close()`` gathers the job tasks without ``return_exceptions``: the first job whose end cannot
reach Redis makes it raise while other jobs still run, and whatever runs ``on_shutdown`` next
closes the Postgres pool, the leases and the mailer under them (a job whose email was accepted
then could not record it, and sent it again on its next try). Here the worker stops taking jobs,
lets the running ones end (up to the shutdown grace, ``job_completion_wait``), cancels those
still running so that each hands its attempt back, waits for them to do so, and only then runs
``on_shutdown``; Redis errors on the way are logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from arq.constants import keep_cronjob_progress, retry_key_prefix
from arq.cron import CronJob
from arq.jobs import DeserializationError, SerializationError, deserialize_job_raw, serialize_result
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Function, JobExecutionFailed, Retry, RetryJob, no_result
from arq.worker import Worker as ArqWorker

from services.core.failures import REDIS_FAILED
from services.jobs.attempts import AttemptBook
from services.queue import fencing
from services.queue.enqueue import RETRY_KEY_TTL_SECONDS
from services.queue.fencing import Fenced
from services.queue.leases import LeaseKeeper

log = logging.getLogger("arq.worker")  # ARQ's own logger: its warnings and errors read as before

HAND_BACK_SECONDS = 10.0
"""At close, how long jobs cancelled after the grace may take to hand their attempt back."""


@dataclass(frozen=True)
class Fetched:
    """What ARQ's ``run_job`` reads first: the job, its try number, whether it was to be aborted."""

    data: bytes | None
    """The serialized job (``arq:job:<id>``), None if it expired."""
    job_try: int
    abort: bool
    unreadable: bool = False
    """The job key holds another type than a string (a hostile value): the job is failed."""


class ClaimedJobRunner(ArqWorker):
    """ARQ's worker whose jobs arrive fetched (see the module docstring); same arguments."""

    async def close(self) -> None:
        """ARQ's ``close``: once no job runs any more, ``on_shutdown``, then the Redis pool is closed.

        The running jobs end first (see the module docstring). Nothing here raises: Redis errors
        are ignored (Redis may be what ended the worker) and an error of ``on_shutdown`` is logged,
        so that the error that ended the main loop is the one ``run()`` raises.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        self.allow_pick_jobs = False
        await self._let_running_jobs_finish()
        try:
            with contextlib.suppress(*REDIS_FAILED):
                await self.pool.delete(self.health_check_key)
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
        except Exception:
            log.exception("closing: on_shutdown failed")
        finally:
            with contextlib.suppress(*REDIS_FAILED):
                await self.pool.aclose(close_connection_pool=True)
            self._pool = None

    async def _let_running_jobs_finish(self) -> None:
        """Wait up to the shutdown grace for the running jobs; cancel the rest and let them hand back."""
        running = {task for task in self.tasks.values() if not task.done()}
        if running:
            log.info("closing: waiting up to %ss for %d running job(s)", self._job_completion_wait, len(running))
            _, running = await asyncio.wait(running, timeout=self._job_completion_wait)
        if running:
            log.warning("closing: %d job(s) still running after the grace are handed back", len(running))
            for task in running:
                task.cancel()
            _, running = await asyncio.wait(running, timeout=HAND_BACK_SECONDS)
        if running:
            log.error("closing: %d job(s) did not hand back within %ss", len(running), HAND_BACK_SECONDS)
        for job_id, task in self.tasks.items():
            error = None if not task.done() or task.cancelled() else task.exception()
            if error is not None:  # its end in Redis, say (Redis away): the lease runs out, it runs again
                log.warning("closing: job %s ended with %s: %s", job_id, type(error).__name__, error)

    async def run_claimed(self, job_id: str, score: int, fetched: Fetched) -> None:
        """Run a claimed, fetched job; its lease and an attempt begun at its claim end with it."""
        try:
            await self._run_fetched(job_id, score, fetched)
        finally:
            leases: LeaseKeeper | None = self.ctx.get("leases")
            stood_down = False  # its lease was lost: it writes nothing more
            if leases is not None:
                stood_down = job_id not in leases.held
                leases.release(job_id)
            attempts: AttemptBook | None = self.ctx.get("attempts")
            if attempts is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(attempts.abandon(job_id, hand_back=not stood_down))

    async def _run_fetched(self, job_id: str, score: int, fetched: Fetched) -> None:
        # arq 0.28.0's Worker.run_job from its pipeline on, without the per-job INFO lines.
        start_ms = timestamp_ms()
        job_try = fetched.job_try
        function_name, enqueue_time_ms = "<unknown>", 0
        args: tuple[Any, ...] = ()
        kwargs: dict[Any, Any] = {}

        async def job_failed(exc: BaseException) -> None:
            self.jobs_failed += 1
            result_data_ = serialize_result(
                function=function_name,
                args=args,
                kwargs=kwargs,
                job_try=job_try,
                enqueue_time_ms=enqueue_time_ms,
                success=False,
                result=exc,
                start_ms=start_ms,
                finished_ms=timestamp_ms(),
                ref=f"{job_id}:{function_name}",
                serializer=self.job_serializer,
                queue_name=self.queue_name,
                job_id=job_id,
            )
            await asyncio.shield(self.finish_failed_job(job_id, result_data_))

        if fetched.unreadable:
            return await job_failed(JobExecutionFailed("unreadable job: its key in Redis is not a string"))
        if not fetched.data:
            log.warning("job %s expired", job_id)
            return await job_failed(JobExecutionFailed("job expired"))
        try:
            fields = deserialize_job_raw(fetched.data, deserializer=self.job_deserializer)
            _check_fields(fields)
        except SerializationError as e:
            log.exception("deserializing job %s failed", job_id)
            return await job_failed(e)
        function_name, args, kwargs, enqueue_job_try, enqueue_time_ms = fields
        if fetched.abort:
            return await job_failed(asyncio.CancelledError())
        try:
            function: Function | CronJob = self.functions[function_name]
        except KeyError:
            log.warning("job %s, function %r not found", job_id, function_name)
            return await job_failed(JobExecutionFailed(f"function {function_name!r} not found"))

        if isinstance(function, CronJob):
            ref = function_name
            keep_in_progress: float | None = keep_cronjob_progress
        else:
            ref = f"{job_id}:{function_name}"
            keep_in_progress = None

        if enqueue_job_try and enqueue_job_try > job_try:
            job_try = enqueue_job_try
            await self.pool.setex(retry_key_prefix + job_id, RETRY_KEY_TTL_SECONDS, str(job_try))

        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            t = (timestamp_ms() - enqueue_time_ms) / 1000
            log.warning("%6.2fs ! %s max retries %d exceeded", t, ref, max_tries)
            self.jobs_failed += 1
            result_data = serialize_result(
                function_name,
                args,
                kwargs,
                job_try,
                enqueue_time_ms,
                False,
                JobExecutionFailed(f"max {max_tries} retries exceeded"),
                start_ms,
                timestamp_ms(),
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )
            return await asyncio.shield(self.finish_failed_job(job_id, result_data))

        result: Any = no_result
        exc_extra = None
        finish = False
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        incr_score: int | None = None
        job_ctx = {
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_time_ms),
            "score": score,
        }
        ctx = {**self.ctx, **job_ctx}

        if self.on_job_start:
            await self.on_job_start(ctx)

        start_ms = timestamp_ms()
        success = False
        try:
            self.job_tasks[job_id] = task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
            try:
                result = await asyncio.wait_for(task, timeout_s)
            except (Exception, asyncio.CancelledError) as e:
                exc_extra = getattr(e, "extra", None)
                if callable(exc_extra):
                    exc_extra = exc_extra()
                raise
            finally:
                del self.job_tasks[job_id]
        except (Exception, asyncio.CancelledError) as e:
            finished_ms = timestamp_ms()
            t = (finished_ms - start_ms) / 1000
            if self.retry_jobs and isinstance(e, Retry):
                incr_score = e.defer_score
                if e.defer_score:
                    incr_score = e.defer_score + (timestamp_ms() - score)
                self.jobs_retried += 1
            elif job_id in self.aborting_tasks and isinstance(e, asyncio.CancelledError):
                result = e
                finish = True
                self.aborting_tasks.remove(job_id)
                self.jobs_failed += 1
            elif self.retry_jobs and isinstance(e, asyncio.CancelledError | RetryJob):
                self.jobs_retried += 1
            elif isinstance(e, Fenced):  # not ours any more: no result, the job goes back as it is
                fencing.note(self.ctx, e)
            else:
                log.exception("%6.2fs ! %s failed, %s: %s", t, ref, e.__class__.__name__, e, extra={"extra": exc_extra})
                result = e
                finish = True
                self.jobs_failed += 1
        else:
            success = True
            finished_ms = timestamp_ms()
            finish = True
            self.jobs_complete += 1

        keep_result_forever = (
            self.keep_result_forever if function.keep_result_forever is None else function.keep_result_forever
        )
        result_timeout_s = self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        result_data = None
        if result is not no_result and (keep_result_forever or result_timeout_s > 0):
            result_data = serialize_result(
                function_name,
                args,
                kwargs,
                job_try,
                enqueue_time_ms,
                success,
                result,
                start_ms,
                finished_ms,
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )

        if self.on_job_end:
            await self.on_job_end(ctx)

        await asyncio.shield(
            self.finish_job(
                job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, keep_in_progress
            )
        )

        if self.after_job_end:
            await self.after_job_end(ctx)
        return None


LATEST_MS = 253402300799999
"""The last millisecond of the year 9999, the latest time a ``datetime`` holds."""


def _check_fields(fields: tuple[Any, ...]) -> None:
    """Raise ARQ's DeserializationError unless the job's fields have the types ARQ's ``serialize_job`` writes.

    A job written to Redis by anyone else can hold any JSON: a function name that is a list, an
    enqueue time that is a string. ARQ would raise on those outside of its error handling, in the
    worker's main loop; here the job fails like one that could not be deserialized.
    """
    function_name, args, kwargs, job_try, enqueue_time_ms = fields
    problems = []
    if not isinstance(function_name, str):
        problems.append("the function name is not a string")
    if not isinstance(args, list | tuple):
        problems.append("the arguments are not a list")
    if not isinstance(kwargs, dict):
        problems.append("the keyword arguments are not an object")
    if job_try is not None and (type(job_try) is not int or job_try < 0):
        problems.append("the try number is not a whole number")
    if type(enqueue_time_ms) not in (int, float) or not 0 <= enqueue_time_ms <= LATEST_MS:
        problems.append("the enqueue time is not a time in ms")
    if problems:
        raise DeserializationError(f"not a job: {'; '.join(problems)}")
