"""The PNG chart of a bench run: latency distributions and throughputs, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only

import matplotlib.pyplot as plt

COLORS = {"ours": "#1b7f3b", "seed": "#c0392b", "arq": "#2c6fbb", "arq_fast": "#8e44ad"}
LABELS = {
    "ours": "Ours",
    "seed": "Seed (tutorial)",
    "arq": "Plain ARQ (defaults)",
    "arq_fast": "Plain ARQ (poll 10 ms)",
}


def draw(results: dict[str, Any], path: Path) -> None:
    """Four panels: HTTP latency by percentile, HTTP throughput, pickup latency, drain rates."""
    systems = results["systems"]
    metrics = results["summary"]["metrics"]
    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    (latency, rps), (pickup, drain) = axes

    for name in ("ours", "seed", "arq"):
        if name not in systems:
            continue
        distribution = systems[name]["gateway"]["throughput"]["distribution_ms"]
        points = sorted((float(p), ms) for p, ms in distribution.items())
        # Percentile on a log scale of "nines": x = 1 / (1 - p).
        latency.plot(
            [1 / (1 - p / 100) for p, _ in points], [ms for _, ms in points], label=LABELS[name], color=COLORS[name]
        )
    latency.set_xscale("log")
    latency.set_yscale("log")
    ticks = [50, 90, 99, 99.9, 99.99]
    latency.set_xticks([1 / (1 - p / 100) for p in ticks], [f"p{p:g}" for p in ticks])
    latency.set_title("POST /process latency at 32 connections")
    latency.set_ylabel("ms")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend()

    _bars(rps, metrics, "rps", ("ours", "seed", "arq"), "POST /process throughput at 32 connections", "requests/s")

    for name, samples in _pickups(systems).items():
        ordered = sorted(samples)
        if ordered:
            pickup.plot(
                ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=LABELS[name], color=COLORS[name]
            )
    pickup.set_xscale("log")
    pickup.set_title("Pickup latency at light load (cumulative)")
    pickup.set_xlabel("ms from acceptance to the job's start")
    pickup.set_ylabel("fraction of jobs")
    pickup.grid(True, which="both", alpha=0.3)
    pickup.legend()

    groups = ("drain_write_log_1w", "drain_write_log_2w", "drain_signup_1w", "drain_signup_2w")
    names = ("ours", "arq", "arq_fast")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [metrics.get(f"{name}.{group}", 0.0) for group in groups]
        positions = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        drain.bar(positions, values, width=width, label=LABELS[name], color=COLORS[name])
    drain.set_xticks(
        range(len(groups)), ["write_log\n1 worker", "write_log\n2 workers", "signup\n1 worker", "signup\n2 workers"]
    )
    drain.set_title("Worker drain rate")
    drain.set_ylabel("jobs/s")
    drain.grid(True, axis="y", alpha=0.3)
    drain.legend()

    machine = results["machine"]
    figure.suptitle(
        f"Afterword bench, {results['started_at']}: {machine['nproc']} cores, {machine['cpu_model']}, "
        f"{machine['ram_gib']} GiB" + ("  (smoke run)" if results["config"]["smoke"] else "")
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _bars(axis: Any, metrics: dict[str, float], key: str, names: tuple[str, ...], title: str, unit: str) -> None:
    values = [metrics.get(f"{name}.{key}", 0.0) for name in names]
    bars = axis.bar([LABELS[n] for n in names], values, color=[COLORS[n] for n in names])
    axis.bar_label(bars, fmt="%.0f")
    axis.set_title(title)
    axis.set_ylabel(unit)
    axis.grid(True, axis="y", alpha=0.3)


def _pickups(systems: dict[str, Any]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    if "ours" in systems:
        found["ours"] = systems["ours"]["workers"]["wake"]["pickup_samples_ms"]
    workers = systems.get("arq", {}).get("workers", {})
    if "0.5" in workers:
        found["arq"] = workers["0.5"]["pickup_samples_ms"]
    if "0.01" in workers:
        found["arq_fast"] = workers["0.01"]["pickup_samples_ms"]
    return found
