"""Redis killed with jobs queued, flushed after the 202s, or down during the POST: nothing is lost."""

from __future__ import annotations

import asyncio
import pickle
import signal
import time
from pathlib import Path

import pytest
from arq.constants import job_key_prefix, result_key_prefix

from tests.faults.conftest import QUEUE, FaultStack, until


async def stop_workers(stack: FaultStack) -> None:
    for worker in list(stack.workers):
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        stack.drop_worker(worker)


async def test_redis_killed_with_jobs_queued_then_restarted(stack: FaultStack) -> None:
    await stop_workers(stack)
    for _ in range(5):
        await stack.post("/process")
    assert await stack.redis_client.zcard(QUEUE) >= 5

    stack.redis.kill()
    stack.redis.start()  # AOF with appendfsync always: the queue survives the crash

    assert await stack.redis_client.zcard(QUEUE) >= 5
    # check_books (after the test) starts the workers again and waits for every job.


async def test_workers_survive_a_redis_restart(stack: FaultStack) -> None:
    pids = {worker.pid for worker in stack.workers}
    stack.redis.kill()
    stack.redis.start()
    await stack.ready()

    answer = await stack.post("/process")
    (job_id,) = (job["id"] for job in answer["jobs"])
    job = await stack.job(job_id)
    await until(_succeeded(stack, job_id), within=30, what="a job accepted after the restart ran")
    assert {worker.pid for worker in stack.workers if worker.process is not None} == pids, (
        "the worker processes restarted ARQ in place instead of exiting"
    )
    assert job["id"] == job_id


async def test_flushall_after_the_202s_is_recovered_from_the_ledger(stack: FaultStack) -> None:
    await stop_workers(stack)
    await stack.post("/signup", {"email": f"flush-{time.time_ns()}@example.com", "name": "Flo"})
    for _ in range(3):
        await stack.post("/process")

    await stack.redis_client.flushall()

    # The sweep finds ledger rows Redis no longer knows and queues them again; check_books then
    # proves each ran once.


@pytest.mark.parametrize("down_for", [0.3, 0.8, 1.5])
async def test_sigterm_while_redis_is_down_stops_the_worker(stack: FaultStack, down_for: float) -> None:
    # Redis gone, the worker either is still stopping its ARQ worker (whose clean-up then fails on
    # Redis), between two ARQ workers, or starting the next one: whichever, SIGTERM stops the
    # process for good, with exit code 0, instead of being lost or followed by a restart.
    worker = stack.workers[0]
    stack.redis.kill()
    await asyncio.sleep(down_for)
    worker.signal(signal.SIGTERM)

    code = await asyncio.to_thread(worker.wait, 20)
    stack.drop_worker(worker)
    assert code == 0, worker.output()[-3000:]


async def test_redis_down_during_the_post_still_acknowledges_and_runs_later(stack: FaultStack) -> None:
    stack.redis.kill()
    answer = await stack.post("/process")  # 202: the row is committed, the push failed
    (job_id,) = (job["id"] for job in answer["jobs"])
    assert (await stack.job(job_id))["status"] == "queued"
    stack.redis.start()
    await until(_succeeded(stack, job_id), within=45, what="the job accepted while Redis was down ran")


async def test_a_pickle_planted_in_redis_never_runs(stack: FaultStack, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    job_id = f"planted-{time.time_ns()}"
    job = {"f": "write_log", "a": [{"message": "x"}], "k": {}, "t": 1, "et": int(time.time() * 1000)}
    await stack.redis_client.set(job_key_prefix + job_id, pickle.dumps(Exploit()) + pickle.dumps(job))
    await stack.redis_client.zadd(QUEUE, {job_id: time.time() * 1000})

    async def handled() -> bool:
        return bool(await stack.redis_client.exists(result_key_prefix + job_id))

    await until(handled, within=20, what="the worker dealt with the planted job")
    assert not marker.exists(), "the pickle payload ran"
    assert all(worker.process is not None and worker.process.poll() is None for worker in stack.workers)


async def test_a_redis_outage_lets_running_jobs_record_their_end(stack: FaultStack) -> None:
    # One worker runs two emails that the server answers 2 s apart, the first while Redis is
    # already down: the first job's end cannot reach Redis. The worker must not close its
    # Postgres pool (or anything else a job uses) under the second job, whose 250 comes later:
    # both record their effect and their end, once, in the attempt that sent them.
    spare = stack.workers[1]
    spare.signal(signal.SIGTERM)
    assert spare.wait(timeout=30) == 0
    stack.drop_worker(spare)
    first, worker = await stack.email_in_flight(f"outage-1-{time.time_ns()}@example.com", delay=4)
    await asyncio.sleep(2)
    second, same = await stack.email_in_flight(f"outage-2-{time.time_ns()}@example.com", delay=4)
    assert same is worker
    stack.redis.kill()

    for accepted in (first, second):
        await until(_succeeded(stack, accepted["id"]), within=20, what=f"job {accepted['id']} recorded its end")
        job = await stack.job(accepted["id"])
        assert [a["outcome"] for a in job["attempts"]] == ["succeeded"], job
        assert len(stack.sink.messages_to(job["payload"]["to"])) == 1
    assert worker.process is not None
    assert worker.process.poll() is None, "the worker process exited"
    assert "pool is closing" not in worker.output()


def _succeeded(stack: FaultStack, job_id: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool((await stack.job(job_id))["status"] == "succeeded")

    return check


async def test_a_retry_while_redis_is_down_changes_nothing_and_works_once_it_is_back(stack: FaultStack) -> None:
    answer = await stack.post("/jobs", {"name": "write_log", "payload": {"message": "retried"}, "defer_by": 3600})
    job_id = answer["id"]
    cancelled = await stack.http.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text

    stack.redis.kill()
    refused = await stack.http.post(f"/jobs/{job_id}/retry")
    record = await stack.job(job_id)
    stack.redis.start()
    retried = await stack.http.post(f"/jobs/{job_id}/retry")

    assert refused.status_code == 503, refused.text
    assert "Redis" in refused.json()["detail"]
    assert record["status"] == "cancelled"  # not queued in the ledger while the queue could not take it
    assert retried.status_code == 202, retried.text
    await until(_succeeded(stack, job_id), within=45, what="the job retried once Redis was back ran")
