"""HTTP load from ``wrk``: POST requests at a fixed number of connections, latency percentiles out.

wrk's own ``done()`` hook (a small Lua script) prints the run's figures as one JSON line, with
the latency at every percentile the report plots, so nothing is scraped from wrk's text output.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERCENTILES = (
    *range(1, 100),
    99.5,
    99.9,
    99.99,
)
"""The percentiles wrk reports for the latency distribution plot."""

MARKER = "BENCH_JSON "

LUA = """
wrk.method = "POST"
wrk.body = ""

local percentiles = {%(percentiles)s}

done = function(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, p in ipairs(percentiles) do
    parts[#parts + 1] = string.format('"%%s":%%d', tostring(p), latency:percentile(p))
  end
  io.write(string.format(
    '%(marker)s{"requests":%%d,"duration_us":%%d,"errors":{"connect":%%d,"read":%%d,"write":%%d,'
    .. '"status":%%d,"timeout":%%d},"latency_us":{"mean":%%f,"max":%%d,"percentiles":{%%s}}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, table.concat(parts, ",")))
end
"""


def wrk_path() -> str:
    """The ``wrk`` binary; `make bench` installs Debian's package when it is missing."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: `sudo apt-get install wrk` (make bench does it when run as root)")
    return found


@dataclass
class LoadRun:
    """One wrk run: requests per second and latency percentiles in milliseconds."""

    rps: float
    requests: int
    errors: int
    mean_ms: float
    max_ms: float
    percentiles_ms: dict[str, float] = field(default_factory=dict)

    def at(self, percentile: float) -> float:
        """The latency at ``percentile`` (one of :data:`PERCENTILES`), in ms."""
        return self.percentiles_ms[_key(percentile)]


def _key(percentile: float) -> str:
    # Lua's tostring(): 50 -> "50", 99.9 -> "99.9".
    return str(int(percentile)) if float(percentile).is_integer() else str(percentile)


def run_wrk(url: str, *, connections: int, seconds: float, threads: int = 1) -> LoadRun:
    """POST to ``url`` from ``connections`` keep-alive connections for ``seconds``."""
    script = LUA % {"percentiles": ", ".join(_key(p) for p in PERCENTILES), "marker": MARKER}
    with tempfile.TemporaryDirectory(prefix="afterword-wrk-") as directory:
        lua = Path(directory) / "post.lua"
        lua.write_text(script)
        command = [
            wrk_path(),
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            "--timeout=10s",
            "--latency",
            f"--script={lua}",
            url,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in completed.stdout.splitlines() if x.startswith(MARKER)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    data: dict[str, Any] = json.loads(line[len(MARKER) :])
    latency = data["latency_us"]
    return LoadRun(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        requests=data["requests"],
        errors=sum(data["errors"].values()),
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
        percentiles_ms={key: value / 1000 for key, value in latency["percentiles"].items()},
    )


def median_run(runs: list[LoadRun]) -> LoadRun:
    """The median of several runs, figure by figure."""
    keys = runs[0].percentiles_ms.keys()
    return LoadRun(
        rps=statistics.median(r.rps for r in runs),
        requests=round(statistics.median(r.requests for r in runs)),
        errors=sum(r.errors for r in runs),
        mean_ms=statistics.median(r.mean_ms for r in runs),
        max_ms=statistics.median(r.max_ms for r in runs),
        percentiles_ms={k: statistics.median(r.percentiles_ms[k] for r in runs) for k in keys},
    )
