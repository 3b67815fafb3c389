"""The phases of a bench run, each measuring every system the same way, repetitions interleaved.

The systems take turns within each repetition (seed, plain ARQ, ours, then again), so that a
machine whose speed drifts during the run (a shared VM does) shifts every system alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench import host_cpu, measures
from bench.load import LoadRun, run_wrk
from bench.processes import Proc, free_port
from bench.systems import ArqSystem, OurSystem

DRAINS = (("write_log", "process"), ("signup", "signup"))
"""Drain kinds: (name in the results, what is preloaded)."""

WAITING_DRAINS = (("signup_smtp_5ms", "signup"),)
"""Our signup drain again, its workers' emails to an SMTP server that answers in 5 ms.

Reported, not a target: on a machine this small one worker's drain of the instant sink keeps more
than one core busy, which leaves a second worker little to run on; with jobs that wait for the
network, as sending mail does, a worker's CPU is free meanwhile.
"""


def say(text: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(text, file=sys.stderr, flush=True)


def _host_text(use: host_cpu.Use) -> str:
    return f" (machine {use.busy_pct:.0f} % busy, {use.steal_pct:.1f} % stolen)"


@dataclass(frozen=True)
class Gateway:
    """A system's HTTP front: its process and the URL that wrk loads."""

    name: str
    process: Proc
    url: str


async def gateways(
    items: Sequence[Gateway], *, connections: int, seconds: float, repetitions: int, warmup: float, idle: float
) -> dict[str, dict[str, Any]]:
    """Idle CPU (all at once), then throughput and latency: one wrk run per system per repetition."""
    idle_cpu = await measures.idle_cpu([g.process for g in items], seconds=idle)
    processes = [g.process for g in items]
    runs: dict[str, list[LoadRun]] = {g.name: [] for g in items}
    hosts: dict[str, list[host_cpu.Use]] = {g.name: [] for g in items}
    for rep in range(-1 if warmup > 0 else 0, repetitions):
        shift = max(rep, 0) % len(items)  # each repetition in another order: no system always goes last
        for gateway in [*items[shift:], *items[:shift]]:
            await measures.wait_quiet(processes)  # the seed works off its backlog after each run
            cpu = host_cpu.read()
            result = await asyncio.to_thread(
                run_wrk, gateway.url, connections=connections, seconds=warmup if rep < 0 else seconds
            )
            if rep >= 0:
                use = host_cpu.since(cpu)
                runs[gateway.name].append(result)
                hosts[gateway.name].append(use)
                say(f"  {gateway.name}: {result.rps:,.0f} req/s, p99 {result.at(99):.1f} ms{_host_text(use)}")
    return {
        g.name: {
            "idle_cpu_pct": cpu,
            "peak_rss_mib": g.process.peak_rss_mib(),
            "throughput": measures.summarize_load(runs[g.name]),
            "host_cpu": [asdict(use) for use in hosts[g.name]],
        }
        for g, cpu in zip(items, idle_cpu, strict=True)
    }


@dataclass(frozen=True)
class Workers:
    """A worker setup to measure: plain ARQ at one poll delay, or ours."""

    key: str
    system: measures.Drainable
    start: Callable[[int], Awaitable[Sequence[Proc]]]
    stop: Callable[[], None]
    accept_timed: Callable[[httpx.AsyncClient], Awaitable[str]]
    pickups: Callable[[Sequence[str]], Awaitable[list[float]]]


async def idle_and_pickup(setup: Workers, *, idle: float, settle: float, jobs: int, interval: float) -> dict[str, Any]:
    """One worker: its idle CPU, then the pickup latency of ``jobs`` jobs accepted ``interval`` apart."""
    workers = await setup.start(1)
    try:
        await asyncio.sleep(settle)
        (cpu,) = await measures.idle_cpu(workers, seconds=idle)
        figures, use = await _pickups(setup, jobs=jobs, interval=interval)
    finally:
        setup.stop()
    say(f"  {setup.key}: pickup p50 {figures['pickup_ms']['p50']:.2f} ms, idle CPU {cpu:.2f} %{_host_text(use)}")
    return {"idle_cpu_pct": cpu, **figures}


async def pickup(setup: Workers, *, settle: float, jobs: int, interval: float) -> dict[str, Any]:
    """One worker: the pickup latency of ``jobs`` jobs accepted ``interval`` apart."""
    await setup.start(1)
    try:
        await asyncio.sleep(settle)
        figures, use = await _pickups(setup, jobs=jobs, interval=interval)
    finally:
        setup.stop()
    say(f"  {setup.key}: pickup p50 {figures['pickup_ms']['p50']:.2f} ms{_host_text(use)}")
    return figures


async def _pickups(setup: Workers, *, jobs: int, interval: float) -> tuple[dict[str, Any], host_cpu.Use]:
    """The pickup latencies of ``jobs`` jobs accepted ``interval`` apart, and the machine's CPU use meanwhile."""
    host = host_cpu.read()
    ids = await measures.paced(jobs, interval, setup.accept_timed)
    use = host_cpu.since(host)

    async def picked_up() -> bool:
        return len(await setup.pickups(ids)) >= len(ids)

    await measures.until(picked_up, within=60, what=f"{setup.key} pickups", interval=0.1)
    samples = await setup.pickups(ids)
    return {
        "pickup_ms": measures.percentiles(samples),
        "pickup_samples_ms": samples,
        "pickup_host_cpu": asdict(use),
    }, use


async def drains(
    setups: Sequence[Workers],
    *,
    requests: dict[str, int],
    repetitions: int,
    kinds: Sequence[tuple[str, str]] = DRAINS,
) -> dict[str, dict[str, Any]]:
    """Drain rates of every setup, for each of ``kinds`` and 1 or 2 workers; setups take turns each repetition.

    One worker drains first in even repetitions, two in odd ones: each drain leaves its jobs in the
    ledger, and a drain on a larger ledger can cost Postgres more, so neither count always gets
    the larger one.
    """
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.key: {} for s in setups}
    peak_rss = dict.fromkeys(runs, 0.0)
    for rep in range(repetitions):
        for name, kind in kinds:
            for count in (1, 2) if rep % 2 == 0 else (2, 1):
                for setup in setups:

                    async def start(setup: Workers = setup, count: int = count) -> Sequence[Proc]:
                        return await setup.start(count)

                    result, rss, use = await measures.drain(
                        setup.system,
                        kind=kind,
                        requests=requests[kind],
                        start_workers=start,
                        stop_workers=setup.stop,
                        tag=f"{setup.key}-{name}-{count}-{rep}-{time.time_ns()}",
                    )
                    peak_rss[setup.key] = max([peak_rss[setup.key], *rss])
                    run = {**asdict(result), "host_cpu": asdict(use)}
                    runs[setup.key].setdefault(f"{name}_{count}w", []).append(run)
                    say(f"  {setup.key}: drain {name} x{count}: {result.rate:,.0f} jobs/s{_host_text(use)}")
    return {
        key: {
            "drain": {
                label: {
                    "rate": statistics.median(r["rate"] for r in results),
                    "overall_rate": statistics.median(r["overall_rate"] for r in results),
                    "host_busy_pct": statistics.median(r["host_cpu"]["busy_pct"] for r in results),
                    "jobs": results[0]["jobs"],
                    "runs": results,
                }
                for label, results in by_label.items()
            },
            "peak_rss_mib": peak_rss[key],
        }
        for key, by_label in runs.items()
    }


async def our_crash(ours: OurSystem, *, repetitions: int) -> dict[str, Any]:
    """SIGKILL the worker running a job (two run); time until the other one starts it again."""
    samples = []
    hang = free_port()
    async with measures.hanging_smtp(hang), httpx.AsyncClient(base_url=ours.base_url, timeout=10) as client:
        for _ in range(repetitions):
            workers = await ours.start_workers(2, smtp_port=hang)
            email = {"to": "crash@example.com", "subject": "Crash", "body": "SIGKILL"}
            response = await client.post("/jobs", json={"name": "send_email", "payload": email})
            response.raise_for_status()
            job_id = response.json()["id"]
            holder, _ = await _attempt(ours, job_id, 1, within=30)  # "host:pid:suffix"
            victim = next(w for w in workers if w.pid == int(holder.split(":")[1]))
            await asyncio.sleep(0.2)
            victim.kill()
            killed_at = time.time()
            _, started = await _attempt(ours, job_id, 2, within=120)
            samples.append(started - killed_at)
            await client.delete(f"/jobs/{job_id}")
            for worker in ours.workers:
                worker.kill()  # the survivor holds a send that hangs: no grace period to sit out
            ours.workers = []
            say(f"  ours: crash recovery {samples[-1]:.2f} s")
    return {"seconds": statistics.median(samples), "measured": True, "samples": samples}


async def _attempt(ours: OurSystem, job_id: str, try_: int, *, within: float) -> tuple[str, float]:
    """Wait for attempt ``try_`` of a job to start; its worker and start time."""
    deadline = time.monotonic() + within
    while (found := await ours.attempt(job_id, try_)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"attempt {try_} of job {job_id} did not start within {within}s")
        await asyncio.sleep(0.01)
    return found


async def arq_crash(arq: ArqSystem, *, poll_delay: float) -> dict[str, Any]:
    """SIGKILL a plain ARQ worker mid-job: its in-progress key says when the job may run again.

    That is ARQ's job timeout plus 10 s (310 s at the defaults); the bench reads the key's TTL
    at the kill instead of waiting it out, and adds half a poll delay for the pickup.
    """
    hang = free_port()
    async with measures.hanging_smtp(hang):
        (worker,) = await arq.start_workers(1, poll_delay=poll_delay, smtp_port=hang)
        async with httpx.AsyncClient(base_url=arq.base_url, timeout=10) as client:
            response = await client.post("/signup", json={"email": "crash@example.com", "name": "Crash"})
            response.raise_for_status()
            email_job = response.json()["job_ids"][0]

        async def running() -> bool:
            return await arq.in_progress_ttl(email_job) is not None

        await measures.until(running, within=30, what="plain ARQ send_email running")
        await asyncio.sleep(0.2)
        worker.kill()
        ttl = await arq.in_progress_ttl(email_job)
        arq.stop_workers()
    assert ttl is not None
    return {
        "seconds": ttl + poll_delay / 2,
        "measured": False,
        "note": "not waited out: the in-progress key's TTL at the kill, plus half a poll delay",
    }
