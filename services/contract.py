"""The jobs: every job the gateway accepts and the worker runs is defined here, once.

A job is its name (:class:`JobName`), its payload model (a :class:`Payload`) and its
:class:`JobDefinition`: where its implementation is, and its options (tries, timeout, backoff,
which errors are permanent, how long its record is kept, an example for the API docs). The
gateway reads this module only: it validates requests against the payload models and enqueues
``payload.model_dump(mode="json")``, and never imports an implementation. The worker imports each
definition's implementation at start-up (``services.jobs.loading``) and stops, naming the job,
when a job is defined without an implementation or implemented without a definition.
``docs/jobs.md`` walks through adding one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
)

# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators. None of them may
# reach a mail header or a single-line field.
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Half of a UTF-16 pair on its own: JSON's "\ud800" decodes to one, and no UTF-8 text (a
# database column, a log line, an email) can hold it.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _unicode(value: str) -> str:
    if _LONE_SURROGATE.search(value):
        raise ValueError("must be valid Unicode: no lone surrogates (U+D800 to U+DFFF)")
    return value


def _single_line(value: str) -> str:
    if _LINE_BREAKERS.search(value):
        raise ValueError("must be a single line without control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SingleLine = Annotated[str, AfterValidator(_unicode), AfterValidator(_single_line)]
"""Text that may end up in a header or a one-line record: no CR, LF or other control characters."""

Text = Annotated[str, AfterValidator(_unicode), AfterValidator(_no_nul)]
"""Free text (an email body, a log message): any characters but NUL (and lone surrogates, not characters)."""


class JobName(StrEnum):
    """Every job the gateway may queue and the worker runs."""

    send_email = "send_email"
    write_log = "write_log"
    update_user = "update_user"
    cleanup_temp_files = "cleanup_temp_files"
    write_report = "write_report"


class Payload(BaseModel):
    """Base for job payloads: strict about unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SendEmail(Payload):
    """Send one email through the configured SMTP server."""

    to: EmailStr = Field(examples=["ada@example.com"])
    subject: SingleLine = Field(min_length=1, max_length=200, examples=["Welcome to Afterword"])
    body: Text = Field(max_length=100_000, examples=["Hello Ada,\n\nthanks for signing up."])
    mark_welcome_sent: bool = Field(
        default=False,
        description="After delivery, record the time on the recipient's user row (welcome_email_sent_at).",
    )


class WriteLog(Payload):
    """Append one JSON line with the message to the configured log file."""

    message: Text = Field(min_length=1, max_length=10_000, examples=["User sent data"])


class UpdateUser(Payload):
    """Create or update the user row for this email address."""

    email: EmailStr = Field(examples=["ada@example.com"])
    name: SingleLine = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])


class CleanupTempFiles(Payload):
    """Remove files older than the configured age from the configured temp directory."""


def _cell(value: Any) -> str | int | float | None:
    if isinstance(value, str):
        if len(value) > 1_000:
            raise ValueError("must be at most 1000 characters")
        return _no_nul(_unicode(value))
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
        return value
    raise ValueError("must be text, a finite number or null")


Cell = Annotated[
    str | int | float | None,
    PlainValidator(_cell, json_schema_input_type=Annotated[str, Field(max_length=1_000)] | int | float | None),
]
"""One value of a report: text (no NUL), a finite number (``true`` is none), or null (an empty cell)."""


class WriteReport(Payload):
    """Write a CSV file, a header line and the rows, to the configured reports directory."""

    title: SingleLine = Field(
        min_length=1,
        max_length=100,
        description="Names the file, made a slug: <job id>-<slug>.csv (never a path).",
        examples=["Signups by day"],
    )
    columns: list[Annotated[SingleLine, Field(min_length=1, max_length=100)]] = Field(
        min_length=1, max_length=50, examples=[["day", "signups"]]
    )
    rows: list[list[Cell]] = Field(
        default_factory=list,
        max_length=1_000,
        description="One list per line, each with one value per column.",
        examples=[[["2024-05-01", 12], ["2024-05-02", 9]]],
    )

    @field_validator("rows")
    @classmethod
    def _one_value_per_column(cls, rows: list[list[Cell]], info: ValidationInfo) -> list[list[Cell]]:
        columns = info.data.get("columns")
        if columns is None:  # the columns are invalid: that is their own error
            return rows
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"row {index} has {len(row)} values, not one per column ({len(columns)})")
        return rows


@dataclass(frozen=True)
class JobDefinition:
    """One job: its payload model, where its implementation is, and its options.

    Each option left ``None`` is the setting's: ``JOB_MAX_TRIES``, ``JOB_TIMEOUT_SECONDS``,
    ``RETRY_BASE_DELAY_SECONDS``, ``RETRY_MAX_DELAY_SECONDS``, ``JOB_RETENTION_DAYS``.
    """

    name: JobName
    payload: type[Payload]
    implementation: str
    """``"package.module:function"``: an ``async def`` or a plain ``def`` (run in a thread pool),
    taking ``(ctx, payload)`` and marked ``@implements(<name>)`` (``services.jobs.loading``)."""
    tries: int | None = None
    """How many times the job is tried at most (transient errors are retried until then)."""
    timeout: float | None = None
    """Seconds one try may run; the try fails with a transient timeout after that."""
    base_delay: float | None = None
    """Seconds before the second try; each later one waits twice as long, up to ``max_delay``."""
    max_delay: float | None = None
    """The longest wait between two tries, in seconds."""
    permanent: tuple[str, ...] = ()
    """Exceptions (``"package.module:Class"``) that fail the job at once, never retried."""
    keep_days: float | None = None
    """Days an ended job's record is kept (0: forever)."""
    summary: str = ""
    """One line for the API docs' example."""
    example: Mapping[str, Any] = field(default_factory=dict)
    """A payload for the API docs' example, valid for ``payload``."""
    defer_by: float | None = None
    """The example's ``defer_by``, if it shows one."""

    def __post_init__(self) -> None:
        if ":" not in self.implementation:
            raise ValueError(f"job {self.name}: implementation must be 'package.module:function'")
        for path in self.permanent:
            if ":" not in path:
                raise ValueError(f"job {self.name}: permanent error {path!r} must be 'package.module:Class'")
        for option in ("tries", "timeout", "base_delay", "max_delay", "keep_days"):
            value = getattr(self, option)
            if (value is not None and value < 0) or (option in ("tries", "timeout") and value == 0):
                raise ValueError(f"job {self.name}: {option} must be positive")
        if self.example:
            self.payload.model_validate(self.example)  # an example that does not validate is a bug


def _catalog(*definitions: JobDefinition) -> dict[JobName, JobDefinition]:
    by_name = {definition.name: definition for definition in definitions}
    if len(by_name) != len(definitions):
        raise ValueError("a job is defined twice")
    missing = [name.value for name in JobName if name not in by_name]
    if missing:
        raise ValueError(f"job(s) named in JobName without a JobDefinition: {', '.join(missing)}")
    return by_name


_IMPLEMENTATIONS = "services.jobs.implementations.builtin"

JOBS: dict[JobName, JobDefinition] = _catalog(
    JobDefinition(
        JobName.send_email,
        SendEmail,
        f"{_IMPLEMENTATIONS}:send_email",
        summary="Send an email",
        example={"to": "ada@example.com", "subject": "Hi", "body": "Hello!"},
    ),
    JobDefinition(
        JobName.write_log,
        WriteLog,
        f"{_IMPLEMENTATIONS}:write_log",
        summary="Write a log line, in 30 s",
        example={"message": "hello"},
        defer_by=30,
    ),
    JobDefinition(
        JobName.update_user,
        UpdateUser,
        f"{_IMPLEMENTATIONS}:update_user",
        summary="Create or update a user",
        example={"email": "ada@example.com", "name": "Ada"},
    ),
    JobDefinition(
        JobName.cleanup_temp_files,
        CleanupTempFiles,
        f"{_IMPLEMENTATIONS}:cleanup_temp_files",
        tries=1,
        summary="Clean the temp directory now",
    ),
    JobDefinition(
        JobName.write_report,
        WriteReport,
        "services.jobs.implementations.reports:write_report",
        tries=3,
        timeout=30,
        permanent=("services.jobs.implementations.reports:ReportTooLarge",),
        keep_days=90,
        summary="Write a CSV report",
        example={"title": "Signups by day", "columns": ["day", "signups"], "rows": [["2024-05-01", 12]]},
    ),
)
"""Every job, by name: the one place that pairs a name with its payload, implementation and options."""

PAYLOADS: dict[JobName, type[Payload]] = {name: definition.payload for name, definition in JOBS.items()}
"""The payload model of each job."""


class JobStatus(StrEnum):
    """Where a job is in its life, as recorded in the jobs ledger."""

    queued = "queued"
    deferred = "deferred"
    in_progress = "in_progress"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        """True once the job will not run again by itself."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
