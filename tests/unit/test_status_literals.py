"""No code under services/ spells a job status by hand: statuses come from ``JobStatus``.

A status written as a bare string (``"failed"`` in Python, ``'failed'`` inside a statement) is a
second definition of it that nothing keeps in step with the enum. The scan reads every module's
string constants, docstrings left out (they may show a status in an example); only ``JobStatus``
itself, in ``services/contract.py``, may hold the values. The migrations are SQL files, not
scanned: they are the schema's history and never change.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from services.contract import JobStatus
from services.ledger import statuses

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
CONTRACT = SERVICES / "contract.py"
QUOTED = re.compile("'(" + "|".join(re.escape(status.value) for status in JobStatus) + ")'")
"""A status as a SQL literal inside a longer string."""


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that stand alone as statements: docstrings of every kind."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _enum_definition(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside ``class JobStatus``."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == JobStatus.__name__
        for inner in ast.walk(node)
    }


def status_literals(source: str, *, allow_enum: bool = False) -> list[tuple[int, str]]:
    """(line, string) of each string constant of ``source`` that is a status or quotes one."""
    tree = ast.parse(source)
    skipped = _docstrings(tree) | (_enum_definition(tree) if allow_enum else set())
    values = {status.value for status in JobStatus}
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skipped
        and (node.value in values or QUOTED.search(node.value))
    )


def test_the_scan_finds_statuses_in_python_and_in_sql_but_not_in_docstrings() -> None:
    source = '''
"""A module that mentions 'failed' in its docstring."""
A = "failed"
B = "SELECT 1 FROM jobs WHERE status IN ('queued', 'deferred')"
C = f"UPDATE jobs SET status = 'cancelled' WHERE id = {A}"
D = "failed_jobs"
def f() -> None:
    """Returns 'succeeded'."""
class JobStatus:
    queued = "queued"
'''

    found = status_literals(source)

    assert [line for line, _ in found] == [3, 4, 5, 10]
    assert [line for line, _ in status_literals(source, allow_enum=True)] == [3, 4, 5]


def test_no_module_of_services_spells_a_status() -> None:
    modules = sorted(SERVICES.rglob("*.py"))
    assert CONTRACT in modules

    found = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in modules
        for line, value in status_literals(path.read_text("utf-8"), allow_enum=path == CONTRACT)
    ]

    assert found == [], "build statuses from JobStatus (services.ledger.statuses for SQL):\n" + "\n".join(found)


def test_the_contract_still_defines_the_statuses_the_scan_looks_for() -> None:
    definition = status_literals(CONTRACT.read_text("utf-8"))

    assert {value for _, value in definition} == {status.value for status in JobStatus}


def test_the_sql_lists_follow_the_enum() -> None:
    assert statuses.literal(JobStatus.in_progress) == "'in_progress'"
    assert statuses.FINAL == "'succeeded', 'failed', 'cancelled'"
    assert statuses.UNFINISHED == "'queued', 'deferred', 'in_progress', 'retrying'"
