"""The measures: HTTP throughput and latency, pickup latency, drain rate, idle CPU, crash recovery.

Each takes a started system and returns plain numbers; :mod:`bench.__main__` decides what runs
against what, and :mod:`bench.report` turns the numbers into the table, the JSON and the chart.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bench import host_cpu
from bench.load import LoadRun, median_run
from bench.processes import Proc
from bench.systems import Timing


class Drainable(Protocol):
    """A system whose jobs can be preloaded and timed."""

    async def preload(self, kind: str, count: int, *, tag: str) -> list[str]: ...
    async def drained(self) -> bool: ...
    async def timings(self, job_ids: Sequence[str]) -> list[Timing]: ...


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``samples`` (nearest rank)."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1], "mean": statistics.fmean(ordered)}


# --- Throughput ---------------------------------------------------------------------------------


def summarize_load(runs: Sequence[LoadRun]) -> dict[str, Any]:
    """The medians of several wrk runs, and every run."""
    median = median_run(list(runs))
    return {
        "rps": median.rps,
        "latency_ms": _latency(median),
        "errors": median.errors,
        "distribution_ms": median.percentiles_ms,
        "runs": [{"rps": r.rps, "latency_ms": _latency(r), "errors": r.errors} for r in runs],
    }


def _latency(run: LoadRun) -> dict[str, float]:
    return {"p50": run.at(50), "p90": run.at(90), "p99": run.at(99), "p99.9": run.at(99.9), "max": run.max_ms}


# --- Idle CPU -----------------------------------------------------------------------------------


async def wait_quiet(processes: Sequence[Proc], *, below: float = 5.0, within: float = 300) -> None:
    """Wait until ``processes`` together use less than ``below`` % of a core (a backlog worked off)."""
    deadline = time.monotonic() + within
    while sum(await idle_cpu(processes, seconds=0.5)) >= below:
        if time.monotonic() > deadline:
            raise RuntimeError(f"still busy after {within}s: {[p.label for p in processes]}")


async def idle_cpu(processes: Sequence[Proc], *, seconds: float) -> list[float]:
    """CPU use of each process over ``seconds`` of doing nothing, in percent of one core."""
    before = [p.cpu_seconds() for p in processes]
    start = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    return [100 * (p.cpu_seconds() - b) / elapsed for p, b in zip(processes, before, strict=True)]


# --- Pickup latency -----------------------------------------------------------------------------


async def paced(count: int, interval: float, accept: Callable[[httpx.AsyncClient], Awaitable[str]]) -> list[str]:
    """Accept ``count`` jobs, one every ``interval`` seconds (light load); return their ids."""
    ids = []
    async with httpx.AsyncClient(timeout=10) as client:
        next_at = time.monotonic()
        for _ in range(count):
            ids.append(await accept(client))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return ids


async def until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` every ``interval`` seconds until it holds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not reached within {within}s: {what}")
        await asyncio.sleep(interval)


# --- Drain rate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    """How fast workers emptied a preloaded queue."""

    jobs: int
    rate: float
    """Jobs per second between the 10th and the 90th percentile of finish times (steady state)."""
    overall_rate: float
    """Jobs over the time from the first start to the last finish."""
    steady_from: float
    """When the steady state began: the 10th percentile of finish times (seconds since the epoch)."""
    steady_to: float
    """When it ended: the 90th percentile of finish times."""


def drain_rate(timings: Sequence[Timing]) -> Drain:
    """The steady and overall drain rates of a set of job timings."""
    finishes = sorted(t.finished for t in timings)
    first_start = min(t.started for t in timings)
    n = len(finishes)
    low, high = int(0.1 * n), int(0.9 * n) - 1
    steady = (high - low) / max(1e-9, finishes[high] - finishes[low])
    overall = n / max(1e-9, finishes[-1] - first_start)
    return Drain(jobs=n, rate=steady, overall_rate=overall, steady_from=finishes[low], steady_to=finishes[high])


CPU_SAMPLE_SECONDS = 0.02
"""How often a drain reads the machine's CPU times (one read of ``/proc/stat``)."""


def use_between(samples: Sequence[tuple[float, host_cpu.Times]], start: float, end: float) -> host_cpu.Use | None:
    """The machine's CPU use from the last sample at or before ``start`` to the first at or after ``end``.

    ``samples`` are (time since the epoch, CPU times) in time order. None when they do not cover
    the interval, or when the interval spans fewer than two sampling periods.
    """
    before = [s for s in samples if s[0] <= start]
    after = [s for s in samples if s[0] >= end]
    if not before or not after or after[0][0] - before[-1][0] < 2 * CPU_SAMPLE_SECONDS:
        return None
    return host_cpu.since(before[-1][1], after[0][1])


async def drain(
    system: Drainable,
    *,
    kind: str,
    requests: int,
    start_workers: Callable[[], Awaitable[Sequence[Proc]]],
    stop_workers: Callable[[], None],
    tag: str,
    within: float = 300,
) -> tuple[Drain, list[float], host_cpu.Use]:
    """Preload ``requests`` requests' jobs with no worker running, start the workers, time the drain.

    Returns the drain, each worker's peak RSS (MiB), and the machine's CPU use over the drain's
    steady state, the same stretch of time as its rate (from the 10th to the 90th percentile of
    the finish times). The queue is found empty only at the next look (every 0.25 s), and the
    workers take a moment to reach full speed: CPU use from the workers being up to that look
    counts idle time that the rate does not, as much as a third of a short drain. When the steady
    state is too short to sample, the use is that whole stretch instead.
    """
    job_ids = await system.preload(kind, requests, tag=tag)
    workers = await start_workers()
    samples: list[tuple[float, host_cpu.Times]] = []

    async def sample() -> None:
        while True:
            samples.append((time.time(), host_cpu.read()))
            await asyncio.sleep(CPU_SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    try:
        # Polled slowly and cheaply: the drain's figures come from the jobs' own timings.
        await until(system.drained, within=within, what=f"{len(job_ids)} {kind} jobs drained", interval=0.25)
        rss = [w.peak_rss_mib() for w in workers]
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        stop_workers()
    result = drain_rate(await system.timings(job_ids))
    use = use_between(samples, result.steady_from, result.steady_to) or host_cpu.since(samples[0][1], samples[-1][1])
    return result, rss, use


# --- A hanging SMTP server, for the crash measure -----------------------------------------------


@contextlib.asynccontextmanager
async def hanging_smtp(port: int) -> AsyncIterator[None]:
    """An SMTP 'server' that accepts connections and never answers: a send stays in flight."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
