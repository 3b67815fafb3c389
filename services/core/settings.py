"""Configuration for both services, read once from the environment (and ``.env`` when present).

Each field is one documented environment variable of the same name in upper case. Build a
:class:`Settings` with :func:`load_settings` at a process's entry point and pass it down; nothing
else reads the environment.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Literal, Self, get_args

from pydantic import (
    Field,
    FilePath,
    PostgresDsn,
    RedisDsn,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.core import key_strength

OpenEndpoint = Literal["healthz", "readyz", "metrics"]
"""An endpoint that OPEN_ENDPOINTS may leave open when keys are set."""

_API_KEY = re.compile(r"[!-~]+")
"""An API key: printable ASCII, no spaces (it travels in a header)."""


class Settings(BaseSettings):
    """Every setting of the gateway and the jobs worker."""

    # hide_input_in_errors: a ValidationError's text never quotes a value (an API key, a password).
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    environment: Literal["development", "test", "production"] = Field(
        default="development", description="Where this runs; production refuses development defaults."
    )
    database_url: PostgresDsn = Field(
        repr=False,  # it may hold a password
        default=PostgresDsn("postgresql://postgres@127.0.0.1:5432/afterword"),
        description="Postgres holding the users table and the jobs ledger.",
    )
    redis_url: RedisDsn = Field(
        repr=False,  # it may hold a password
        default=RedisDsn("redis://127.0.0.1:6379/0"),
        description="Redis that carries the ARQ queue.",
    )
    queue_name: str = Field(default="afterword:queue", min_length=1, description="ARQ queue (sorted set) name.")

    smtp_host: str = Field(default="127.0.0.1", min_length=1, description="SMTP server host.")
    smtp_port: int = Field(default=1025, ge=1, le=65535, description="SMTP server port.")
    smtp_username: str | None = Field(default=None, description="SMTP login user; no login when unset.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP login password.")
    smtp_tls: Literal["none", "starttls", "implicit"] = Field(
        default="none",
        description=(
            "How the SMTP connection is encrypted: none; starttls (a plain connection upgraded with STARTTLS, "
            "usually port 587; a server that does not offer it is refused); implicit (TLS from the first byte, "
            "usually port 465). The server's certificate and host name are always verified."
        ),
    )
    smtp_starttls: bool = Field(
        default=False, description="The older spelling of SMTP_TLS=starttls (true), when SMTP_TLS is not set."
    )
    smtp_ca_file: FilePath | None = Field(
        default=None,
        description=(
            "PEM file of the CA certificates that sign the SMTP server's certificate (a private CA); "
            "trusted instead of the system's CAs. Needs SMTP_TLS."
        ),
    )
    smtp_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait on the SMTP server.")
    smtp_keep_connections: int = Field(
        default=4, ge=0, description="SMTP sessions a worker keeps open between emails (0: one per email)."
    )
    mail_from: str = Field(
        default="Afterword <noreply@afterword.localhost>",
        min_length=3,
        description="From header of every email.",
    )

    log_file: Path = Field(default=Path("var/afterword.log"), description="File that write_log appends to.")
    temp_dir: Path = Field(default=Path("var/tmp"), description="Directory cleaned by cleanup_temp_files.")
    temp_max_age_seconds: int = Field(
        default=3600, ge=1, description="cleanup_temp_files removes files older than this."
    )
    reports_dir: Path = Field(
        default=Path("var/reports"), description="Directory write_report writes its CSV files to."
    )

    gateway_host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="Port the gateway listens on.")
    max_body_bytes: int = Field(default=65_536, ge=1024, description="Larger request bodies get 413.")
    max_header_bytes: int = Field(
        default=32_768,
        ge=4096,
        description=(
            "A request whose request line and headers together pass this many bytes gets 431 and its "
            "connection is closed; the gateway never reads more of a head than that."
        ),
    )
    stats_exact_count_limit: int = Field(
        default=100_000,
        ge=0,
        description=(
            "GET /stats counts a status's jobs exactly when Postgres' planner expects at most this many; "
            "a larger count is the planner's estimate, named in jobs_by_status_estimated."
        ),
    )
    opentelemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's native OpenTelemetry spans and metrics, sent to the globally configured providers "
            "(opentelemetry-instrument, say). Off: no per-request check for a provider."
        ),
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validate_default=True,
        description=(
            "Full keys: every POST and DELETE must carry one (Authorization: Bearer <key> or X-API-Key: <key>), "
            "and once any is set, every read of job data (GET) needs one of these or a read key. "
            "Comma-separated as plain text, not JSON (API_KEYS=key1,key2; blanks around keys are trimmed). "
            "Empty: no key is asked for, which production refuses; production also refuses a key shorter than "
            "32 characters, estimated under 128 bits, repeating itself or looking like a placeholder."
        ),
    )
    api_read_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validate_default=True,
        description=(
            "Read keys, for dashboards and monitoring: they read job data (GET) and nothing else; a POST or "
            "DELETE with one gets 403. Comma-separated like API_KEYS, held to the same strength in "
            "production, never the same as a full key; they need API_KEYS."
        ),
    )
    open_endpoints: Annotated[list[OpenEndpoint], NoDecode] = Field(
        default_factory=lambda: list(get_args(OpenEndpoint)),
        description=(
            "Which of /healthz, /readyz and /metrics answer without a key when keys are set, comma-separated "
            "(OPEN_ENDPOINTS=healthz,readyz); none: all three need a key (a read key will do)."
        ),
    )

    worker_max_jobs: int = Field(default=10, ge=1, description="Jobs one worker process runs at once.")
    worker_claim_linger_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description=(
            "While jobs wait for a free slot, a freed slot waits this long at most for the worker's other "
            "running jobs to end, so that one look claims them all and their ends share the ledger commit "
            "of the next jobs' starts; 0: take each slot as it frees."
        ),
    )
    job_timeout_seconds: float = Field(default=60.0, gt=0, description="A job running longer is stopped.")
    # The defaults ride out an outage of half an hour: the 12 waits between 13 tries add up to
    # 35-71 minutes (services/jobs/retries.py, RetryPolicy.span).
    job_max_tries: int = Field(
        default=13,
        ge=1,
        description="Tries of a job that keeps failing transiently before it fails (a job may declare its own).",
    )
    retry_base_delay_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait after a first failed try; doubles per try up to the cap, jittered in its upper half.",
    )
    retry_max_delay_seconds: float = Field(
        default=600.0, gt=0, description="No wait between two tries of a job is longer than this."
    )
    keep_result_seconds: int = Field(default=3600, ge=0, description="How long ARQ keeps a job's result.")
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="How often a worker says it is alive.")
    lease_seconds: float = Field(
        default=9.0,
        ge=1,
        description=(
            "A killed worker's running jobs are taken over after this long; a worker's Redis and Postgres "
            "calls give up after a third of it."
        ),
    )
    shutdown_grace_seconds: int = Field(
        default=20, ge=0, description="On SIGTERM, running jobs get this long to finish before they are handed back."
    )
    sweep_every_seconds: int = Field(
        default=5, ge=1, le=60, description="How often the recovery sweep reconciles the ledger with Redis."
    )
    sweep_idle_seconds: float = Field(
        default=10.0, gt=0, description="The sweep checks unfinished jobs whose row has not changed for this long."
    )
    job_retention_days: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Ended jobs (succeeded, failed, cancelled) leave the ledger this many days after they ended, "
            "with their attempts and effects; 0 keeps them forever."
        ),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Address the worker's Prometheus metrics endpoint listens on."
    )
    worker_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description=(
            "Port of the worker's Prometheus metrics endpoint; 0 turns it off. "
            "Several workers on one host each need their own port."
        ),
    )

    @field_validator("mail_from")
    @classmethod
    def _single_line_from(cls, value: str) -> str:
        if "\r" in value or "\n" in value or "@" not in value:
            raise ValueError("must be one address such as 'Name <user@example.com>'")
        return value

    @model_validator(mode="after")
    def _smtp_tls(self) -> Self:
        if self.smtp_starttls and "smtp_tls" not in self.model_fields_set:
            self.smtp_tls = "starttls"
        elif self.smtp_starttls and self.smtp_tls != "starttls":
            raise ValueError(f"SMTP_STARTTLS=true contradicts SMTP_TLS={self.smtp_tls}: set SMTP_TLS alone")
        if self.smtp_ca_file is not None and self.smtp_tls == "none":
            raise ValueError("SMTP_CA_FILE is set but SMTP_TLS=none: set SMTP_TLS=starttls or implicit")
        if self.environment == "production" and self.smtp_password is not None and self.smtp_tls == "none":
            raise ValueError(
                "ENVIRONMENT=production with SMTP_PASSWORD needs SMTP_TLS=starttls or implicit "
                "(the password would cross the network in plain text)"
            )
        return self

    @field_validator("api_keys", "api_read_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        # The messages never quote a key.
        _printable(value)
        if info.data.get("environment") == "production":
            if not value:
                raise ValueError("ENVIRONMENT=production needs at least one API key: set API_KEYS=key1[,key2...]")
            _strong_enough(value)
        return value

    @field_validator("api_read_keys")
    @classmethod
    def _usable_read_keys(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        _printable(value)
        if not value or "api_keys" not in info.data:  # none, or API_KEYS is invalid and named already
            return value
        full_keys = {key.get_secret_value() for key in info.data["api_keys"]}
        if not full_keys:
            raise ValueError("read keys need full keys: set API_KEYS as well (without it nothing asks for a key)")
        if any(key.get_secret_value() in full_keys for key in value):
            raise ValueError("a key is in both API_KEYS and API_READ_KEYS: give the read key a value of its own")
        if info.data.get("environment") == "production":
            _strong_enough(value)
        return value

    @field_validator("open_endpoints", mode="before")
    @classmethod
    def _endpoint_names(cls, value: object) -> object:
        if isinstance(value, str):
            names = [name.strip().removeprefix("/") for name in value.split(",") if name.strip()]
            return [] if names == ["none"] else names
        return value

    @property
    def database_dsn(self) -> str:
        """The Postgres DSN as the plain string asyncpg takes."""
        return str(self.database_url)

    @property
    def worker_stale_after_seconds(self) -> float:
        """A worker whose last heartbeat is older than this is counted as gone."""
        return self.heartbeat_seconds * 3


def _printable(keys: list[SecretStr]) -> None:
    """Raise ValueError if a key cannot travel in a header (the message never quotes it)."""
    if not all(_API_KEY.fullmatch(key.get_secret_value()) for key in keys):
        raise ValueError("each key must be printable ASCII without spaces (keys are separated by commas)")


def _strong_enough(keys: list[SecretStr]) -> None:
    """Raise ValueError naming the first key too weak for production by its position, never its value."""
    for number, key in enumerate(keys, start=1):
        problem = key_strength.weakness(key.get_secret_value())
        if problem is not None:
            raise ValueError(
                f"with ENVIRONMENT=production every key must be strong: key {number} of {len(keys)} {problem} "
                f"(make one with: {key_strength.GENERATE})"
            )


def load_settings() -> Settings:
    """Build the settings, or stop the process with a message naming each invalid setting."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            lines.append(f"  {name}: {error['msg']}")
        sys.stderr.write("afterword: invalid configuration\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
