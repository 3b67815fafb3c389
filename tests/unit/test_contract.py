"""The contract: job names, their payload models, and the text types that keep fields single-line."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from services.contract import (
    FINAL_STATUSES,
    PAYLOADS,
    CleanupTempFiles,
    JobName,
    JobStatus,
    Payload,
    SendEmail,
    SingleLine,
    Text,
    UpdateUser,
    WriteLog,
)

single_line: TypeAdapter[str] = TypeAdapter(SingleLine)
text: TypeAdapter[str] = TypeAdapter(Text)


def test_every_job_name_has_a_payload_model() -> None:
    assert set(PAYLOADS) == set(JobName)
    for name, model in PAYLOADS.items():
        assert issubclass(model, Payload), name


def test_job_names_are_their_values() -> None:
    shipped = {"send_email", "write_log", "update_user", "cleanup_temp_files", "write_report"}
    assert {n.value for n in JobName} >= shipped  # a job added to the contract needs no edit here
    for name in JobName:
        assert str(name) == name.value
        assert JobName(name.value) is name


@pytest.mark.parametrize(
    "value",
    ["a\rb", "a\nb", "a\r\nb", "a\u2028b", "a\u2029b", "\x1b[31mred", "a\x00b", "a\tb", "a\x7fb", "a\x85b", "a\x9fb"],
)
def test_single_line_rejects_line_breaks_and_control_characters(value: str) -> None:
    with pytest.raises(ValidationError, match="single line"):
        single_line.validate_python(value)


@pytest.mark.parametrize("value", ["Zoë Ünal", "Ada Lovelace", "日本語 🎉", "O'Brien-Smith, Jr.", "x" * 500])
def test_single_line_accepts_ordinary_text(value: str) -> None:
    assert single_line.validate_python(value) == value


def test_text_rejects_nul_only() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        text.validate_python("a\x00b")
    body = "Hello,\r\n\nline\u2028two\x1b[0m\ttab"
    assert text.validate_python(body) == body


def _email(**changes: Any) -> dict[str, Any]:
    return {"to": "ada@example.com", "subject": "Welcome", "body": "Hello", **changes}


def test_send_email_accepts_a_valid_payload() -> None:
    payload = SendEmail.model_validate(_email())

    assert payload.to == "ada@example.com"
    assert payload.mark_welcome_sent is False
    assert payload.model_dump(mode="json") == {**_email(), "mark_welcome_sent": False}


@pytest.mark.parametrize(
    "to",
    [
        "ada@example.com\r\nBcc: x@example.com",
        "ada@example.com\nBcc: x@example.com",
        "ada@example.com\rBcc: x@example.com",
        "Ada <ada@example.com>, x@example.com",
        "not-an-address",
    ],
)
def test_send_email_rejects_a_to_that_is_not_one_address(to: str) -> None:
    with pytest.raises(ValidationError):
        SendEmail.model_validate(_email(to=to))


@pytest.mark.parametrize(
    "subject", ["Hi\r\nBcc: x@example.com", "Hi\nthere", "", "x" * 201, "Hi\u2028there", "\x1b]0;title\x07"]
)
def test_send_email_rejects_a_bad_subject(subject: str) -> None:
    with pytest.raises(ValidationError):
        SendEmail.model_validate(_email(subject=subject))


def test_send_email_body_limits() -> None:
    assert SendEmail.model_validate(_email(body="line\r\nline")).body == "line\r\nline"
    with pytest.raises(ValidationError):
        SendEmail.model_validate(_email(body="a\x00b"))
    with pytest.raises(ValidationError):
        SendEmail.model_validate(_email(body="x" * 100_001))


def test_payloads_refuse_unknown_fields_and_are_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        SendEmail.model_validate(_email(cc="x@example.com"))
    with pytest.raises(ValidationError, match="extra"):
        CleanupTempFiles.model_validate({"directory": "/"})
    payload = WriteLog(message="hi")
    with pytest.raises(ValidationError, match="frozen"):
        payload.message = "changed"  # type: ignore[misc]


def test_write_log_keeps_multi_line_messages_but_not_empty_or_nul() -> None:
    assert WriteLog(message="a\nb").message == "a\nb"
    for bad in ["", "a\x00b", "x" * 10_001]:
        with pytest.raises(ValidationError):
            WriteLog(message=bad)


def test_update_user_name_is_single_line() -> None:
    assert UpdateUser(email="ada@example.com", name="Zoë Ünal").name == "Zoë Ünal"
    for bad in ["Ada\r\nBcc: x", "", "x" * 201]:
        with pytest.raises(ValidationError):
            UpdateUser(email="ada@example.com", name=bad)


def test_final_statuses() -> None:
    assert {s for s in JobStatus if s.is_final} == FINAL_STATUSES
    assert {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled} == FINAL_STATUSES
