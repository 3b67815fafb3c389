"""Write the client's ``afterword_client/models.py`` from ``services/contract.py``.

The contract is the one source of the job names and payload models. The client is installed in
other services, where ``services`` is not, so it cannot import the contract: it carries a copy,
made here. From the contract's source this takes the definitions the client needs (:data:`ROOTS`,
every payload model :data:`ROOTS` name, and whatever those use: the text types, their validators
and patterns, and the imports they need), with their comments and docstrings and in the
contract's order, so that the client validates a payload exactly as the gateway does. An import
of anything but the standard library and pydantic is refused: the client cannot have it.

The contract derives ``PAYLOADS`` from ``JOBS``, whose definitions name the worker's
implementations: the client gets ``PAYLOADS`` written out instead, one ``JobName.x: Model`` per
``JobDefinition`` of ``JOBS``, and nothing of ``JOBS`` itself (:func:`_payloads_from_jobs`).

Run ``make client-models`` after editing the contract. ``tests/unit/test_client_models.py``
renders the module again in memory and fails while the committed file differs.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "services" / "contract.py"
TARGET = Path(__file__).resolve().parent / "src" / "afterword_client" / "models.py"

ROOTS = ("JobName", "JobStatus", "FINAL_STATUSES", "Payload", "PAYLOADS")
"""The contract's names the client uses; what they use comes along."""

LINE_LENGTH = 120
"""The repository's line length (ruff's ``line-length``): a longer import is wrapped."""

ALLOWED_PACKAGES = frozenset(sys.stdlib_module_names) | {"pydantic"}
"""What the copied definitions may import: the client depends on httpx and pydantic only."""

HEADER = '''\
"""The job names, statuses and payload models of the Afterword API.

Generated from services/contract.py by ``make client-models``: do not edit it here. The
repository's tests fail while it differs from what the contract generates.
"""
'''


class ContractError(Exception):
    """The contract holds something the generator cannot copy into the client."""


class _Definition:
    """A top-level statement of the contract, with the comment above it and the docstring after it."""

    def __init__(self, statement: ast.stmt, first_line: int, last_line: int) -> None:
        self.statement = statement
        self.first_line = first_line  # 1-based, inclusive
        self.last_line = last_line
        self.names = _bound_names(statement)
        self.uses = {node.id for node in ast.walk(statement) if isinstance(node, ast.Name)}
        self.text: str | None = None
        """What the client gets instead of the statement's own lines (see :func:`_payloads_from_jobs`)."""


def _bound_names(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Assign):
        return {node.id for target in statement.targets for node in ast.walk(target) if isinstance(node, ast.Name)}
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return {statement.target.id}
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).partition(".")[0] for alias in statement.names}
    return set()


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _definitions(tree: ast.Module, lines: list[str]) -> Iterator[_Definition]:
    """The contract's top-level statements but its module docstring, each with its comment and docstring."""
    body = tree.body[1:] if tree.body and _is_docstring(tree.body[0]) else tree.body
    for index, statement in enumerate(body):
        if _is_docstring(statement):
            continue  # the docstring of the assignment before it, copied with that
        first = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))])
        while first > 1 and lines[first - 2].lstrip().startswith("#"):
            first -= 1
        last = statement.end_lineno or statement.lineno
        following = body[index + 1] if index + 1 < len(body) else None
        if isinstance(statement, ast.Assign | ast.AnnAssign) and following is not None and _is_docstring(following):
            last = following.end_lineno or following.lineno
        yield _Definition(statement, first, last)


def _payloads_from_jobs(definitions: list[_Definition], lines: list[str]) -> None:
    """Write ``PAYLOADS`` out as a literal when the contract derives it (from ``JOBS``).

    Each ``JobDefinition(name, payload, ...)`` of ``JOBS`` gives one ``name: payload`` entry (by
    position or keyword), in ``JOBS``'s order; the docstring after ``PAYLOADS`` is kept.
    """
    by_name = {name: definition for definition in definitions for name in definition.names}
    payloads, jobs = by_name.get("PAYLOADS"), by_name.get("JOBS")
    if payloads is None or not isinstance(payloads.statement, ast.Assign | ast.AnnAssign):
        return
    if isinstance(payloads.statement.value, ast.Dict) or jobs is None:
        return  # a literal already: copied as it is
    entries: list[tuple[str, str]] = []
    for call in ast.walk(jobs.statement):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "JobDefinition"):
            continue
        given = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
        name = call.args[0] if call.args else given.get("name")
        model = call.args[1] if len(call.args) > 1 else given.get("payload")
        if name is None or not isinstance(model, ast.Name):
            raise ContractError(f"a JobDefinition of JOBS without a name and a payload class: {ast.unparse(call)}")
        entries.append((ast.unparse(name), model.id))
    statement = payloads.statement
    end = statement.end_lineno or statement.lineno
    annotation = f": {ast.unparse(statement.annotation)}" if isinstance(statement, ast.AnnAssign) else ""
    body = "".join(f"    {name}: {model},\n" for name, model in entries)
    payloads.text = "\n".join(
        [
            *lines[payloads.first_line - 1 : statement.lineno - 1],  # its comment
            f"PAYLOADS{annotation} = {{\n{body}}}",
            *lines[end : payloads.last_line],  # its docstring
        ]
    )
    payloads.uses = {"JobName", "Payload", *(model for _, model in entries)}


def _needed(definitions: list[_Definition]) -> set[int]:
    """The indexes of the definitions that :data:`ROOTS` need, directly or not."""
    providers: dict[str, int] = {}
    for index, definition in enumerate(definitions):
        for name in definition.names:
            providers[name] = index
    missing = [root for root in ROOTS if root not in providers]
    if missing:
        raise ContractError(f"services/contract.py defines no {', '.join(missing)}: update {Path(__file__).name}")
    needed: set[int] = set()
    pending = [providers[root] for root in ROOTS]
    while pending:
        index = pending.pop()
        if index in needed:
            continue
        needed.add(index)
        pending.extend(providers[name] for name in definitions[index].uses if name in providers)
    return needed


def _import_line(statement: ast.Import | ast.ImportFrom, used: set[str]) -> str | None:
    """The import limited to the names the copied definitions use, or None when they use none."""
    kept = [alias for alias in statement.names if (alias.asname or alias.name).partition(".")[0] in used]
    if not kept:
        return None
    module = statement.module if isinstance(statement, ast.ImportFrom) else kept[0].name
    if isinstance(statement, ast.ImportFrom) and statement.level:
        raise ContractError(f"the client cannot have the contract's relative import of {module!r}")
    if (module or "").partition(".")[0] not in ALLOWED_PACKAGES:
        raise ContractError(f"the client cannot import {module!r}: it depends on httpx and pydantic only")
    listed = [alias.name if alias.asname is None else f"{alias.name} as {alias.asname}" for alias in kept]
    if not isinstance(statement, ast.ImportFrom):
        return f"import {', '.join(listed)}"
    line = f"from {module} import {', '.join(listed)}"
    if len(line) <= LINE_LENGTH:
        return line
    names = "".join(f"    {name},\n" for name in listed)  # as ruff wraps it: one name a line
    return f"from {module} import (\n{names})"


def render(contract_source: str) -> str:
    """The text of the client's ``models.py`` for a contract whose source is ``contract_source``."""
    lines = contract_source.splitlines()
    definitions = list(_definitions(ast.parse(contract_source), lines))
    _payloads_from_jobs(definitions, lines)
    needed = _needed(definitions)
    kept = [d for index, d in enumerate(definitions) if index in needed]
    used = set().union(*(d.uses for d in kept if not isinstance(d.statement, ast.Import | ast.ImportFrom)))
    standard: list[str] = []
    others: list[str] = []
    body = ""
    previous: int | None = None
    for index, definition in enumerate(definitions):
        statement = definition.statement
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            continue
        if isinstance(statement, ast.Import | ast.ImportFrom):
            line = _import_line(statement, used)
            if line is not None:
                module = line.split()[1].partition(".")[0]
                (standard if module in sys.stdlib_module_names else others).append(line)
        elif index in needed:
            if previous is None:
                gap = ""
            elif previous == index - 1:  # neighbours in the contract: the blank lines between them, as there
                gap = "\n" * (definition.first_line - definitions[previous].last_line)
            else:
                gap = "\n\n\n"
            own = "\n".join(lines[definition.first_line - 1 : definition.last_line])
            body += gap + (own if definition.text is None else definition.text)
            previous = index
    public = sorted({*ROOTS, *(name for d in kept for name in d.names if _is_payload_model(kept, name))}, key=_isort)
    imports = "\n\n".join("\n".join(group) for group in (standard, others) if group)
    all_names = "".join(f'    "{name}",\n' for name in public)
    return f"{HEADER}\nfrom __future__ import annotations\n\n{imports}\n\n__all__ = [\n{all_names}]\n\n{body}\n"


def _isort(name: str) -> tuple[int, str]:
    """The order ruff keeps ``__all__`` in: constants, then classes, then the rest."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def _is_payload_model(kept: list[_Definition], name: str) -> bool:
    """True when ``name`` is a class of ``kept`` derived from ``Payload`` (directly or not)."""
    classes = {d.statement.name: d.statement for d in kept if isinstance(d.statement, ast.ClassDef)}
    seen: set[str] = set()
    while name in classes and name not in seen:
        seen.add(name)
        bases = [base.id for base in classes[name].bases if isinstance(base, ast.Name)]
        if "Payload" in bases:
            return True
        name = bases[0] if bases else ""
    return False


def main() -> None:
    """Write :data:`TARGET` from :data:`CONTRACT`; say whether it changed."""
    text = render(CONTRACT.read_text("utf-8"))
    if TARGET.exists() and TARGET.read_text("utf-8") == text:
        print(f"{TARGET.relative_to(REPO)} is up to date")
        return
    TARGET.write_text(text, "utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}")


if __name__ == "__main__":
    main()
