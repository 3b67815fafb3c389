"""The job names, statuses and payload models of the Afterword API.

Generated from services/contract.py by ``make client-models``: do not edit it here. The
repository's tests fail while it differs from what the contract generates.
"""

from __future__ import annotations

import math
import re
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

__all__ = [
    "FINAL_STATUSES",
    "PAYLOADS",
    "CleanupTempFiles",
    "JobName",
    "JobStatus",
    "Payload",
    "SendEmail",
    "UpdateUser",
    "WriteLog",
    "WriteReport",
]

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


PAYLOADS: dict[JobName, type[Payload]] = {
    JobName.send_email: SendEmail,
    JobName.write_log: WriteLog,
    JobName.update_user: UpdateUser,
    JobName.cleanup_temp_files: CleanupTempFiles,
    JobName.write_report: WriteReport,
}
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
