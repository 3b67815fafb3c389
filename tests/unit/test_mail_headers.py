"""No header line the mailer did not build, whatever the input: encoded words of every form in the
subject, the recipient's display name and the sender's, sent to the real SMTP sink."""

from __future__ import annotations

import email.policy
import re
import uuid
from collections.abc import AsyncIterator
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.jobs.effects.mail_headers import HeaderRefused, check_header_block
from services.jobs.effects.mailer import Mailer
from services.jobs.errors import PermanentError
from tests.support.encoded_words import ISSUE_NAME, has_control_character, hostile_values
from tests.support.smtp_sink import Received, SmtpSink

SENDER = "Afterword <noreply@afterword.test>"
BODY = "Hello,\n\nthanks for signing up.\n"
RUNS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
async def mailer(smtp_sink: SmtpSink) -> AsyncIterator[Mailer]:
    mailer = Mailer(host=smtp_sink.host, port=smtp_sink.port, sender=SENDER, timeout=5.0)
    try:
        yield mailer
    finally:
        await mailer.close()


def _address() -> str:
    return f"user-{uuid.uuid4().hex}@example.com"


def _decoded_as_rfc_2047_says(raw: bytes, field: str) -> str:
    """A header's value from the wire, unfolded and its encoded words decoded as RFC 2047 says.

    The standard library's modern parser keeps the space between two encoded words of a display
    name (which RFC 2047 section 6.2 says to drop), so a long name it reads back gains spaces; the
    legacy decoder follows the RFC, as mail readers do.
    """
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", head)
    [value] = [line.split(":", 1)[1].strip() for line in unfolded.split("\r\n") if line.startswith(f"{field}:")]
    return str(make_header(decode_header(value)))


def _header_names(raw: bytes) -> list[str]:
    """The name of every line of the header block that is not a continuation line."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return [line.split(b":", 1)[0].decode("ascii", "replace") for line in head.split(b"\n") if line[:1] not in b" \t"]


def assert_delivered_as_built(received: Received, built: EmailMessage, body: str) -> None:
    """The message that arrived has exactly the built header lines and one text body."""
    message = received.message
    assert message.keys() == built.keys()
    assert _header_names(received.raw) == built.keys()
    assert message.defects == []
    assert not message.is_multipart()
    assert message.get_content_type() == "text/plain"
    content = message.get_content()
    assert isinstance(content, str)
    assert content.replace("\r\n", "\n") == body
    for name, value in message.items():
        assert not has_control_character(str(value)), (name, str(value))


def quoted(name: str) -> str:
    """``name`` as a quoted string."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _send(
    mailer: Mailer, sink: SmtpSink, *, to: str, address: str, subject: str, refusable: bool = False
) -> Received | None:
    """Build and send; None when the mailer refused the values: only ever for a control character,
    or where the caller says it may (an unquoted display name holding <, > or ")."""
    try:
        built = mailer.build(job_id=uuid.uuid4().hex, to=to, subject=subject, body=BODY)
    except ValueError:
        assert refusable or has_control_character(to + subject), "only a control character is refused"
        return None
    assert not has_control_character(to + subject)
    await mailer.send(built)
    [received] = sink.received_by(address)
    assert received.recipients == [address]
    assert_delivered_as_built(received, built, BODY)
    return received


@RUNS
@given(subject=hostile_values())
@example(subject=ISSUE_NAME)
@example(subject="Welcome to Afterword, " + ISSUE_NAME)
@example(subject="=?utf-8?q?x=0D=0AReply-To:_eve@evil.example=0D=0ABcc:_eve@evil.example?=")
async def test_a_subject_of_encoded_words_arrives_as_its_literal_text(
    mailer: Mailer, smtp_sink: SmtpSink, subject: str
) -> None:
    address = _address()
    received = await _send(mailer, smtp_sink, to=address, address=address, subject=subject)

    if received is not None:
        assert received.message["Subject"] == subject
        assert received.message["To"] == address


@RUNS
@given(name=hostile_values(), as_quoted=st.booleans())
@example(name=ISSUE_NAME, as_quoted=True)
@example(
    name="=?utf-16-be?b?AEEAZABhAA0ACgBCAGMAYwA6ACAAZQB2AGUAQABlAHYAaQBsAC4AZQB4AGEAbQBwAGwAZQ==?=", as_quoted=False
)
async def test_a_display_name_of_encoded_words_arrives_as_its_literal_text(
    mailer: Mailer, smtp_sink: SmtpSink, name: str, as_quoted: bool
) -> None:
    address = _address()
    shown, specials = (quoted(name), False) if as_quoted else (name, any(char in name for char in '<>"'))
    received = await _send(
        mailer, smtp_sink, to=f"{shown} <{address}>", address=address, subject="Hi", refusable=specials
    )

    if received is not None:
        [recipient] = received.message["To"].addresses
        assert recipient.addr_spec == address
        shown_name = name if as_quoted else name.strip()
        assert _decoded_as_rfc_2047_says(received.raw, "To") == f"{shown_name} <{address}>"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_values())
@example(name=ISSUE_NAME)
async def test_a_sender_name_of_encoded_words_arrives_as_its_literal_text(smtp_sink: SmtpSink, name: str) -> None:
    try:
        mailer = Mailer(host=smtp_sink.host, port=smtp_sink.port, sender=f"{quoted(name)} <noreply@afterword.test>")
    except ValueError:
        assert has_control_character(name)
        return
    address = _address()
    try:
        received = await _send(mailer, smtp_sink, to=address, address=address, subject="Hi")
    finally:
        await mailer.close()

    assert received is not None
    [sender] = received.message["From"].addresses
    assert sender.addr_spec == "noreply@afterword.test"
    assert _decoded_as_rfc_2047_says(received.raw, "From") == f"{name} <noreply@afterword.test>"
    assert received.sender == "noreply@afterword.test"


@pytest.mark.parametrize(
    "subject",
    [
        "Grüße, Zoë Ünal: " + "long words " * 20,
        "日本語のメール 🎉 " * 12,
        "=?" * 40,
        "?= =? ?Q? ?B? =?utf-8?",
        " leading and trailing  spaces ",
        "a" * 300,
        "",
    ],
)
async def test_any_single_line_subject_arrives_intact_in_lines_of_at_most_76(
    mailer: Mailer, smtp_sink: SmtpSink, subject: str
) -> None:
    address = _address()
    received = await _send(mailer, smtp_sink, to=address, address=address, subject=subject)

    assert received is not None
    assert received.message["Subject"] == subject
    head = received.raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n") if not line.startswith(b"Message-ID")) <= 76


@pytest.mark.parametrize(
    ("to", "name"),
    [
        ("Zoë Ünal <{}>", "Zoë Ünal"),
        ('"Lovelace, Ada" <{}>', "Lovelace, Ada"),
        ('"Ada \\"the Countess\\" L." <{}>', 'Ada "the Countess" L.'),
        ("Ada Lovelace <{}>", "Ada Lovelace"),
        ("<{}>", ""),
        ("{}", ""),
    ],
)
async def test_display_names_arrive_intact(mailer: Mailer, smtp_sink: SmtpSink, to: str, name: str) -> None:
    address = _address()
    received = await _send(mailer, smtp_sink, to=to.format(address), address=address, subject="Hi")

    assert received is not None
    [recipient] = received.message["To"].addresses
    assert (recipient.display_name, recipient.addr_spec) == (name, address)


async def test_a_non_ascii_address_goes_over_smtputf8_with_its_name_encoded(
    mailer: Mailer, smtp_sink: SmtpSink
) -> None:
    address = f"zoë-{uuid.uuid4().hex[:8]}@exämple.test"
    received = await _send(mailer, smtp_sink, to=f"Zoë Ünal <{address}>", address=address, subject="Grüße")

    assert received is not None
    assert f"To: =?utf-8?b?Wm/DqyDDnG5hbA==?= <{address}>\r\n".encode() in received.raw  # raw UTF-8 address
    assert received.message["Subject"] == "Grüße"


async def test_a_non_ascii_body_goes_to_a_server_without_8bitmime_with_the_built_headers() -> None:
    # For a 7-bit server the standard library re-encodes the body on a copy of the message, and
    # moves Content-Transfer-Encoding last: the same headers, in another order.
    sink = SmtpSink(eight_bit_mime=False)
    sink.start()
    mailer = Mailer(host=sink.host, port=sink.port, sender=SENDER, timeout=5.0)
    address, body = _address(), "Grüße, Zoë,\n\n日本語\n"
    try:
        built = mailer.build(job_id=uuid.uuid4().hex, to=f"Zoë <{address}>", subject="Grüße", body=body)
        await mailer.send(built)
    finally:
        await mailer.close()
        sink.stop()

    [received] = sink.received_by(address)
    assert sorted(received.message.keys()) == sorted(built.keys())
    assert received.message["Content-Transfer-Encoding"] == "base64"
    assert received.raw.isascii()
    content = received.message.get_content()
    assert isinstance(content, str)
    assert content.replace("\r\n", "\n") == body
    assert received.message["Subject"] == "Grüße"


@pytest.mark.parametrize(
    "to",
    [
        "=?utf-8?q?eve=0D=0ABcc:_eve@evil.example?=@example.com",
        "Ada <=?utf-8?b?ZXZl?=@example.com>",
        "a@example.com, b@example.com",
        "a@example.com>",
        "Ada <a@example.com> <b@example.com>",
        "no-at-sign",
        "a b@example.com",
        '"quoted local"@example.com',
        "a@example.com (comment)",
        "a@" + "x" * 260 + ".com",
    ],
)
def test_an_address_that_is_not_one_plain_mailbox_is_refused(to: str) -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)

    with pytest.raises(PermanentError, match="recipient"):
        mailer.build(job_id="j1", to=to, subject="s", body="b")


@pytest.mark.parametrize("job_id", ["j\r\nBcc: eve@evil.example", "a b", "=?utf-8?q?x?=", "", "a@b", "<x>"])
def test_a_job_id_that_cannot_be_a_message_id_is_refused(job_id: str) -> None:
    mailer = Mailer(host="127.0.0.1", port=1025, sender=SENDER)

    with pytest.raises(PermanentError, match="Message-ID"):
        mailer.build(job_id=job_id, to="a@example.com", subject="s", body="b")


async def test_a_header_line_the_mailer_did_not_build_is_never_sent(mailer: Mailer, smtp_sink: SmtpSink) -> None:
    # Whatever slips past the building of the headers (here: a Subject written by the standard
    # library's own header parser, which decodes the encoded word), the serialized header block is
    # read back before it is sent.
    address = _address()
    message = mailer.build(job_id=uuid.uuid4().hex, to=address, subject="s", body="b")
    del message["Subject"]
    message["Subject"] = email.policy.default.header_factory("Subject", "=?utf-8?q?x=0D=0ABcc:_eve@evil.example?=")

    with pytest.raises(PermanentError, match="header"):
        await mailer.send(message)
    assert smtp_sink.received_by(address) == []
    assert smtp_sink.received_by("eve@evil.example") == []


BUILT = ["From", "To", "Subject"]
GOOD = b"From: A <a@example.com>\r\nTo: b@example.com\r\nSubject: =?utf-8?b?WsO2?=\r\n folded\r\n\r\nbody\r\n"


def test_the_check_passes_a_block_of_exactly_the_built_headers() -> None:
    check_header_block(GOOD, names=BUILT)


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (GOOD.replace(b"\r\n\r\n", b"\r\nBcc: eve@evil.example\r\n\r\n"), "headers"),
        (GOOD.replace(b"To: b@example.com\r\n", b""), "headers"),
        (GOOD.replace(b"To: b@example.com\r\n", b"To: b@example.com\r\nTo: c@example.com\r\n"), "headers"),
        (GOOD.replace(b"Subject:", b"Subject :"), "starts no header"),
        (GOOD.replace(b" folded", b"<a href=//evil.example>"), "starts no header"),
        (GOOD.replace(b" folded", b" folded\nBcc: eve@evil.example"), "bare CR or LF"),
        (GOOD.replace(b"\r\n\r\n", b"\r\n"), "no blank line"),
        (GOOD.replace(b"To: b@example.com", b'To: "=?utf-8?q?b=0D=0ABcc:_e@x?=" <b@example.com>'), "in To decodes"),
        (
            GOOD.replace(b"To: b@example.com", b"To: b@example.com (=?utf-8?q?=0D=0A?=)"),
            "an encoded word in To decodes",
        ),
        (
            GOOD.replace(b"To: b@example.com", b"To: x=?utf-8?q?=0D=0A?=y <b@example.com>"),
            "an encoded word in To decodes",
        ),
        (GOOD.replace(b"WsO2", b"WsO2DQpCY2M6IGVAeA=="), "in Subject decodes to a control"),
        (GOOD.replace(b"folded", b"=?utf-8?q?a b=0D=0A?="), "in Subject decodes"),
        (GOOD.replace(b"folded", b"x\x0bBcc: e@x"), "Subject holds a control character"),
        (GOOD.replace(b"folded", b"a=?utf-8?q?=0D=0ABcc:_e@x?=b"), "decodes to a control"),
        (GOOD.replace(b"folded", b"=?utf-16-le?b?DQAKAA==?="), "in Subject decodes to a control"),
        (GOOD.replace(b"folded", b"=?x-no-such-charset?q?a?="), "no reader decodes"),
        (GOOD.replace(b"From: A", b"From: =?utf-8?Q?A=00?="), "in From decodes to a control"),
    ],
)
def test_the_check_refuses_a_block_with_anything_not_built(block: bytes, why: str) -> None:
    with pytest.raises(HeaderRefused, match=why):
        check_header_block(block, names=BUILT)
