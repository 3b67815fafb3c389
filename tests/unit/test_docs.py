"""The documentation stays true to the code: every setting documented, no link out of the repository.

``README.md`` and ``docs/*.md`` are read as text. A setting added to ``services/core/settings.py``
must appear in ``.env.example`` and in the settings tables of ``docs/operations.md``; every
relative link must name a file (and heading) of the repository; every test a document cites as
proof must exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *DOCS]
README_MAX_LINES = 250

SETTING_NAMES = sorted(name.upper() for name in Settings.model_fields)

_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
_PARENT_PATH = re.compile(r"(?<![\w./-])(\.\./[\w./-]*)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_TEST_PATH = re.compile(r"\btests/[\w/]+\.py\b")
_TEST_NAME = re.compile(r"\b(test_\w+)\b(?!\.py)")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def links(text: str) -> list[str]:
    """The targets of a markdown text's inline and reference links, outside code blocks."""
    prose = _FENCE.sub("", text)
    return _LINK.findall(prose) + _REFERENCE.findall(prose)


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown text."""
    anchors: set[str] = set()
    for line in _FENCE.sub("", text).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = match.group(1).strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def broken_links(text: str, document: Path) -> list[str]:
    """Why each link of ``text``, written in ``document``, leaves the repository or names nothing."""
    problems = []
    for target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.is_file():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text("utf-8")):
            problems.append(f"{target}: no such heading in {_relative(resolved)}")
    for mention in _PARENT_PATH.findall(text):
        if not (document.parent / mention).resolve().is_relative_to(ROOT):
            problems.append(f"{mention}: a path outside the repository")
    return problems


def test_every_setting_is_listed_in_the_env_example() -> None:
    example = (ROOT / ".env.example").read_text("utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))

    assert [name for name in SETTING_NAMES if name not in listed] == []


def test_the_env_example_lists_only_settings() -> None:
    example = (ROOT / ".env.example").read_text("utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))

    assert sorted(listed - set(SETTING_NAMES)) == []


def test_every_setting_has_a_row_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text("utf-8")
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", guide, re.MULTILINE))

    assert [name for name in SETTING_NAMES if name not in rows] == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=_relative)
def test_no_link_leaves_the_repository_or_names_nothing(document: Path) -> None:
    assert broken_links(document.read_text("utf-8"), document) == []


def test_the_readme_is_short() -> None:
    lines = README.read_text("utf-8").splitlines()

    assert len(lines) <= README_MAX_LINES


@pytest.mark.parametrize("document", DOCUMENTS, ids=_relative)
def test_the_tests_a_document_cites_exist(document: Path) -> None:
    text = document.read_text("utf-8")
    defined = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text("utf-8"), re.MULTILINE)
    }

    missing_files = [path for path in _TEST_PATH.findall(text) if not (ROOT / path).is_file()]
    missing_tests = sorted(set(_TEST_NAME.findall(text)) - defined)

    assert (missing_files, missing_tests) == ([], [])


@pytest.mark.parametrize("document", DOCUMENTS, ids=_relative)
def test_no_lab_notebook_prose(document: Path) -> None:
    text = document.read_text("utf-8")

    assert re.findall(r"this VM|this session|previous session|earlier session", text, re.IGNORECASE) == []


def test_the_link_check_refuses_what_it_must() -> None:
    document = ROOT / "docs" / "api.md"
    text = (
        "[notes](../../shared/ARQ-NOTES.md), [gone](missing.md), [anchor](api.md#no-such-heading), "
        "[fine](../README.md), [here](#errors), [web](https://example.com/x), see `../../elsewhere.md`"
    )

    assert broken_links(text, document) == [
        "../../shared/ARQ-NOTES.md: outside the repository",
        "missing.md: no such file",
        "api.md#no-such-heading: no such heading in docs/api.md",
        "../../shared/ARQ-NOTES.md: a path outside the repository",
        "../../elsewhere.md: a path outside the repository",
    ]


def _layout_modules() -> set[str]:
    """The modules docs/architecture.md's Layout tree names, as paths from the repository root."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named: set[str] = set()
    directories: list[str] = []  # the directory at each depth of the tree
    current = ""  # the directory the last entry line names, for its continuation lines
    for line in block.splitlines():
        entry = re.search(r"[├└]── (\S+)", line)
        if entry is None:
            words = line
            owner = current
        else:
            depth = entry.start() // 4
            name = entry.group(1)
            del directories[depth:]
            if name.endswith("/"):
                directories.append(name.rstrip("/"))
                owner = current = "/".join(directories)
                words = line[entry.end() :]
            else:
                owner = "/".join(directories)
                current = owner
                words = line[entry.start() :]
        for module in re.findall(r"\b(\w+\.py)\b", words):
            named.add(f"{owner}/{module}")
    return named


def test_the_layout_names_every_module_and_only_those() -> None:
    named = _layout_modules()
    present = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "services").rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    }

    assert sorted(named - present) == [], "docs/architecture.md's Layout names modules that do not exist"
    assert sorted(present - named) == [], "docs/architecture.md's Layout misses these modules"
