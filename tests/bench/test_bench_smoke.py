"""`make bench` in its --smoke mode: every measure runs, tiny, and the result file is complete.

Nothing here judges the numbers (no timed assertions): only that each one was measured.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import expected_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(170)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_smoke_run_writes_every_metric_as_a_number(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=160,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((tmp_path / "smoke-latest.json").read_text())
    metrics = results["summary"]["metrics"]
    missing = [key for key in expected_metrics() if key not in metrics]
    assert not missing
    not_numbers = {key: metrics[key] for key in expected_metrics() if not _number(metrics[key])}
    assert not not_numbers
    assert all(isinstance(target["met"], bool) for target in results["summary"]["targets"])
    assert {"nproc", "cpu_model", "ram_gib"} <= results["machine"].keys()
    assert (tmp_path / "smoke-latest.png").stat().st_size > 10_000
    assert "| Measure |" in done.stdout


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
