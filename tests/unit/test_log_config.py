"""JSON logs: configured in a fresh Python process, whose every line on stdout must parse."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support.services import REPO

SCRIPT = """
import logging, threading, warnings
import structlog
from services.log_config import configure_logging, direct_logger

configure_logging("jobs")
direct = direct_logger("jobs", "afterword.direct")
logging.getLogger("arq.worker").info("plain %s record", "stdlib")
logging.getLogger("arq.worker").warning("%6.2fs ! %s max retries %d exceeded", 0.5, "j2:write_log", 5)
log = structlog.stdlib.get_logger("afterword.test")
with structlog.contextvars.bound_contextvars(job_id="j1", job_name="write_log", request_id="r1"):
    log.info("job finished", outcome="succeeded")
    direct.info("written directly", attempt=2)
    direct.debug("below the level")
    logging.getLogger("afterword.jobs").warning("inside a job")
try:
    raise ValueError("bad\\nvalue")
except ValueError:
    logging.getLogger("afterword.jobs").exception("it failed")
warnings.warn("careful", UserWarning)
thread = threading.Thread(target=lambda: 1 / 0, name="side-thread")
thread.start()
thread.join()
class Unraisable:
    def __del__(self):
        raise OSError("in __del__")
Unraisable()
raise RuntimeError("uncaught")
"""


Output = tuple[list[dict[str, Any]], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def output() -> Output:
    """The script's stdout lines, parsed (a line that is not JSON fails here), and the finished process."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [json.loads(line) for line in done.stdout.splitlines()], done


def test_every_record_is_one_json_line_with_the_common_fields(output: Output) -> None:
    records, done = output

    assert done.returncode == 1
    assert done.stderr == ""  # warnings and the uncaught error went through the logs too
    assert [r["event"] for r in records] == [
        "plain stdlib record",
        "  0.50s ! j2:write_log max retries 5 exceeded",
        "job finished",
        "written directly",
        "inside a job",
        "it failed",
        records[6]["event"],
        "uncaught exception in thread side-thread",
        records[8]["event"],
        "uncaught exception",
    ]
    for record in records:
        assert record["service"] == "jobs"
        assert datetime.fromisoformat(record["timestamp"]).utcoffset() == timedelta(0)
        assert record["level"] in {"info", "warning", "error", "critical"}
        assert record["logger"]
    assert records[0]["logger"] == "arq.worker"
    assert records[3]["logger"] == "afterword.direct"
    assert "careful" in records[6]["event"]
    assert records[6]["logger"] == "py.warnings"
    assert "ZeroDivisionError" in records[7]["exception"]
    assert "Unraisable" in records[8]["event"]
    assert "OSError: in __del__" in records[8]["exception"]


def test_bound_context_is_on_structlog_and_stdlib_lines(output: Output) -> None:
    records, _ = output

    job_lines = [r for r in records if r.get("job_id") == "j1"]
    assert [r["event"] for r in job_lines] == ["job finished", "written directly", "inside a job"]
    for record in job_lines:
        assert (record["job_name"], record["request_id"]) == ("write_log", "r1")
    assert job_lines[0]["outcome"] == "succeeded"
    assert job_lines[1]["attempt"] == 2
    assert "job_id" not in records[5]


def test_exceptions_stay_on_one_line(output: Output) -> None:
    records, done = output

    failed = next(r for r in records if r["event"] == "it failed")
    assert failed["level"] == "error"
    assert "ValueError: bad\nvalue" in failed["exception"]
    uncaught = records[-1]
    assert uncaught["level"] == "critical"
    assert "RuntimeError: uncaught" in uncaught["exception"]
    assert len(done.stdout.splitlines()) == len(records)
