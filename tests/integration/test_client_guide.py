"""The examples of docs/client.md run as written, against the test stack, in a Python of their own."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.observers import Observer

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "client.md"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
# "Testing your app" holds a pytest suite, not scripts: tests/unit/test_client_testing_guide.py runs it.
EXAMPLES = _PYTHON_BLOCK.findall(GUIDE.read_text("utf-8").partition("\n## Testing your app\n")[0])
PRINTS = ["succeeded", "succeeded", "['payload.to']", "succeeded", "succeeded"]
"""Something each example prints when it works: the sync one, the async one, the errors one, the
transaction ones (asyncpg, SQLAlchemy)."""


def test_the_guide_has_the_examples_these_tests_expect() -> None:
    assert len(EXAMPLES) == len(PRINTS)


@pytest.mark.parametrize(
    ("example", "prints"),
    list(zip(EXAMPLES, PRINTS, strict=True)),
    ids=["sync", "async", "errors", "transaction", "transaction-sqlalchemy"],
)
async def test_an_example_of_the_guide_runs_as_written(
    example: str, prints: str, base_url: str, observer: Observer, tmp_path: Path
) -> None:
    code = example.replace("http://127.0.0.1:8000", base_url)
    environment = {name: value for name, value in os.environ.items() if name != "KEY"}  # the stack has no keys
    if "DATABASE_URL" in code:  # the example connects to the stack's database
        environment["DATABASE_URL"] = observer.db_dsn

    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=90,
        env=environment,
        cwd=tmp_path,
    )

    assert ran.returncode == 0, ran.stderr
    assert prints in ran.stdout, ran.stdout
