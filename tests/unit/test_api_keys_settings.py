"""API_KEYS: plain comma-separated keys, secret everywhere, and required in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ``.env`` file is, without the developer's own API_KEYS or ENVIRONMENT."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.delenv("ENVIRONMENT", raising=False)


def plain(keys: list[SecretStr]) -> list[str]:
    return [key.get_secret_value() for key in keys]


def test_no_keys_by_default() -> None:
    assert Settings(_env_file=None).api_keys == []


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        ("alpha", ["alpha"]),
        ("alpha,beta", ["alpha", "beta"]),
        (" alpha ,\tbeta , ", ["alpha", "beta"]),
        ("alpha,,beta", ["alpha", "beta"]),
        ("", []),
        ("  ", []),
        (" , ", []),
        ('["alpha"]', ['["alpha"]']),
    ],
)
def test_api_keys_are_comma_separated_plain_text(monkeypatch: pytest.MonkeyPatch, value: str, keys: list[str]) -> None:
    monkeypatch.setenv("API_KEYS", value)

    assert plain(load_settings().api_keys) == keys


def test_api_keys_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_KEYS=alpha, beta\n")

    assert plain(load_settings().api_keys) == ["alpha", "beta"]


def test_api_keys_as_constructor_arguments() -> None:
    settings = Settings(_env_file=None, api_keys="alpha, beta")

    assert plain(settings.api_keys) == ["alpha", "beta"]
    assert plain(Settings(_env_file=None, api_keys=[SecretStr("gamma")]).api_keys) == ["gamma"]


def test_api_keys_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "k3y-alpha,k3y-beta")

    settings = load_settings()

    for text in (repr(settings), str(settings), repr(settings.api_keys)):
        assert "k3y-alpha" not in text
        assert "k3y-beta" not in text


@pytest.mark.parametrize("value", ["has space", "tab\there", "caf\u00e9", "bell\x07"])
def test_a_key_that_cannot_travel_in_a_header_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, api_keys=f"good-key,{value}")

    assert "api_keys" in str(refused.value)
    assert value not in str(refused.value)
    assert "good-key" not in str(refused.value)


def test_production_without_a_key_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")

    with pytest.raises(SystemExit) as exited:
        load_settings()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert "API_KEYS" in err


@pytest.mark.parametrize("value", ["", " , "])
def test_production_with_only_blank_keys_refuses_to_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", value)

    with pytest.raises(SystemExit):
        load_settings()


def test_production_with_a_key_starts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", "pr0d-key")

    settings = load_settings()

    assert settings.environment == "production"
    assert plain(settings.api_keys) == ["pr0d-key"]
    assert "pr0d-key" not in capsys.readouterr().err


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_run_without_keys(monkeypatch: pytest.MonkeyPatch, environment: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)

    assert load_settings().api_keys == []
