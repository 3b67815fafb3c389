"""The mailer against a real SMTP server (the session's aiosmtpd sink)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from services.jobs.errors import PermanentError, TransientError
from services.jobs.mailer import Mailer
from services.settings import Settings
from tests.support.ports import free_port
from tests.support.smtp_sink import SmtpSink

SENDER = "Afterword <noreply@afterword.test>"


def _recipient() -> str:
    return f"user-{uuid.uuid4().hex}@example.com"


def _mailer(sink: SmtpSink) -> Mailer:
    return Mailer(host=sink.host, port=sink.port, sender=SENDER, timeout=5.0)


@pytest.fixture
def refused(smtp_sink: SmtpSink) -> Iterator[list[str]]:
    """Addresses a test asks the sink to refuse; accepted again after the test."""
    addresses: list[str] = []
    try:
        yield addresses
    finally:
        for address in addresses:
            smtp_sink.accept(address)


@pytest.fixture
def clean_failures(smtp_sink: SmtpSink) -> Iterator[None]:
    """Reset the sink's pending temporary failures after the test, whatever happened."""
    try:
        yield
    finally:
        smtp_sink.fail_next(0)


async def test_delivered_message_has_headers_body_and_job_message_id(smtp_sink: SmtpSink) -> None:
    mailer = _mailer(smtp_sink)
    to = _recipient()
    job_id = uuid.uuid4().hex
    body = "Hello Zoë,\n\nthanks for signing up.\n"

    await mailer.send(mailer.build(job_id=job_id, to=to, subject="Welcome to Afterword", body=body))

    [message] = smtp_sink.messages_to(to)
    assert message["To"] == to
    assert message["From"] == SENDER
    assert message["Subject"] == "Welcome to Afterword"
    assert message["Message-ID"] == mailer.message_id(job_id)
    assert message["Message-ID"] == f"<{job_id}@afterword.test>"
    assert message["Date"] is not None
    content = message.get_content()
    assert isinstance(content, str)
    assert content.replace("\r\n", "\n") == body  # SMTP carries CRLF line ends


async def test_non_ascii_subject_arrives_intact(smtp_sink: SmtpSink) -> None:
    mailer = _mailer(smtp_sink)
    to = _recipient()

    await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="Grüße, Zoë Ünal", body="hi"))

    [message] = smtp_sink.messages_to(to)
    assert message["Subject"] == "Grüße, Zoë Ünal"


def test_message_id_is_the_same_on_every_build_of_a_job() -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)
    job_id = uuid.uuid4().hex

    first = mailer.build(job_id=job_id, to="a@example.com", subject="s", body="b")
    second = mailer.build(job_id=job_id, to="a@example.com", subject="s", body="b")
    other = mailer.build(job_id=uuid.uuid4().hex, to="a@example.com", subject="s", body="b")

    assert first["Message-ID"] == second["Message-ID"] == mailer.message_id(job_id)
    assert other["Message-ID"] != first["Message-ID"]


def test_message_id_domain_falls_back_when_sender_has_no_domain() -> None:
    # A sender without "@domain" must not lend its local part to the Message-ID.
    mailer = Mailer(host="127.0.0.1", port=1025, sender="Afterword <noreply>")

    assert mailer.message_id("abc") == "<abc@afterword.localhost>"


def test_build_refuses_header_injection_in_the_subject() -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)

    with pytest.raises(ValueError, match="linefeed or carriage return"):
        mailer.build(job_id="j", to="a@example.com", subject="Hi\r\nBcc: x@example.com", body="b")


async def test_recipient_refused_with_550_is_permanent(smtp_sink: SmtpSink, refused: list[str]) -> None:
    mailer = _mailer(smtp_sink)
    to = _recipient()
    refused.append(to)
    smtp_sink.refuse(to, 550)

    with pytest.raises(PermanentError, match="550"):
        await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b"))
    assert smtp_sink.messages_to(to) == []


@pytest.mark.parametrize("code", [450, 451])
async def test_recipient_refused_with_4xx_is_transient(smtp_sink: SmtpSink, refused: list[str], code: int) -> None:
    mailer = _mailer(smtp_sink)
    to = _recipient()
    refused.append(to)
    smtp_sink.refuse(to, code, "4.2.1 Mailbox busy")

    with pytest.raises(TransientError, match=str(code)):
        await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b"))
    assert smtp_sink.messages_to(to) == []


async def test_refused_recipient_is_delivered_once_accepted_again(smtp_sink: SmtpSink, refused: list[str]) -> None:
    mailer = _mailer(smtp_sink)
    to = _recipient()
    refused.append(to)
    message = mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b")
    smtp_sink.refuse(to, 451)
    with pytest.raises(TransientError):
        await mailer.send(message)

    smtp_sink.accept(to)
    await mailer.send(message)

    assert len(smtp_sink.messages_to(to)) == 1


async def test_temporary_failure_at_data_is_transient(smtp_sink: SmtpSink, clean_failures: None) -> None:
    mailer = _mailer(smtp_sink)
    to = _recipient()
    smtp_sink.fail_next(1)

    with pytest.raises(TransientError, match="451"):
        await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b"))
    assert smtp_sink.messages_to(to) == []

    # The failure was used up: the next try is delivered.
    await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b"))
    assert len(smtp_sink.messages_to(to)) == 1


async def test_nothing_listening_is_transient() -> None:
    port = free_port()
    mailer = Mailer(host="127.0.0.1", port=port, sender=SENDER, timeout=5.0)

    with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
        await mailer.send(mailer.build(job_id="j", to="a@example.com", subject="s", body="b"))


def test_repr_never_shows_the_password() -> None:
    mailer = Mailer(host="smtp.example.com", port=587, sender=SENDER, username="afterword", password="s3cret-pass")

    assert "s3cret-pass" not in repr(mailer)
    assert "s3cret-pass" not in str(mailer)
    assert "smtp.example.com" in repr(mailer)


def test_from_settings_takes_the_secret_without_showing_it() -> None:
    settings = Settings(
        _env_file=None,
        smtp_host="smtp.example.com",
        smtp_port=2525,
        smtp_username="afterword",
        smtp_password=SecretStr("s3cret-pass"),
        mail_from=SENDER,
    )

    mailer = Mailer.from_settings(settings)

    assert repr(mailer) == f"Mailer(host='smtp.example.com', port=2525, sender={SENDER!r})"
    assert "s3cret-pass" not in repr(mailer)
    assert mailer.message_id("job1") == "<job1@afterword.test>"
