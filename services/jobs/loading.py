"""Each job's implementation, found at the worker's start-up and checked against the job definitions.

A job is defined once, in ``services.contract`` (:class:`~services.contract.JobDefinition`),
which names its implementation as ``"package.module:function"``. An implementation is marked with
:func:`implements`, the job's name its argument::

    @implements(JobName.write_report)
    def write_report(ctx: JobContext, payload: WriteReport) -> JobResult:
        ...

:func:`load` imports every module of the implementation packages and each definition's module,
and refuses, naming each job concerned, a job defined without an implementation, one implemented
without a definition, one implemented twice, an implementation whose definition names another
function, and a permanent error that is not an exception class. The worker calls it before it
starts (``services.jobs.setup.worker_options``) and stops with the message: a mismatch is found
when the worker starts, not when the job first runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from services.contract import JOBS, JobDefinition, JobName

F = TypeVar("F", bound=Callable[..., Any])

IMPLEMENTATION_PACKAGES = ("services.jobs.implementations",)
"""The packages whose every module is imported at start-up, so that no implementation goes unseen."""

IMPLEMENTED: dict[str, Callable[..., Any]] = {}
"""Every function marked :func:`implements`, by the job's name, as its module was imported."""

_MARK = "__afterword_job__"


class JobCatalogError(Exception):
    """The job definitions and the implementations do not match; the message names every job concerned."""


def implements(name: str) -> Callable[[F], F]:
    """Mark a function (``async def`` or plain ``def``, taking ``(ctx, payload)``) as job ``name``'s implementation."""

    def mark(function: F) -> F:
        earlier = IMPLEMENTED.get(str(name))
        if earlier is not None and _path(earlier) != _path(function):
            raise JobCatalogError(f"job {name} is implemented twice: by {_path(earlier)} and by {_path(function)}")
        IMPLEMENTED[str(name)] = function
        setattr(function, _MARK, str(name))
        return function

    return mark


@dataclass(frozen=True)
class Loaded:
    """A job's definition with its implementation and its permanent errors, imported."""

    definition: JobDefinition
    function: Callable[..., Any]
    permanent: tuple[type[BaseException], ...]


def load(
    jobs: Mapping[JobName, JobDefinition] = JOBS, packages: Sequence[str] = IMPLEMENTATION_PACKAGES
) -> dict[JobName, Loaded]:
    """Import every job's implementation and check it against ``jobs``.

    Raises :class:`JobCatalogError` listing everything that does not match.
    """
    problems: list[str] = []
    for package in packages:
        problems.extend(_import_all(package))
    loaded: dict[JobName, Loaded] = {}
    for name, definition in jobs.items():
        function = _resolve(definition.implementation, problems, what=f"job {name}: its implementation")
        if function is None:
            continue
        if getattr(function, _MARK, None) != name.value:
            problems.append(
                f"job {name}: {definition.implementation} is not marked @implements({name.value!r}) "
                "(services.jobs.loading.implements)"
            )
            continue
        permanent: list[type[BaseException]] = []
        for path in definition.permanent:
            error = _resolve(path, problems, what=f"job {name}: its permanent error")
            if error is None:
                continue
            if not (isinstance(error, type) and issubclass(error, BaseException)):
                problems.append(f"job {name}: its permanent error {path} is not an exception class")
                continue
            permanent.append(error)
        loaded[name] = Loaded(definition=definition, function=function, permanent=tuple(permanent))
    defined = {name.value: definition for name, definition in jobs.items()}
    for job_name, function in IMPLEMENTED.items():
        found = defined.get(job_name)
        if found is None:
            problems.append(
                f"{_path(function)} implements job {job_name!r}, which has no JobDefinition in services/contract.py"
            )
        elif found.implementation != _path(function):
            problems.append(
                f"job {job_name} is implemented by {_path(function)}, but its definition names {found.implementation}"
            )
    if problems:
        raise JobCatalogError("the jobs do not match their implementations:\n  " + "\n  ".join(problems))
    return loaded


def _import_all(package: str) -> list[str]:
    try:
        root = importlib.import_module(package)
    except ImportError as exc:
        return [f"the implementation package {package} cannot be imported: {exc}"]
    problems = []
    for module in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}."):
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            problems.append(f"{module.name} cannot be imported: {exc}")
    return problems


def _resolve(path: str, problems: list[str], *, what: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        problems.append(f"{what} {path}: {module_name} cannot be imported: {exc}")
        return None
    found = getattr(module, attribute, None)
    if found is None:
        problems.append(f"{what} {path}: {module_name} has no {attribute}")
    return found


def _path(function: Callable[..., Any]) -> str:
    return f"{function.__module__}:{function.__qualname__}"
