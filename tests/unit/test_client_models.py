"""The client's payload models are the contract's: generated from it, and never stale.

``clients/python/generate_models.py`` copies the definitions the client needs out of
``services/contract.py``; ``make client-models`` writes them to the client's ``models.py``. These
tests render that file again in memory and compare, and check that what it defines validates as
the contract does.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import afterword_client.models as client_models
import pytest

from services import contract

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "clients" / "python" / "generate_models.py"
MODELS = ROOT / "clients" / "python" / "src" / "afterword_client" / "models.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """``clients/python/generate_models.py``, loaded from its file (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("generate_models", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_client_models_are_what_the_contract_generates(generator: ModuleType) -> None:
    rendered = generator.render((ROOT / "services" / "contract.py").read_text("utf-8"))

    assert rendered == MODELS.read_text("utf-8"), "the client's models.py is stale: run `make client-models`"


def test_the_client_has_every_job_and_status_of_the_contract() -> None:
    assert [name.value for name in client_models.JobName] == [name.value for name in contract.JobName]
    assert [status.value for status in client_models.JobStatus] == [status.value for status in contract.JobStatus]
    assert {status.value for status in client_models.FINAL_STATUSES} == {s.value for s in contract.FINAL_STATUSES}
    assert set(client_models.__all__) >= {model.__name__ for model in contract.PAYLOADS.values()}


@pytest.mark.parametrize("name", list(contract.JobName), ids=str)
def test_each_payload_model_has_the_contract_s_schema(name: contract.JobName) -> None:
    ours = client_models.PAYLOADS[client_models.JobName(name.value)]
    theirs = contract.PAYLOADS[name]

    assert ours.__name__ == theirs.__name__
    assert ours.model_json_schema() == theirs.model_json_schema()
    assert ours.model_config == theirs.model_config


@pytest.mark.parametrize(
    "payload",
    [
        {"to": "ada@example.com", "subject": "Hi\r\nBcc: eve@example.com", "body": ""},
        {"to": "ada@example.com", "subject": "Hi", "body": "nul \x00"},
        {"to": "ada@example.com", "subject": "\ud800", "body": ""},
        {"to": "not an address", "subject": "Hi", "body": ""},
        {"to": "ada@example.com", "subject": "Hi", "body": "", "cc": "eve@example.com"},
    ],
)
def test_a_payload_the_contract_refuses_the_client_refuses(payload: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="validation error") as theirs:
        contract.SendEmail.model_validate(payload)
    with pytest.raises(ValueError, match="validation error") as ours:
        client_models.SendEmail.model_validate(payload)

    assert str(ours.value).replace("afterword_client.models.", "") == str(theirs.value)


def test_the_client_package_imports_nothing_of_the_services() -> None:
    """The client is installed in other services, where ``services`` does not exist."""
    code = "import sys, afterword_client; print(sorted(m for m in sys.modules if m.split('.')[0] == 'services'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")

    assert found.stdout.strip() == "[]"


def test_the_generator_refuses_an_import_the_client_cannot_have(generator: ModuleType) -> None:
    source = (ROOT / "services" / "contract.py").read_text("utf-8")
    needing_services = source.replace(
        "from pydantic import", "from services.core.settings import Settings\nfrom pydantic import", 1
    ).replace("class CleanupTempFiles(Payload):", "class CleanupTempFiles(Payload):\n    at: Settings | None = None\n")

    with pytest.raises(generator.ContractError, match=r"cannot import 'services\.core\.settings'"):
        generator.render(needing_services)


def test_the_generator_leaves_out_what_the_client_does_not_use(generator: ModuleType) -> None:
    source = (ROOT / "services" / "contract.py").read_text("utf-8")
    with_extras = (
        source.replace("from pydantic import", "from services.core.settings import Settings\nfrom pydantic import", 1)
        + "\n\ndef worker_only(settings: Settings) -> int:\n    return 1\n"
    )

    rendered = generator.render(with_extras)

    assert "services" not in rendered.replace("services/contract.py", "")
    assert "worker_only" not in rendered
    assert rendered == generator.render(source)


def test_a_new_job_in_the_contract_reaches_the_client(generator: ModuleType) -> None:
    source = (ROOT / "services" / "contract.py").read_text("utf-8")
    with_job = (
        source.replace(
            '    cleanup_temp_files = "cleanup_temp_files"\n',
            '    cleanup_temp_files = "cleanup_temp_files"\n    resize_image = "resize_image"\n',
        )
        .replace(
            "@dataclass(frozen=True)\nclass JobDefinition:",
            'class ResizeImage(Payload):\n    """Make a thumbnail."""\n\n    path: SingleLine\n\n\n'
            "@dataclass(frozen=True)\nclass JobDefinition:",
        )
        .replace(
            "JOBS: dict[JobName, JobDefinition] = _catalog(\n",
            "JOBS: dict[JobName, JobDefinition] = _catalog(\n"
            '    JobDefinition(payload=ResizeImage, name=JobName.resize_image, implementation="images:resize"),\n',
        )
    )

    rendered = generator.render(with_job)

    assert "class ResizeImage(Payload):" in rendered
    assert '"ResizeImage",' in rendered
    assert "    JobName.resize_image: ResizeImage,\n" in rendered
    assert 'resize_image = "resize_image"' in rendered


def test_the_client_gets_the_payloads_of_the_jobs_and_nothing_of_their_definitions(generator: ModuleType) -> None:
    rendered = generator.render((ROOT / "services" / "contract.py").read_text("utf-8"))

    for name, definition in contract.JOBS.items():
        assert f"    JobName.{name.value}: {definition.payload.__name__},\n" in rendered
    assert "JobDefinition" not in rendered
    assert "JOBS" not in rendered
    assert "implementations" not in rendered
