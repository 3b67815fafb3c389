"""The log writer: one JSON line per message, whatever the message holds and however many write at once."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.jobs.effects.log_writer import LogWriter

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = [
    "carriage\rreturn",
    "line\nfeed",
    "crlf\r\nBcc: x@example.com",
    "line\u2028separator",
    "paragraph\u2029separator",
    "next\u0085line",
    "nul\x00byte",
    "\x1b[31mred\x1b[0m and \x1b[2J clear",
    '{"time":"2000-01-01T00:00:00.000000+00:00","job_id":"forged","message":"forged"}\n',
    "\n\n\n",
    "tab\tvertical\x0bform\x0cfeed\x1cfile\x1dgroup\x1erecord\x1funit",
    "del\x7f c1\x80\x9f",
    "Zoë Ünal 日本語 🎉",
    "lone surrogate \ud800",
    'back\\slash and "quotes"',
]


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in _lines(path):
        record = json.loads(line)
        assert isinstance(record, dict)
        records.append(record)
    return records


async def test_one_json_object_per_line_with_time_job_id_and_message(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "afterword.log")
    before = datetime.now(UTC)

    returned, written = await writer.write(job_id="job-1", message="User sent data")

    assert written is True
    [line] = _lines(writer.path)
    assert line.decode() == returned
    record = json.loads(line)
    assert set(record) == {"time", "job_id", "message"}
    assert record["job_id"] == "job-1"
    assert record["message"] == "User sent data"
    at = datetime.fromisoformat(record["time"])
    assert at.tzinfo is not None
    assert at.utcoffset() is not None
    assert before <= at <= datetime.now(UTC)


async def test_lines_are_appended_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "afterword.log"
    path.write_bytes(b'{"existing":true}\n')
    writer = LogWriter(path)

    await writer.write(job_id="a", message="first")
    await LogWriter(path).write(job_id="b", message="second")

    records = _records(path)
    assert records[0] == {"existing": True}
    assert [(r["job_id"], r["message"]) for r in records[1:]] == [("a", "first"), ("b", "second")]


@pytest.mark.parametrize("message", HOSTILE)
async def test_hostile_message_stays_one_line_and_round_trips(tmp_path: Path, message: str) -> None:
    writer = LogWriter(tmp_path / "afterword.log")

    await writer.write(job_id="job-h", message=message)

    data = writer.path.read_bytes()
    assert data.count(b"\n") == 1
    assert data.endswith(b"\n")
    assert data.isascii()
    for separator in (b"\r", b"\x1b", b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e"):
        assert separator not in data
    # What a reader that splits on every Unicode line break sees: still one line.
    assert len(data.decode("ascii").splitlines()) == 1
    [record] = _records(writer.path)
    assert record["message"] == message
    assert record["job_id"] == "job-h"


def test_format_line_is_exact_bytes() -> None:
    at = datetime(2024, 5, 1, 12, 30, 0, tzinfo=UTC)

    line = LogWriter.format_line(job_id="j1", message="a\nb", at=at)

    assert line == b'{"time":"2024-05-01T12:30:00.000000+00:00","job_id":"j1","message":"a\\nb"}\n'


async def test_parent_directory_is_created(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "var" / "deep" / "afterword.log")

    await writer.write(job_id="j", message="m")

    assert writer.path.is_file()
    assert [r["message"] for r in _records(writer.path)] == ["m"]


def test_repr_names_the_file() -> None:
    assert repr(LogWriter(Path("/tmp/x.log"))) == "LogWriter('/tmp/x.log')"


async def test_concurrent_writes_in_one_process_never_interleave(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "afterword.log")
    messages = [f"{i:04d}:" + chr(ord("a") + i % 26) * 3000 + "\n\u2028" for i in range(200)]

    returned = await asyncio.gather(*(writer.write(job_id=f"job-{i}", message=m) for i, m in enumerate(messages)))

    lines = _lines(writer.path)
    assert len(lines) == 200
    assert all(written for _line, written in returned)
    assert sorted(line.decode() for line in lines) == sorted(line for line, _written in returned)
    records = [json.loads(line) for line in lines]
    assert sorted((r["job_id"], r["message"]) for r in records) == sorted(
        (f"job-{i}", m) for i, m in enumerate(messages)
    )


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from services.jobs.effects.log_writer import LogWriter

    async def main(path: str, proc: int, count: int) -> None:
        writer = LogWriter(Path(path))
        fill = "ABCD"[proc]
        await asyncio.gather(*(
            writer.write(job_id=f"p{proc}-{i}", message=f"p{proc}-{i}:" + fill * 3000 + "\\r\\n")
            for i in range(count)
        ))

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


def test_several_processes_appending_never_split_or_interleave(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "afterword.log"
    processes, per_process = 4, 200
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(proc), str(per_process)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for proc in range(processes)
    ]
    for child in children:
        _out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()

    lines = _lines(path)
    assert len(lines) == processes * per_process
    expected = {
        (f"p{proc}-{i}", f"p{proc}-{i}:" + "ABCD"[proc] * 3000 + "\r\n")
        for proc in range(processes)
        for i in range(per_process)
    }
    seen = set()
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"time", "job_id", "message"}
        seen.add((record["job_id"], record["message"]))
    assert seen == expected


# Re-runs: a job whose worker died after writing its line must not write it again.


async def test_a_rerun_finds_the_jobs_line_and_writes_nothing(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "afterword.log")
    first, written = await writer.write(job_id="job-r", message="once\n")
    await writer.write(job_id="other", message="after")

    again, written_again = await writer.write(job_id="job-r", message="once\n", rerun=True)

    assert (written, written_again) == (True, False)
    assert again == first
    assert [r["job_id"] for r in _records(writer.path)] == ["job-r", "other"]


async def test_without_rerun_a_second_write_appends_again(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "afterword.log")
    await writer.write(job_id="job-r", message="m")

    _line, written = await writer.write(job_id="job-r", message="m")

    assert written is True
    assert [r["job_id"] for r in _records(writer.path)] == ["job-r", "job-r"]


async def test_a_first_run_marked_rerun_still_writes(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "missing-dir" / "afterword.log")

    line, written = await writer.write(job_id="job-new", message="m", rerun=True)

    assert written is True
    [record] = _records(writer.path)
    assert json.loads(line) == record


@pytest.mark.parametrize(
    "other_id", ["job-1", "job-10x", "job-1\\", "JOB-1"], ids=["prefix", "longer", "escaped", "case"]
)
async def test_a_rerun_matches_its_own_job_id_exactly(tmp_path: Path, other_id: str) -> None:
    writer = LogWriter(tmp_path / "afterword.log")
    await writer.write(job_id=other_id, message="not mine")

    _line, written = await writer.write(job_id="job-10", message="mine", rerun=True)

    assert written is True
    assert [r["job_id"] for r in _records(writer.path)] == [other_id, "job-10"]


async def test_a_message_that_quotes_a_job_id_is_not_that_jobs_line(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "afterword.log")
    forged = '{"time":"2000-01-01T00:00:00.000000+00:00","job_id":"victim","message":"x"}'
    await writer.write(job_id="attacker", message=forged + '\n"job_id":"victim",')

    line, written = await writer.write(job_id="victim", message="real", rerun=True)

    assert written is True
    assert json.loads(line)["message"] == "real"
    assert [r["job_id"] for r in _records(writer.path)] == ["attacker", "victim"]


async def test_concurrent_reruns_of_one_job_write_one_line(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "afterword.log")

    results = await asyncio.gather(*(writer.write(job_id="job-c", message="m", rerun=True) for _ in range(20)))

    assert sum(written for _line, written in results) == 1
    assert len({line for line, _written in results}) == 1
    assert len(_lines(writer.path)) == 1


async def test_a_held_lock_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "afterword.log"
    writer = LogWriter(path)
    await writer.write(job_id="a" * 32, message="first")
    holder = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another writer (another worker process, say) holds the lock
    try:
        pending = asyncio.create_task(writer.write(job_id="b" * 32, message="second"))
        await asyncio.sleep(0.1)
        assert not pending.done()  # waiting in a thread: the event loop still runs this test
        assert [r["message"] for r in _records(path)] == ["first"]
    finally:
        os.close(holder)  # releases the lock
    line, written = await pending

    assert written
    assert [r["message"] for r in _records(path)] == ["first", "second"]
    assert json.loads(line)["job_id"] == "b" * 32
