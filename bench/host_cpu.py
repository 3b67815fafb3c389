"""How busy the machine's CPUs were during a measure, and how much time the hypervisor stole.

On a shared VM the same code measures differently from one hour to the next: a vCPU whose host is
busy runs less (``steal`` in ``/proc/stat``), and every process the bench measures slows alike.
Each measure records both figures, so that a run on a contended host can be told apart from a
slower build. ``busy`` is what the machine's processes used, in % of all its CPUs: a drain whose
one worker already keeps the machine busy leaves a second worker little to run on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Times:
    """The machine's CPU time so far, over all CPUs, in clock ticks."""

    busy: int
    steal: int
    total: int


@dataclass(frozen=True)
class Use:
    """The machine's CPUs over an interval: busy and stolen, in % of all CPU time."""

    busy_pct: float
    steal_pct: float


def read() -> Times:
    """The first line of ``/proc/stat``: user nice system idle iowait irq softirq steal ..."""
    fields = [int(value) for value in STAT.read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return Times(busy=user + nice + system + irq + softirq, steal=steal, total=sum(fields[:8]))


def since(before: Times, after: Times | None = None) -> Use:
    """The use between ``before`` and ``after`` (now if None)."""
    after = after or read()
    total = max(1, after.total - before.total)
    return Use(busy_pct=100 * (after.busy - before.busy) / total, steal_pct=100 * (after.steal - before.steal) / total)
