"""The mailer against a real SMTP server (the session's aiosmtpd sink)."""

from __future__ import annotations

import asyncio
import email.policy
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from services.core.settings import Settings
from services.jobs.effects import mailer as mailer_module
from services.jobs.effects.mailer import Mailer
from services.jobs.errors import PermanentError, TransientError
from tests.support.ports import free_port
from tests.support.smtp_sink import SmtpSink

SENDER = "Afterword <noreply@afterword.test>"


def _recipient() -> str:
    return f"user-{uuid.uuid4().hex}@example.com"


@pytest.fixture
async def mailer(smtp_sink: SmtpSink) -> AsyncIterator[Mailer]:
    """A mailer on the session's sink; its open sessions are ended after the test."""
    mailer = Mailer(host=smtp_sink.host, port=smtp_sink.port, sender=SENDER, timeout=5.0)
    try:
        yield mailer
    finally:
        await mailer.close()


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


async def test_delivered_message_has_headers_body_and_job_message_id(mailer: Mailer, smtp_sink: SmtpSink) -> None:
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


async def test_non_ascii_subject_arrives_intact(mailer: Mailer, smtp_sink: SmtpSink) -> None:
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


def test_message_id_domain_is_the_ascii_form_of_an_internationalised_sender_domain() -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender="Afterword <noreply@bücher.example>")

    assert mailer.message_id("abc") == "<abc@xn--bcher-kva.example>"


def test_a_sender_without_a_domain_is_refused_when_the_mailer_is_made() -> None:
    with pytest.raises(ValueError, match="sender: not one plain address"):
        Mailer(host="127.0.0.1", port=1025, sender="Afterword <noreply>")


@pytest.mark.parametrize(
    ("to", "subject", "body"),
    [
        ("a@example.com", "Welcome to Afterword, Ann", "Hello Ann,\n\nthanks.\n"),
        ("Zoë Ünal <zoe@example.com>", "Grüße, Zoë: ça va? " + "long words " * 12, "Ünïcödé body\n" * 3),
        ("a@example.com", "=?utf-8?q?not_decoded?=", "line\r\n.\r\nafter a lone dot\n"),
    ],
)
def test_message_is_byte_for_byte_what_the_default_policy_builds(
    monkeypatch: pytest.MonkeyPatch, to: str, subject: str, body: str
) -> None:
    # The mailer's policy only makes each header class once: parsing and folding must not change
    # (for the headers the email package writes: Date and the content headers).
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)
    monkeypatch.setattr(mailer_module, "formatdate", lambda **_: "Tue, 24 Nov 2026 03:00:00 +0000")

    ours = mailer.build(job_id="j1", to=to, subject=subject, body=body)
    monkeypatch.setattr(mailer_module, "POLICY", email.policy.default)
    # A new mailer: the headers it keeps (From, Date) parsed by the default policy too.
    standard = Mailer(host="127.0.0.1", port=1025, sender=SENDER).build(job_id="j1", to=to, subject=subject, body=body)

    assert ours.policy is not standard.policy
    assert ours.as_bytes(policy=email.policy.SMTP) == standard.as_bytes(policy=email.policy.SMTP)
    assert [(k, type(v).__mro__[1:]) for k, v in ours.items()] == [
        (k, type(v).__mro__[1:]) for k, v in standard.items()
    ]
    assert [v.defects for v in ours.values()] == [v.defects for v in standard.values()]


def test_the_sender_is_parsed_once_and_the_date_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    sender = "Zoë at Afterword <noreply@afterword.test>"
    clock = iter(["Tue, 24 Nov 2026 03:00:00 +0000"] * 2 + ["Tue, 24 Nov 2026 03:00:01 +0000"])
    monkeypatch.setattr(mailer_module, "formatdate", lambda **_: next(clock))
    mailer = Mailer(host="127.0.0.1", port=1025, sender=sender)

    first, second, third = (mailer.build(job_id=f"j{i}", to="a@example.com", subject="s", body="b") for i in range(3))

    assert first["From"] is second["From"] is third["From"]
    assert first["Date"] is second["Date"]
    assert (str(second["Date"]), str(third["Date"])) == (
        "Tue, 24 Nov 2026 03:00:00 +0000",
        "Tue, 24 Nov 2026 03:00:01 +0000",
    )
    monkeypatch.setattr(mailer_module, "POLICY", email.policy.default)
    monkeypatch.setattr(mailer_module, "formatdate", lambda **_: "Tue, 24 Nov 2026 03:00:01 +0000")
    standard = Mailer(host="127.0.0.1", port=1025, sender=sender).build(
        job_id="j2", to="a@example.com", subject="s", body="b"
    )
    assert third.as_bytes(policy=email.policy.SMTP) == standard.as_bytes(policy=email.policy.SMTP)


def test_a_sender_with_a_line_break_is_refused_when_the_mailer_is_made() -> None:
    with pytest.raises(ValueError, match="sender: holds a line break"):
        Mailer(host="127.0.0.1", port=1025, sender="Afterword <a@example.com>\r\nBcc: x@example.com")


def test_each_header_class_is_made_once() -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)

    first = mailer.build(job_id="j1", to="a@example.com", subject="s", body="b")
    second = mailer.build(job_id="j2", to="b@example.com", subject="t", body="c")

    assert [type(v) for v in first.values()] == [type(v) for v in second.values()]
    assert type(first["To"]) is type(first["From"])  # both address headers: one class
    assert type(first["Subject"]) is not type(first["To"])


def test_build_refuses_header_injection_in_the_subject() -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)

    with pytest.raises(PermanentError, match="Subject: holds a line break"):
        mailer.build(job_id="j", to="a@example.com", subject="Hi\r\nBcc: x@example.com", body="b")


async def test_recipient_refused_with_550_is_permanent(mailer: Mailer, smtp_sink: SmtpSink, refused: list[str]) -> None:
    to = _recipient()
    refused.append(to)
    smtp_sink.refuse(to, 550)

    with pytest.raises(PermanentError, match="550"):
        await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b"))
    assert smtp_sink.messages_to(to) == []


@pytest.mark.parametrize("code", [450, 451])
async def test_recipient_refused_with_4xx_is_transient(
    mailer: Mailer, smtp_sink: SmtpSink, refused: list[str], code: int
) -> None:
    to = _recipient()
    refused.append(to)
    smtp_sink.refuse(to, code, "4.2.1 Mailbox busy")

    with pytest.raises(TransientError, match=str(code)):
        await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b"))
    assert smtp_sink.messages_to(to) == []


async def test_refused_recipient_is_delivered_once_accepted_again(
    mailer: Mailer, smtp_sink: SmtpSink, refused: list[str]
) -> None:
    to = _recipient()
    refused.append(to)
    message = mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b")
    smtp_sink.refuse(to, 451)
    with pytest.raises(TransientError):
        await mailer.send(message)

    smtp_sink.accept(to)
    await mailer.send(message)

    assert len(smtp_sink.messages_to(to)) == 1


async def test_temporary_failure_at_data_is_transient(
    mailer: Mailer, smtp_sink: SmtpSink, clean_failures: None
) -> None:
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


async def _send_to(mailer: Mailer, to: str) -> None:
    await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="Hi", body="Hello\n"))


async def test_emails_in_a_row_go_through_one_open_session(mailer: Mailer, smtp_sink: SmtpSink) -> None:
    to = _recipient()
    for _ in range(3):
        await _send_to(mailer, to)

    peers = smtp_sink.peers_of(to)
    assert len(peers) == 3
    assert len(set(peers)) == 1, peers


async def test_a_session_that_failed_is_never_used_again(
    mailer: Mailer, smtp_sink: SmtpSink, clean_failures: None
) -> None:
    to = _recipient()
    await _send_to(mailer, to)
    smtp_sink.fail_next(1)
    with pytest.raises(TransientError):
        await _send_to(mailer, to)
    await _send_to(mailer, to)

    first, after_failure = smtp_sink.peers_of(to)
    assert first != after_failure, "the session that got the 451 was dropped"


async def test_a_session_the_server_closed_is_replaced(smtp_sink: SmtpSink) -> None:
    sink = SmtpSink()
    sink.start()
    mailer = Mailer(host=sink.host, port=sink.port, sender=SENDER, timeout=5.0)
    to = _recipient()
    try:
        await _send_to(mailer, to)
        sink.stop()  # closes the open session
        sink.start()
        await asyncio.sleep(0.1)  # the close reaches the client
        await _send_to(mailer, to)
    finally:
        await mailer.close()
        sink.stop()

    assert len(sink.messages_to(to)) == 2


async def test_sessions_idle_too_long_or_not_kept_are_not_reused(
    smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    to = _recipient()
    one_per_email = Mailer(host=smtp_sink.host, port=smtp_sink.port, sender=SENDER, keep_connections=0)
    await _send_to(one_per_email, to)
    await _send_to(one_per_email, to)
    monkeypatch.setattr(mailer_module, "IDLE_SECONDS", 0.0)
    kept = Mailer(host=smtp_sink.host, port=smtp_sink.port, sender=SENDER)
    try:
        await _send_to(kept, to)
        await _send_to(kept, to)
    finally:
        await kept.close()

    assert len(set(smtp_sink.peers_of(to))) == 4


async def test_close_hangs_up_on_a_server_that_does_not_answer_quit(smtp_sink: SmtpSink) -> None:
    # A stopping worker closes its open sessions: a server slow to answer QUIT must not hold it for
    # the SMTP timeout (30 s here) per session.
    mailer = Mailer(host=smtp_sink.host, port=smtp_sink.port, sender=SENDER, timeout=30.0)
    recipients = [_recipient() for _ in range(3)]
    await asyncio.gather(
        *(mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="s", body="b")) for to in recipients)
    )
    assert len({peer for to in recipients for peer in smtp_sink.peers_of(to)}) == 3  # three open sessions
    smtp_sink.slow_quit(60)
    try:
        await asyncio.wait_for(mailer.close(), timeout=3 * mailer_module.QUIT_ON_CLOSE_SECONDS)
    finally:
        smtp_sink.slow_quit(0)

    assert mailer._idle == []
