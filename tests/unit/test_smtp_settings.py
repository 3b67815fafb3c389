"""SMTP_TLS, the older SMTP_STARTTLS, SMTP_CA_FILE: read from the environment, refused when they
cannot mean what they say."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.core.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ``.env`` file is, without any setting's variable, so only what a test sets counts."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_no_tls_by_default() -> None:
    settings = Settings(_env_file=None)

    assert (settings.smtp_tls, settings.smtp_ca_file) == ("none", None)


@pytest.mark.parametrize("mode", ["none", "starttls", "implicit"])
def test_smtp_tls_from_the_environment(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("SMTP_TLS", mode)

    assert Settings(_env_file=None).smtp_tls == mode


def test_the_older_smtp_starttls_still_means_starttls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_STARTTLS", "true")

    assert Settings(_env_file=None).smtp_tls == "starttls"
    monkeypatch.setenv("SMTP_TLS", "starttls")
    assert Settings(_env_file=None).smtp_tls == "starttls"


@pytest.mark.parametrize("mode", ["none", "implicit"])
def test_smtp_starttls_contradicting_smtp_tls_is_refused(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    monkeypatch.setenv("SMTP_TLS", mode)

    with pytest.raises(ValidationError, match=f"SMTP_STARTTLS=true contradicts SMTP_TLS={mode}"):
        Settings(_env_file=None)


def test_an_unknown_tls_mode_stops_the_process_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMTP_TLS", "ssl")

    with pytest.raises(SystemExit):
        load_settings()
    assert "SMTP_TLS: Input should be 'none', 'starttls' or 'implicit'" in capsys.readouterr().err


def test_a_ca_file_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    monkeypatch.setenv("SMTP_TLS", "implicit")
    monkeypatch.setenv("SMTP_CA_FILE", str(ca_file))

    assert Settings(_env_file=None).smtp_ca_file == ca_file


def test_a_ca_file_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMTP_TLS", "starttls")
    monkeypatch.setenv("SMTP_CA_FILE", str(tmp_path / "missing.pem"))

    with pytest.raises(ValidationError, match="smtp_ca_file"):
        Settings(_env_file=None)


def test_a_ca_file_without_tls_is_refused(ca_file: Path) -> None:
    with pytest.raises(ValidationError, match="SMTP_CA_FILE is set but SMTP_TLS=none"):
        Settings(_env_file=None, smtp_ca_file=ca_file)


def test_production_refuses_an_smtp_password_without_tls() -> None:
    # A key of real strength, so that only the SMTP settings are in question.
    production = {"environment": "production", "api_keys": secrets.token_urlsafe(32), "smtp_username": "afterword"}

    with pytest.raises(ValidationError, match="SMTP_PASSWORD needs SMTP_TLS"):
        Settings(_env_file=None, smtp_password=SecretStr("s3cret-pass"), **production)  # type: ignore[arg-type]
    assert Settings(_env_file=None, smtp_tls="starttls", smtp_password=SecretStr("s"), **production)  # type: ignore[arg-type]
