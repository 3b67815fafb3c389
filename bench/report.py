"""The bench's output: a flat summary of every figure, the table, the targets, the JSON and the chart."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("ours", "seed", "arq", "arq_fast")
HEADERS = ("Ours", "Seed (tutorial)", "Plain ARQ (defaults)", "Plain ARQ (poll 10 ms)")


def machine() -> dict[str, Any]:
    """What the bench ran on: cores, CPU model, RAM, and the software measured."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": _version(["redis-server", "--version"]),
        "postgres": _version(["psql", "--version"]),
        "wrk": _version(["wrk", "--version"]),
    }


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "unknown"


# --- Summary ------------------------------------------------------------------------------------


GATEWAYS = ("ours", "seed", "arq")
WORKERS = ("ours", "arq", "arq_fast")
Getter = Callable[[dict[str, Any], str], float]


@dataclass(frozen=True)
class Row:
    """One line of the table: a measure, its unit, the systems it applies to, how to read it."""

    key: str
    title: str
    unit: str
    columns: tuple[str, ...]
    get: Getter
    ratio_to: tuple[str, ...] = ()


def _dig(value: Any, path: str) -> float:
    for part in path.split("."):
        value = value[part]
    return float(value)


def _gateway(path: str) -> Getter:
    return lambda systems, column: _dig(systems[column]["gateway"], path)


def _worker(path: str) -> Getter:
    def get(systems: dict[str, Any], column: str) -> float:
        if column == "ours":
            return _dig(systems["ours"]["workers"]["wake"], path)
        return _dig(systems["arq"]["workers"]["0.01" if column == "arq_fast" else "0.5"], path)

    return get


def _transactional(percentile: str) -> Getter:
    """Our pickup latency for jobs enqueued in a transaction (``afterword_enqueue``, then the relay)."""
    return lambda systems, column: _dig(systems["ours"]["workers"]["transactional"], f"pickup_ms.{percentile}")


def _crash(systems: dict[str, Any], column: str) -> float:
    return float(systems[column]["crash_recovery"]["seconds"])


_ARQS = ("arq", "arq_fast")
ROWS = (
    Row(
        "rps",
        "POST /process throughput, 32 connections",
        "req/s",
        GATEWAYS,
        _gateway("throughput.rps"),
        ("seed", "arq"),
    ),
    Row(
        "latency_p50",
        "POST /process latency p50",
        "ms",
        GATEWAYS,
        _gateway("throughput.latency_ms.p50"),
        ("seed", "arq"),
    ),
    Row(
        "latency_p99",
        "POST /process latency p99",
        "ms",
        GATEWAYS,
        _gateway("throughput.latency_ms.p99"),
        ("seed", "arq"),
    ),
    Row("pickup_p50", "Pickup latency p50, light load", "ms", WORKERS, _worker("pickup_ms.p50"), _ARQS),
    Row("pickup_p99", "Pickup latency p99, light load", "ms", WORKERS, _worker("pickup_ms.p99"), _ARQS),
    Row("pickup_txn_p50", "Pickup latency p50, enqueued in a transaction", "ms", ("ours",), _transactional("p50")),
    Row("pickup_txn_p99", "Pickup latency p99, enqueued in a transaction", "ms", ("ours",), _transactional("p99")),
    Row(
        "drain_write_log_1w", "Drain write_log, 1 worker", "jobs/s", WORKERS, _worker("drain.write_log_1w.rate"), _ARQS
    ),
    Row(
        "drain_write_log_2w", "Drain write_log, 2 workers", "jobs/s", WORKERS, _worker("drain.write_log_2w.rate"), _ARQS
    ),
    Row("drain_signup_1w", "Drain signup mix, 1 worker", "jobs/s", WORKERS, _worker("drain.signup_1w.rate"), _ARQS),
    Row("drain_signup_2w", "Drain signup mix, 2 workers", "jobs/s", WORKERS, _worker("drain.signup_2w.rate"), _ARQS),
    Row(
        "drain_signup_smtp_5ms_1w",
        "Drain signup mix, SMTP answering in 5 ms, 1 worker",
        "jobs/s",
        ("ours",),
        _worker("drain.signup_smtp_5ms_1w.rate"),
    ),
    Row(
        "drain_signup_smtp_5ms_2w",
        "Drain signup mix, SMTP answering in 5 ms, 2 workers",
        "jobs/s",
        ("ours",),
        _worker("drain.signup_smtp_5ms_2w.rate"),
    ),
    Row(
        "drain_write_log_1w_busy",
        "Machine CPU busy, write_log drain, 1 worker",
        "%",
        WORKERS,
        _worker("drain.write_log_1w.host_busy_pct"),
    ),
    Row(
        "drain_signup_1w_busy",
        "Machine CPU busy, signup drain, 1 worker",
        "%",
        WORKERS,
        _worker("drain.signup_1w.host_busy_pct"),
    ),
    Row("crash_recovery", "Crash recovery, SIGKILL to re-run", "s", ("ours", "arq"), _crash, ("arq",)),
    Row("worker_idle_cpu", "Idle CPU, worker", "%", WORKERS, _worker("idle_cpu_pct")),
    Row("gateway_idle_cpu", "Idle CPU, gateway", "%", GATEWAYS, _gateway("idle_cpu_pct")),
    Row("gateway_rss", "Peak RSS under load, gateway", "MiB", GATEWAYS, _gateway("peak_rss_mib")),
    Row("worker_rss", "Peak RSS under load, worker", "MiB", WORKERS, _worker("peak_rss_mib")),
)


TARGETS = (
    # (name, metric key, comparison, bound, description)
    ("throughput vs plain ARQ", "ratio.rps.arq", ">=", 1.0, "gateway throughput >= 1.0x plain ARQ"),
    ("throughput vs seed", "ratio.rps.seed", ">=", 1.5, "gateway throughput >= 1.5x the seed"),
    ("p99 vs seed", "ratio.latency_p99.seed", "<=", 0.1, "gateway p99 latency <= 0.1x the seed's"),
    ("pickup p50", "ours.pickup_p50", "<=", 2.0, "pickup latency p50 <= 2 ms"),
    ("pickup p99", "ours.pickup_p99", "<=", 5.0, "pickup latency p99 <= 5 ms"),
    (
        "transactional pickup p50",
        "ours.pickup_txn_p50",
        "<=",
        5.0,
        "pickup latency p50 <= 5 ms, enqueued in a transaction",
    ),
    ("idle worker CPU", "ours.worker_idle_cpu", "<=", 1.0, "idle worker CPU <= 1 %"),
    (
        "drain write_log vs ARQ",
        "ratio.drain_write_log_1w.arq",
        ">=",
        1.0,
        "write_log drain >= 1.0x plain ARQ (defaults)",
    ),
    (
        "drain write_log vs ARQ 10 ms",
        "ratio.drain_write_log_1w.arq_fast",
        ">=",
        1.0,
        "write_log drain >= 1.0x plain ARQ (poll 10 ms)",
    ),
    ("drain signup vs ARQ", "ratio.drain_signup_1w.arq", ">=", 1.0, "signup-mix drain >= 1.0x plain ARQ (defaults)"),
    (
        "drain signup vs ARQ 10 ms",
        "ratio.drain_signup_1w.arq_fast",
        ">=",
        1.0,
        "signup-mix drain >= 1.0x plain ARQ (poll 10 ms)",
    ),
    ("2 workers write_log", "scaling.write_log", ">=", 1.5, "write_log drain with 2 workers >= 1.5x one"),
    ("2 workers signup", "scaling.signup", ">=", 1.5, "signup-mix drain with 2 workers >= 1.5x one"),
)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the table as ``metrics[<column>.<row>]``, the ratios, and the targets."""
    systems = results["systems"]
    metrics: dict[str, float] = {}
    for row in ROWS:
        for column in row.columns:
            metrics[f"{column}.{row.key}"] = row.get(systems, column)
        for other in row.ratio_to:
            base = metrics[f"{other}.{row.key}"]
            metrics[f"ratio.{row.key}.{other}"] = metrics[f"ours.{row.key}"] / base if base else float("nan")
    for kind in ("write_log", "signup"):
        metrics[f"scaling.{kind}"] = metrics[f"ours.drain_{kind}_2w"] / metrics[f"ours.drain_{kind}_1w"]
        # A second worker can only use the CPU that one worker's drain left idle: at the same CPU
        # per job and the machine 100 % busy, two workers drain this many times what one does. The
        # busy % is over the drain's steady state (measures.drain), the stretch its rate is from.
        metrics[f"scaling_ceiling.{kind}"] = 100 / max(1e-9, metrics[f"ours.drain_{kind}_1w_busy"])
    # Reported, not a target: the same signup drain with emails to a server that takes 5 ms.
    metrics["scaling.signup_smtp_5ms"] = (
        metrics["ours.drain_signup_smtp_5ms_2w"] / metrics["ours.drain_signup_smtp_5ms_1w"]
    )
    metrics["host.steal_pct"] = float(results["host_cpu"]["steal_pct"])
    metrics["host.busy_pct"] = float(results["host_cpu"]["busy_pct"])
    targets = []
    for name, key, op, bound, text in TARGETS:
        value = metrics[key]
        met = value >= bound if op == ">=" else value <= bound
        targets.append(
            {"name": name, "metric": key, "op": op, "bound": bound, "value": value, "met": met, "text": text}
        )
    return {"metrics": metrics, "targets": targets}


def expected_metrics() -> list[str]:
    """The name of every figure a complete run reports (what the smoke test checks)."""
    keys = [f"{column}.{row.key}" for row in ROWS for column in row.columns]
    keys += [f"ratio.{row.key}.{other}" for row in ROWS for other in row.ratio_to]
    return [
        *keys,
        "scaling.write_log",
        "scaling.signup",
        "scaling.signup_smtp_5ms",
        "scaling_ceiling.write_log",
        "scaling_ceiling.signup",
        "host.steal_pct",
        "host.busy_pct",
    ]


# --- Text ---------------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(summary: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per measure, with ratios ours/baseline."""
    metrics = summary["metrics"]
    head = ["Measure", *HEADERS, "Ours ÷ baseline"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    names = dict(zip(COLUMNS, ("ours", "seed", "ARQ", "ARQ 10 ms"), strict=True))
    for row in ROWS:
        cells = [f"{row.title} ({row.unit})"]
        cells += [_number(metrics.get(f"{column}.{row.key}")) for column in COLUMNS]
        ratios = [f"{metrics[f'ratio.{row.key}.{other}']:.2f}× {names[other]}" for other in row.ratio_to]
        cells.append(", ".join(ratios))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_text(summary: dict[str, Any]) -> str:
    """One line per target: met or not, and the measured value."""
    lines = ["Targets:"]
    for target in summary["targets"]:
        mark = "met    " if target["met"] else "NOT MET"
        value = f"{target['value']:.2f}"
        lines.append(f"  [{mark}] {target['text']}: {value}")
    metrics = summary["metrics"]
    lines.append(
        f"Machine: {metrics['host.busy_pct']:.0f} % of its CPU time busy and {metrics['host.steal_pct']:.1f} % "
        "stolen by the hypervisor over the run (/proc/stat)."
    )
    for kind in ("write_log", "signup"):
        lines.append(
            f"  {kind}: one worker's drain kept the machine {metrics[f'ours.drain_{kind}_1w_busy']:.0f} % busy; "
            f"two workers keeping it 100 % busy at the same CPU per job would drain "
            f"{metrics[f'scaling_ceiling.{kind}']:.2f}x one"
        )
    lines.append(
        "  signup with an SMTP server that answers in 5 ms (reported, not a target): two workers drain "
        f"{metrics['scaling.signup_smtp_5ms']:.2f}x one"
    )
    return "\n".join(lines)


# --- Files --------------------------------------------------------------------------------------


def write(results: dict[str, Any], directory: Path, *, chart: bool = True) -> list[Path]:
    """Write ``bench-<time>.json`` (and ``.png``), plus copies named ``latest``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    prefix = "smoke" if results["config"]["smoke"] else "bench"
    paths = []
    data = json.dumps(results, indent=2, sort_keys=True)
    for name in (f"{prefix}-{stamp}.json", f"{prefix}-latest.json"):
        (directory / name).write_text(data + "\n")
        paths.append(directory / name)
    if chart:
        from bench.chart import draw  # matplotlib is imported only when a chart is drawn

        for name in (f"{prefix}-{stamp}.png", f"{prefix}-latest.png"):
            draw(results, directory / name)
            paths.append(directory / name)
    return paths
