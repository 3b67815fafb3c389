"""``python -m bench [--smoke] [--repetitions N] [--out DIR]``: measure our stack and both baselines.

One run starts, on this machine and on throwaway resources, the seed (FastAPI tutorial), plain
ARQ (its app and its worker, at ARQ's defaults and at ``poll_delay=0.01``) and our stack, drives
them with the same load, prints a table with the ratios ours/baseline and writes
``bench/results/bench-<time>.json`` and ``.png`` (and ``bench-latest.json``/``.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import host_cpu, phases, report
from bench.processes import REPO, Proc, free_port
from bench.systems import ArqSystem, OurSystem, SeedSystem

RESULTS = REPO / "bench" / "results"
ARQ_POLLS = (0.5, 0.01)
"""Plain ARQ's worker at its default poll delay and at 10 ms."""


@dataclass(frozen=True)
class Config:
    """What one run measures, and how long."""

    smoke: bool
    repetitions: int
    connections: int = 32
    load_seconds: float = 10
    warmup_seconds: float = 3
    idle_seconds: float = 10
    pickup_jobs: int = 200
    pickup_interval: float = 0.05
    drain_process_requests: int = 3000
    drain_signup_requests: int = 1000
    crash_repetitions: int = 3
    settle_seconds: float = 1.0
    """Let a process that just started finish its start-up before it is measured."""

    @classmethod
    def build(cls, *, smoke: bool, repetitions: int | None) -> Config:
        """The full run, or the smoke run (every measure, tiny)."""
        if not smoke:
            return cls(smoke=False, repetitions=repetitions or 3)
        return cls(
            smoke=True,
            repetitions=repetitions or 1,
            load_seconds=1,
            warmup_seconds=0,
            idle_seconds=0.5,
            pickup_jobs=10,
            drain_process_requests=40,
            drain_signup_requests=15,
            crash_repetitions=1,
            settle_seconds=0.2,
        )


async def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        await asyncio.sleep(0.05)


def _smtp_sink(label: str, port: int, handler: str, workdir: Path) -> Proc:
    """An aiosmtpd server on ``port`` whose messages go to ``handler`` (a class path), not started."""
    return Proc(
        label,
        ["-m", "aiosmtpd", "--nosetuid", "-n", "-l", f"127.0.0.1:{port}", "-c", handler],
        env={},
        workdir=workdir,
    )


async def run(config: Config) -> dict[str, Any]:
    """Start the three systems, measure them phase by phase; return every figure."""
    workdir = Path(tempfile.mkdtemp(prefix="afterword-bench-"))
    smtp_port, slow_smtp_port = free_port(), free_port()
    sink = _smtp_sink("smtp-sink", smtp_port, "aiosmtpd.handlers.Sink", workdir)
    slow_sink = _smtp_sink("smtp-sink-5ms", slow_smtp_port, "bench.slow_smtp.SlowSink", workdir)
    seed = SeedSystem(workdir)
    arq = ArqSystem(workdir, smtp_port=smtp_port)
    ours = OurSystem(workdir, smtp_port=smtp_port, lease_seconds=1.0 if config.smoke else None)
    started = time.time()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": report.machine(),
        "config": asdict(config),
    }
    running: list[SeedSystem | ArqSystem | OurSystem] = []
    cpu = host_cpu.read()
    try:
        sink.start()
        slow_sink.start()
        await _wait_port(smtp_port)
        await _wait_port(slow_smtp_port)
        for system in (seed, arq, ours):
            await system.start()
            running.append(system)
        await asyncio.sleep(config.settle_seconds)
        phases.say("gateways: idle CPU, then POST /process at 32 connections (systems take turns)")
        fronts = [
            phases.Gateway("seed", seed.gateway, f"{seed.base_url}/process"),
            phases.Gateway("arq", arq.gateway, f"{arq.base_url}/process"),
            phases.Gateway("ours", ours.gateway, f"{ours.base_url}/process"),
        ]
        front = await phases.gateways(
            fronts,
            connections=config.connections,
            seconds=config.load_seconds,
            repetitions=config.repetitions,
            warmup=config.warmup_seconds,
            idle=config.idle_seconds,
        )
        await seed.stop()
        running.remove(seed)
        await arq.reset()  # the jobs the load queued with no worker running
        await _forget_jobs(ours)
        setups = _worker_setups(arq, ours)
        workers: dict[str, dict[str, Any]] = {}
        for setup in setups:
            phases.say(f"workers {setup.key}: idle CPU, then pickup latency at light load")
            workers[setup.key] = await phases.idle_and_pickup(
                setup,
                idle=config.idle_seconds,
                settle=config.settle_seconds,
                jobs=config.pickup_jobs,
                interval=config.pickup_interval,
            )
        phases.say("workers ours: pickup latency at light load, jobs enqueued in a transaction")
        transactional = await phases.pickup(
            _transactional_setup(ours),
            settle=config.settle_seconds,
            jobs=config.pickup_jobs,
            interval=config.pickup_interval,
        )
        phases.say("workers: drain rates (setups take turns)")
        drained = await phases.drains(
            setups,
            requests={"process": config.drain_process_requests, "signup": config.drain_signup_requests},
            repetitions=config.repetitions,
        )
        for key, figures in drained.items():
            workers[key].update(figures)
        phases.say("workers: our signup drain, emails to an SMTP server that answers in 5 ms")
        waited = await phases.drains(
            [_waiting_setup(ours, smtp_port=slow_smtp_port)],
            requests={"signup": config.drain_signup_requests},
            repetitions=config.repetitions,
            kinds=phases.WAITING_DRAINS,
        )
        workers["ours"]["drain"].update(waited["ours"]["drain"])
        phases.say("crash recovery")
        results["systems"] = {
            "seed": {"gateway": front["seed"]},
            "arq": {
                "gateway": front["arq"],
                "workers": {str(poll): {"poll_delay": poll, **workers[f"arq:{poll}"]} for poll in ARQ_POLLS},
                "crash_recovery": await phases.arq_crash(arq, poll_delay=ARQ_POLLS[0]),
            },
            "ours": {
                "gateway": front["ours"],
                "workers": {"wake": workers["ours"], "transactional": transactional},
                "crash_recovery": await phases.our_crash(ours, repetitions=config.crash_repetitions),
            },
        }
    finally:
        for system in running:
            await system.stop()
        sink.stop()
        slow_sink.stop()
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            phases.say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["duration_seconds"] = time.time() - started
    results["host_cpu"] = asdict(host_cpu.since(cpu))
    results["summary"] = report.summarize(results)
    return results


def _worker_setups(arq: ArqSystem, ours: OurSystem) -> list[phases.Workers]:
    """Plain ARQ's worker at each poll delay, and ours."""
    setups = []
    for poll in ARQ_POLLS:

        async def start_arq(count: int, poll: float = poll) -> Sequence[Proc]:
            return await arq.start_workers(count, poll_delay=poll)

        setups.append(phases.Workers(f"arq:{poll}", arq, start_arq, arq.stop_workers, arq.accept_timed, arq.pickups_ms))
    setups.append(
        phases.Workers("ours", ours, ours.start_workers, ours.stop_workers, ours.accept_timed, ours.pickups_ms)
    )
    return setups


def _transactional_setup(ours: OurSystem) -> phases.Workers:
    """Our worker, its jobs enqueued in transactions of the bench's own (``afterword_enqueue``)."""
    return phases.Workers(
        "ours:transactional", ours, ours.start_workers, ours.stop_workers, ours.accept_in_transaction, ours.pickups_ms
    )


def _waiting_setup(ours: OurSystem, *, smtp_port: int) -> phases.Workers:
    """Our workers, their emails going to the SMTP server on ``smtp_port``."""

    async def start(count: int) -> Sequence[Proc]:
        return await ours.start_workers(count, smtp_port=smtp_port)

    return phases.Workers("ours", ours, start, ours.stop_workers, ours.accept_timed, ours.pickups_ms)


async def _forget_jobs(ours: OurSystem) -> None:
    """Drop the jobs the load queued (no worker ran): the ledger rows and Redis' copies."""
    await ours.db.execute("TRUNCATE jobs, job_attempts, job_effects")
    await ours.redis.flushdb()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, run, print the table, write the JSON and the chart."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every measure, tiny and fast (the test suite's run)")
    parser.add_argument("--repetitions", type=int, default=None, help="runs per measure (medians); 3 by default")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON and PNG results")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    config = Config.build(smoke=args.smoke, repetitions=args.repetitions)
    results = asyncio.run(run(config))
    paths = report.write(results, args.out, chart=not args.no_chart)
    print(report.table(results["summary"]))
    print()
    print(report.targets_text(results["summary"]))
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
