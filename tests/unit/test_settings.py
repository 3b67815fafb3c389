"""Settings: built from the environment once, refused loudly when invalid, and never showing secrets."""

from __future__ import annotations

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


def test_defaults_without_any_environment() -> None:
    settings = Settings(_env_file=None)

    assert settings.environment == "development"
    assert settings.database_dsn == "postgresql://postgres@127.0.0.1:5432/afterword"
    assert settings.smtp_password is None
    assert settings.worker_stale_after_seconds == settings.heartbeat_seconds * 3


def test_constructor_arguments() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql://app@db.example.com:6543/jobs",
        redis_url="redis://cache.example.com:6380/2",
        smtp_port=2525,
        temp_dir=Path("/tmp/afterword"),
    )

    assert settings.database_dsn == "postgresql://app@db.example.com:6543/jobs"
    assert str(settings.redis_url) == "redis://cache.example.com:6380/2"
    assert settings.smtp_port == 2525
    assert settings.temp_dir == Path("/tmp/afterword")


def test_load_settings_reads_upper_case_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PORT", "2526")
    monkeypatch.setenv("QUEUE_NAME", "afterword:other")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")

    settings = load_settings()

    assert settings.smtp_port == 2526
    assert settings.queue_name == "afterword:other"
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret-pass"


def test_load_settings_reads_a_dotenv_file_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SMTP_HOST=mail.example.com\n")

    assert load_settings().smtp_host == "mail.example.com"


def test_invalid_value_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMTP_PORT", "not-a-port")

    with pytest.raises(SystemExit) as exited:
        load_settings()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert "SMTP_PORT" in err


def test_every_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "70000")
    monkeypatch.setenv("ENVIRONMENT", "staging")
    monkeypatch.setenv("MAX_BODY_BYTES", "10")
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    monkeypatch.setenv("WORKER_CLAIM_LINGER_MS", "-1")

    with pytest.raises(SystemExit) as exited:
        load_settings()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    for name in ("GATEWAY_PORT", "ENVIRONMENT", "MAX_BODY_BYTES", "DATABASE_URL", "WORKER_CLAIM_LINGER_MS"):
        assert name in err


def test_the_error_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("SMTP_TIMEOUT", "-1")

    with pytest.raises(SystemExit):
        load_settings()

    err = capsys.readouterr().err
    assert "SMTP_TIMEOUT" in err
    assert "s3cret-pass" not in err


@pytest.mark.parametrize("mail_from", ["Afterword <a@example.com>\r\nBcc: x@example.com", "no address", "a\nb@c"])
def test_mail_from_must_be_one_address_on_one_line(mail_from: str) -> None:
    with pytest.raises(ValidationError, match="mail_from"):
        Settings(_env_file=None, mail_from=mail_from)


def test_smtp_password_never_appears_in_repr_or_str() -> None:
    settings = Settings(_env_file=None, smtp_username="afterword", smtp_password=SecretStr("s3cret-pass"))

    assert "s3cret-pass" not in repr(settings)
    assert "s3cret-pass" not in str(settings)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret-pass"


def test_smtp_password_from_the_environment_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")

    settings = load_settings()

    assert isinstance(settings.smtp_password, SecretStr)
    assert "s3cret-pass" not in repr(settings)
    assert "s3cret-pass" not in str(settings)


def test_passwords_in_connection_urls_never_appear_in_repr_or_str() -> None:
    # CONVENTIONS.md: "secrets are SecretStr and never appear in logs or reprs". DATABASE_URL is
    # the only place a Postgres password can be given, REDIS_URL the only place for Redis's.
    settings = Settings(
        _env_file=None,
        database_url="postgresql://app:pg-s3cret@db.example.com:5432/afterword",
        redis_url="redis://:redis-s3cret@cache.example.com:6379/0",
    )

    for text in (repr(settings), str(settings)):
        assert "pg-s3cret" not in text
        assert "redis-s3cret" not in text
    assert settings.database_dsn == "postgresql://app:pg-s3cret@db.example.com:5432/afterword"


def test_api_keys_are_comma_separated_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", " key-one-s3cret , key-two-s3cret,, ")

    settings = load_settings()

    assert [key.get_secret_value() for key in settings.api_keys] == ["key-one-s3cret", "key-two-s3cret"]
    assert all(isinstance(key, SecretStr) for key in settings.api_keys)
    for text in (repr(settings), str(settings)):
        assert "key-one-s3cret" not in text
        assert "key-two-s3cret" not in text


def test_an_unusable_api_key_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_KEYS", "good-key,bad key-s3cret")

    with pytest.raises(SystemExit) as exited:
        load_settings()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "API_KEYS" in err
    assert "bad key-s3cret" not in err
    assert "good-key" not in err


def test_production_needs_an_api_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")

    with pytest.raises(SystemExit):
        load_settings()
    assert "API_KEYS" in capsys.readouterr().err

    monkeypatch.setenv("API_KEYS", "k1")
    with pytest.raises(SystemExit):
        load_settings()
    assert "at least 32 characters" in capsys.readouterr().err

    monkeypatch.setenv("API_KEYS", "k1-Zq3vT8-pLm2_Xc7RwN4yHb6KdF1sGj9A")
    assert load_settings().environment == "production"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PORT", "")

    assert load_settings().smtp_port == Settings(_env_file=None).smtp_port
