"""The examples of docs/client.md's "Testing your app" run as written: a user's app, its conftest and its tests.

Each example's first line names its file; the files are written to a directory of their own and
pytest runs them there, in a process of its own, once for this module. Each test below is the
guide's test of the same name, and passes when it passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.testing.databases import ADMIN_URL_VARIABLE
from tests.support.database import ADMIN_DSN

ROOT = Path(__file__).resolve().parents[2]
SECTION = "\n## Testing your app\n"
_PYTHON_BLOCK = re.compile(r"^```python\n# ([\w.]+\.py)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR) [\w.]+::(test_\w+)", re.MULTILINE)
GUIDE_TESTS = ["test_a_signup_queues_a_welcome_email", "test_a_refused_address_fails_the_welcome_email"]


def guide_files() -> dict[str, str]:
    """The section's examples by file name; the examples of one file, one after the other."""
    text = (ROOT / "docs" / "client.md").read_text("utf-8")
    section = text.partition(SECTION)[2].partition("\n## ")[0]
    files: dict[str, str] = {}
    for name, code in _PYTHON_BLOCK.findall(section):
        files[name] = files.get(name, "") + code + "\n"
    return files


@dataclass(frozen=True)
class GuideRun:
    """How each of the guide's tests went, and what pytest printed."""

    outcomes: dict[str, str]
    output: str

    def passed(self, name: str) -> bool:
        return self.outcomes.get(name) == "passed"


@pytest.fixture(scope="module")
def guide(tmp_path_factory: pytest.TempPathFactory) -> GuideRun:
    """The guide's tests, run with pytest where only the guide's files are."""
    directory = tmp_path_factory.mktemp("guide")
    for name, code in guide_files().items():
        (directory / name).write_text(code, "utf-8")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), ADMIN_URL_VARIABLE: ADMIN_DSN}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=directory,
    )
    found = {name: outcome.lower() for outcome, name in _OUTCOME.findall(ran.stdout)}
    return GuideRun(found, ran.stdout + ran.stderr)


def test_the_guide_has_its_files_and_the_tests_this_module_runs(guide: GuideRun) -> None:
    assert sorted(guide_files()) == ["app.py", "conftest.py", "test_signup.py"]
    assert sorted(guide.outcomes) == sorted(GUIDE_TESTS), guide.output


def test_a_signup_queues_a_welcome_email(guide: GuideRun) -> None:
    assert guide.passed("test_a_signup_queues_a_welcome_email"), guide.output


def test_a_refused_address_fails_the_welcome_email(guide: GuideRun) -> None:
    assert guide.passed("test_a_refused_address_fails_the_welcome_email"), guide.output
