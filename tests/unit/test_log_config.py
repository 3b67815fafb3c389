"""JSON logs: configured in a fresh Python process, whose every line on stdout must parse."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict

from services.core.log_config import direct_logger
from tests.support.services import REPO

SCRIPT = """
import logging, threading, warnings
import structlog
from services.core.log_config import configure_logging, direct_logger

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


class _Lines(io.TextIOWrapper):
    """A stdout whose bytes are kept (``buffer``), as the direct logger writes to it."""

    def __init__(self) -> None:
        self.kept = io.BytesIO()
        super().__init__(self.kept, encoding="utf-8")

    def lines(self) -> list[str]:
        return self.kept.getvalue().decode().splitlines()


def _structlog_reference(name: str) -> Any:
    """The processor chain the direct logger replaces (structlog's own), writing to a list."""
    written: list[str] = []

    class Collect:
        def msg(self, message: str) -> None:
            written.append(message)

        info = warning = error = msg

    def fields(logger: Any, method: str, event_dict: EventDict) -> EventDict:
        event_dict["logger"] = name
        return event_dict

    def service(logger: Any, method: str, event_dict: EventDict) -> EventDict:
        event_dict["service"] = "gateway"
        return event_dict

    logger = structlog.wrap_logger(
        Collect(),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            fields,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            service,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    logger.written = written
    return logger


def test_a_direct_line_is_the_line_structlogs_processors_render(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _Lines()
    monkeypatch.setattr(sys, "stdout", stdout)
    direct = direct_logger("gateway", "afterword.gateway.access")
    reference = _structlog_reference("afterword.gateway.access")

    with structlog.contextvars.bound_contextvars(request_id="r9", route="/bound"):
        for logger in (direct, reference):
            logger.info("request", route="/process", status=202, duration_ms=1.5, odd=object.__new__(_Odd))
            logger.warning("slow", n=1)
            logger.debug("dropped")

    ours = [json.loads(line) for line in stdout.lines()]
    theirs = [json.loads(line) for line in reference.written]
    for record in (*ours, *theirs):
        assert datetime.fromisoformat(record.pop("timestamp")).utcoffset() == timedelta(0)
    assert [list(r.items()) for r in ours] == [list(r.items()) for r in theirs]  # same fields, same order
    assert ours[0]["route"] == "/process"  # a field given wins over a bound one
    assert ours[0]["odd"] == "odd!"


def test_direct_exception_lines_carry_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _Lines()
    monkeypatch.setattr(sys, "stdout", stdout)
    direct = direct_logger("jobs", "afterword.jobs", level=logging.WARNING)

    direct.info("below the level")
    try:
        raise KeyError("missing")
    except KeyError:
        direct.exception("it broke", job_try=2)

    (line,) = [json.loads(text) for text in stdout.lines()]
    assert (line["event"], line["level"], line["job_try"]) == ("it broke", "error", 2)
    assert "KeyError: 'missing'" in line["exception"]


class _Odd:
    """A value JSON cannot hold, rendered by its ``__structlog__``."""

    def __structlog__(self) -> str:
        return "odd!"


@pytest.mark.parametrize("breaker", ["\x85", "\u2028", "\u2029", "\r", "\n", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c"])
def test_a_direct_line_stays_one_line_whatever_a_client_sent(monkeypatch: pytest.MonkeyPatch, breaker: str) -> None:
    stdout = _Lines()
    monkeypatch.setattr(sys, "stdout", stdout)
    path = f'/jobs/a{breaker}{{"event":"forged"}}'

    direct_logger("gateway", "afterword.gateway.access").info("request", path=path)

    (line,) = stdout.lines()  # str.splitlines breaks at every one of them when left raw
    assert json.loads(line)["path"] == path
