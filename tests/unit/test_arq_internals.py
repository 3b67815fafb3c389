"""The ARQ internals the queue relies on are still those it was written against, and only the queue imports arq.

``services.queue.arq_internals`` lists them with a fingerprint of their source; these tests fail,
naming each internal and where we rely on it, when the installed ARQ differs. Others check that
the detector does detect, and that the list keeps up with the code: every ARQ name the queue
imports, every member of ARQ's ``Worker`` our subclasses use or override, and every attribute of
its ``__init__`` they use is pinned.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import arq
import arq.constants
import arq.worker
import pytest

import services.queue
from services.queue import arq_internals
from services.queue.arq_internals import ARQ_VERSION, FINGERPRINTS, INIT_ATTRIBUTES, Drift, drifted

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
QUEUE = SERVICES / "queue"

PUBLIC_ONLY = {"arq.typing.WorkerCoroutine"}
"""ARQ names the queue imports that are only types: nothing of theirs runs or is copied."""


def test_the_installed_arq_is_the_one_the_internals_were_read_in() -> None:
    assert arq.VERSION == ARQ_VERSION, (
        f"arq {arq.VERSION} is installed; services/queue was written against arq {ARQ_VERSION}: "
        "re-read the internals listed in services/queue/arq_internals.py, then update ARQ_VERSION"
    )


def test_no_internal_the_queue_relies_on_changed() -> None:
    changed = drifted()
    assert not changed, (
        f"ARQ internals differ from arq {ARQ_VERSION}'s; re-read each against the code that relies on it, "
        "then update its fingerprint in services/queue/arq_internals.py:\n- " + "\n- ".join(map(str, changed))
    )


def _drifts_added_by(change: Callable[[], object]) -> list[Drift]:
    """What :func:`drifted` reports once ``change`` is made, beyond what it reported before."""
    before = drifted()
    change()
    return [drift for drift in drifted() if drift not in before]


def test_a_changed_method_is_reported_with_where_we_rely_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def finish_job(self: Any, *args: Any) -> None:
        """Another ARQ's finish_job."""

    [drift] = _drifts_added_by(lambda: monkeypatch.setattr(arq.worker.Worker, "finish_job", finish_job))

    assert (drift.name, drift.problem) == ("arq.worker.Worker.finish_job", "changed")
    assert "replaced by slots'" in drift.reliance
    assert str(drift).startswith("arq.worker.Worker.finish_job changed: ``arq.worker.Worker.finish_job``: replaced")


def test_a_changed_constant_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    drifts = _drifts_added_by(lambda: monkeypatch.setattr(arq.constants, "retry_key_prefix", "arq:tries:"))

    assert [(drift.name, drift.problem) for drift in drifts] == [("arq.constants.retry_key_prefix", "changed")]


def test_a_missing_internal_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    drifts = _drifts_added_by(lambda: monkeypatch.delattr(arq.worker.Worker, "_jobs_started"))

    assert [(drift.name, drift.problem) for drift in drifts] == [("arq.worker.Worker._jobs_started", "is gone")]


def test_an_attribute_init_no_longer_sets_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def __init__(self: Any) -> None:
        """Another ARQ's Worker.__init__, which keeps its slots otherwise than in ``self.sem``."""
        self.tasks = {}
        self.job_counter = 0

    drifts = _drifts_added_by(lambda: monkeypatch.setattr(arq.worker.Worker, "__init__", __init__))

    problems = {drift.problem for drift in drifts if drift.name == "arq.worker.Worker.__init__"}
    assert {"changed", "no longer sets self.sem"} <= problems
    assert not problems & {"no longer sets self.tasks", "no longer sets self.job_counter"}
    assert len(problems) == 1 + len(INIT_ATTRIBUTES) - 2


def test_the_fingerprint_of_a_value_is_of_its_repr_and_of_a_function_of_its_source() -> None:
    assert arq_internals.fingerprint("arq:job:") == arq_internals.fingerprint(arq.constants.job_key_prefix)
    assert arq_internals.fingerprint(60) != arq_internals.fingerprint("60")

    def one() -> int:
        return 1

    def another() -> int:
        return 2

    assert arq_internals.fingerprint(one) != arq_internals.fingerprint(another)
    assert arq_internals.fingerprint(arq.worker.no_result) == arq_internals.fingerprint(object())


def test_every_pinned_internal_is_described_and_every_described_one_pinned() -> None:
    described = set(re.findall(r"``(arq\.[\w.]+)``", arq_internals.__doc__ or ""))
    assert described == set(FINGERPRINTS)
    assert "not described" not in arq_internals.reliance("arq.utils.to_ms")


def test_every_arq_name_the_queue_imports_is_pinned() -> None:
    unpinned = []
    for path in sorted(QUEUE.glob("*.py")):
        for module, name in _arq_imports(path):
            imported = getattr(importlib.import_module(module), name)
            qualname = getattr(imported, "__qualname__", None)
            dotted = f"{imported.__module__}.{qualname}" if qualname else f"{module}.{name}"
            if dotted in PUBLIC_ONLY or dotted in FINGERPRINTS:
                continue
            if not any(pinned.startswith(dotted + ".") for pinned in FINGERPRINTS):
                unpinned.append(f"{path.name}: {dotted}")
    assert not unpinned, "pin these in services/queue/arq_internals.py: " + ", ".join(unpinned)


def test_every_member_of_arqs_worker_our_subclasses_use_or_override_is_pinned() -> None:
    used, overridden = _subclass_members()
    members = {name for name in dir(arq.worker.Worker) if not name.startswith("__")} | {"__init__"}
    unpinned = sorted(name for name in (used | overridden) & members if f"arq.worker.Worker.{name}" not in FINGERPRINTS)
    assert not unpinned, f"pin these members of arq.worker.Worker: {unpinned}"
    assert arq_internals.init_attributes() & used <= INIT_ATTRIBUTES, (
        f"add to INIT_ATTRIBUTES: {sorted(arq_internals.init_attributes() & used - INIT_ATTRIBUTES)}"
    )


def test_no_module_outside_the_queue_imports_arq() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for path in sorted(SERVICES.rglob("*.py"))
        if QUEUE not in path.parents and any(True for _ in _arq_imports(path, names=False))
    ]
    assert not importers, f"only services/queue/ may import arq: {importers}"


def _arq_imports(path: Path, *, names: bool = True) -> list[tuple[str, str]]:
    """``(module, name)`` of each name ``path`` imports from arq (``(module, "")`` per ``import arq...``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "arq"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "arq":
            found += [(node.module or "", alias.name) for alias in node.names]
    return [(module, name) for module, name in found if name or not names]


def _subclass_members() -> tuple[set[str], set[str]]:
    """The ``self.<name>`` our subclasses of ARQ's worker read or write, and the methods they define."""
    used: set[str] = set()
    overridden: set[str] = set()
    for info in pkgutil.iter_modules(services.queue.__path__):
        module = importlib.import_module(f"services.queue.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, arq.worker.Worker):
                continue
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                    used.add(node.attr)
            overridden |= {name for name, value in vars(cls).items() if inspect.isfunction(value)}
    assert overridden, "no subclass of arq.worker.Worker found in services.queue"
    return used, overridden
