"""docs/jobs.md stays true: its quotes are the repository's code, and its examples run as written.

A Python block whose first line is a file's name (``# services/contract.py``) quotes that file:
the rest of the block must be found in it, as it is. The other Python blocks, and the shell
blocks that call the gateway, run against the test stack (``$KEY`` unset: the stack has no keys).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "jobs.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_QUOTED_FILE = re.compile(r"# ([\w/]+\.py)\n")
GATEWAY = "http://127.0.0.1:8000"

BLOCKS = _BLOCK.findall(GUIDE.read_text("utf-8"))
QUOTES = [
    (match[1], code[match.end() :]) for kind, code in BLOCKS if kind == "python" and (match := _QUOTED_FILE.match(code))
]
PYTHON_EXAMPLES = [code for kind, code in BLOCKS if kind == "python" and not _QUOTED_FILE.match(code)]
SHELL_EXAMPLES = [code for kind, code in BLOCKS if kind == "sh" and GATEWAY in code]
PYTHON_PRINTS = ["-signups-by-day.csv"]
"""Something each Python example prints when it works: the client's."""
SHELL_PRINTS = ['"status":"succeeded"', '"loc":["body","payload","rows"]']
"""Something each shell example prints when it works: the job's record, the 422."""


def test_the_guide_has_the_blocks_these_tests_expect() -> None:
    assert len(QUOTES) >= 6
    assert len(PYTHON_EXAMPLES) == len(PYTHON_PRINTS)
    assert len(SHELL_EXAMPLES) == len(SHELL_PRINTS)


@pytest.mark.parametrize(("path", "quoted"), QUOTES, ids=[f"{path}:{i}" for i, (path, _) in enumerate(QUOTES)])
def test_a_quote_of_the_guide_is_the_repositorys_code(path: str, quoted: str) -> None:
    source = (ROOT / path).read_text("utf-8")

    assert quoted in source, f"docs/jobs.md quotes {path}, which no longer holds:\n{quoted}"


async def run(command: list[str], code: str, base_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if name != "KEY"}  # the stack has no keys
    return await asyncio.to_thread(
        subprocess.run,
        [*command, code.replace(GATEWAY, base_url)],
        capture_output=True,
        text=True,
        timeout=90,
        env=environment,
        cwd=cwd,
    )


@pytest.mark.parametrize(("example", "prints"), list(zip(PYTHON_EXAMPLES, PYTHON_PRINTS, strict=True)), ids=["client"])
async def test_a_python_example_of_the_guide_runs_as_written(
    example: str, prints: str, base_url: str, tmp_path: Path
) -> None:
    ran = await run([sys.executable, "-c"], example, base_url, tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert prints in ran.stdout, ran.stdout


@pytest.mark.parametrize(
    ("example", "prints"), list(zip(SHELL_EXAMPLES, SHELL_PRINTS, strict=True)), ids=["report", "422"]
)
async def test_a_shell_example_of_the_guide_runs_as_written(
    example: str, prints: str, base_url: str, tmp_path: Path
) -> None:
    if shutil.which("curl") is None or shutil.which("python3") is None:
        pytest.skip("the guide's shell examples need curl and python3")

    ran = await run(["bash", "-eo", "pipefail", "-c"], example, base_url, tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert prints in ran.stdout, ran.stdout
