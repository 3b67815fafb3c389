"""API_KEYS and API_READ_KEYS: plain comma-separated keys, secret everywhere, strong in production;
OPEN_ENDPOINTS: which probes answer without a key."""

from __future__ import annotations

import secrets
import string
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.core.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ``.env`` file is, without the developer's own API_KEYS or ENVIRONMENT."""
    monkeypatch.chdir(tmp_path)
    for name in ("API_KEYS", "API_READ_KEYS", "OPEN_ENDPOINTS", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


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


STRONG = "Zq3vT8-pLm2_Xc7RwN4yHb6KdF1sGj9A"
"""32 characters of the base64url alphabet: 192 bits by the estimate."""


def test_production_with_a_strong_key_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", STRONG)

    settings = load_settings()

    assert settings.environment == "production"
    assert plain(settings.api_keys) == [STRONG]
    assert STRONG not in capsys.readouterr().err


@pytest.mark.parametrize(
    "strong",
    [
        secrets.token_urlsafe(24),  # what `make run` generates: 32 characters
        secrets.token_urlsafe(32),
        secrets.token_hex(16),  # 32 hex digits: 128 bits
        secrets.token_hex(32),
        "".join(secrets.choice(string.printable[:94].replace(",", "")) for _ in range(32)),  # commas part keys
    ],
)
def test_generated_keys_are_strong_enough_for_production(strong: str) -> None:
    settings = Settings(_env_file=None, environment="production", api_keys=strong)

    assert plain(settings.api_keys) == [strong]


@pytest.mark.parametrize(
    ("weak", "problem"),
    [
        ("q9", "at least 32 characters"),
        ("pr0d-key", "at least 32 characters"),
        (secrets.token_urlsafe(16), "at least 32 characters"),  # 22 characters, 128 bits: too short all the same
        ("1" * 40, "repeats"),
        ("ab" * 20, "repeats"),
        (("pr0d-key-" * 5)[:40], "repeats"),
        ("31415926535897932384626433832795028841", "128 bits"),  # 38 digits: 126 bits
        ("change-me-" + secrets.token_hex(16), "placeholder"),
        ("Your-API-Key-Here-" + secrets.token_hex(16), "placeholder"),
        (secrets.token_hex(16) + "example", "placeholder"),
        ("0000000011111111222222223333333344", "distinct"),
    ],
)
def test_production_refuses_a_weak_key_and_says_why_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], weak: str, problem: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", f"{STRONG},{weak}")

    with pytest.raises(SystemExit) as exited:
        load_settings()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "API_KEYS" in err
    assert "key 2 of 2" in err
    assert problem in err
    assert weak not in err
    assert STRONG not in err


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_take_short_keys(environment: str) -> None:
    settings = Settings(_env_file=None, environment=environment, api_keys="a,change-me")

    assert plain(settings.api_keys) == ["a", "change-me"]


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_run_without_keys(monkeypatch: pytest.MonkeyPatch, environment: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)

    assert load_settings().api_keys == []


def test_read_keys_are_comma_separated_secrets_like_the_full_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "full-key")
    monkeypatch.setenv("API_READ_KEYS", " read-one , read-two ,")

    settings = load_settings()

    assert plain(settings.api_read_keys) == ["read-one", "read-two"]
    assert "read-one" not in repr(settings)


def test_no_read_keys_by_default() -> None:
    assert Settings(_env_file=None, api_keys="full-key").api_read_keys == []


def test_read_keys_without_full_keys_are_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, api_read_keys="read-only")

    assert "API_KEYS as well" in str(refused.value)
    assert "read-only" not in str(refused.value)


def test_a_key_cannot_be_both_full_and_read_only() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, api_keys="shared-key,other", api_read_keys="shared-key")

    assert "both API_KEYS and API_READ_KEYS" in str(refused.value)
    assert "shared-key" not in str(refused.value)


def test_production_holds_read_keys_to_the_same_strength(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", STRONG)
    monkeypatch.setenv("API_READ_KEYS", "grafana")

    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert "API_READ_KEYS" in err
    assert "at least 32 characters" in err
    assert "grafana" not in err

    monkeypatch.setenv("API_READ_KEYS", secrets.token_urlsafe(32))
    assert len(load_settings().api_read_keys) == 1


def test_health_readiness_and_metrics_are_open_by_default() -> None:
    assert Settings(_env_file=None).open_endpoints == ["healthz", "readyz", "metrics"]


@pytest.mark.parametrize(
    ("value", "names"),
    [("healthz", ["healthz"]), ("/healthz, /readyz", ["healthz", "readyz"]), ("none", []), (" metrics ", ["metrics"])],
)
def test_open_endpoints_are_chosen_by_name(monkeypatch: pytest.MonkeyPatch, value: str, names: list[str]) -> None:
    monkeypatch.setenv("OPEN_ENDPOINTS", value)

    assert load_settings().open_endpoints == names


def test_an_unknown_open_endpoint_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPEN_ENDPOINTS", "healthz,jobs")

    with pytest.raises(SystemExit):
        load_settings()
    assert "OPEN_ENDPOINTS" in capsys.readouterr().err
