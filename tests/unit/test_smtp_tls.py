"""The mailer against SMTP servers run as providers run them: STARTTLS (587) or TLS from the first
byte (465), AUTH LOGIN or PLAIN, certificates from a CA made for the test."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import SecretStr

from services.core.settings import Settings
from services.devstack import preflight
from services.jobs.effects.mailer import Mailer
from services.jobs.errors import PermanentError
from tests.support.certificates import ServerCertificate, TestCertificates, make_certificates
from tests.support.smtp_sink import SmtpSink

SENDER = "Afterword <noreply@afterword.test>"
USER, PASSWORD = "afterword", "s3cret-pass"
Secure = Literal["starttls", "implicit"]
TLS_MODES: list[Secure] = ["starttls", "implicit"]

SinkFactory = Callable[..., SmtpSink]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_certificates(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture
def tls_sink(certificates: TestCertificates) -> Iterator[SinkFactory]:
    """Start a sink speaking TLS the given way (AUTH required unless credentials=None); stopped after the test."""
    started: list[SmtpSink] = []

    def start(
        tls: Secure,
        *,
        certificate: ServerCertificate | None = None,
        credentials: dict[str, str] | None = {USER: PASSWORD},  # noqa: B006 (never changed)
        mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"),
    ) -> SmtpSink:
        context = (certificate or certificates.local).server_context()
        sink = SmtpSink(tls=tls, tls_context=context, credentials=credentials, mechanisms=mechanisms)
        sink.start()
        started.append(sink)
        return sink

    try:
        yield start
    finally:
        for sink in started:
            sink.stop()


@pytest.fixture
async def mailers() -> AsyncIterator[list[Mailer]]:
    """Mailers a test makes; their open sessions are ended after it."""
    made: list[Mailer] = []
    try:
        yield made
    finally:
        for mailer in made:
            await mailer.close()


def _mailer(
    made: list[Mailer],
    sink: SmtpSink,
    tls: Literal["none", "starttls", "implicit"],
    *,
    ca_file: Path | None,
    host: str | None = None,
    password: str = PASSWORD,
) -> Mailer:
    mailer = Mailer(
        host=host or sink.host,
        port=sink.port,
        sender=SENDER,
        username=USER,
        password=password,
        tls=tls,
        ca_file=ca_file,
        timeout=5.0,
    )
    made.append(mailer)
    return mailer


async def _send(mailer: Mailer) -> str:
    to = f"user-{uuid.uuid4().hex}@example.com"
    await mailer.send(mailer.build(job_id=uuid.uuid4().hex, to=to, subject="Welcome", body="Hello\n"))
    return to


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
@pytest.mark.parametrize("tls", TLS_MODES)
async def test_delivered_over_tls_after_auth(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer], tls: Secure, mechanism: str
) -> None:
    sink = tls_sink(tls, mechanisms=(mechanism,))
    mailer = _mailer(mailers, sink, tls, ca_file=certificates.ca_file)

    to = await _send(mailer)

    [received] = sink.received_by(to)
    assert (received.tls, received.login) == (True, USER)
    assert received.message["To"] == to


@pytest.mark.parametrize("tls", TLS_MODES)
async def test_emails_in_a_row_share_one_tls_session(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer], tls: Secure
) -> None:
    sink = tls_sink(tls)
    mailer = _mailer(mailers, sink, tls, ca_file=certificates.ca_file)

    recipients = [await _send(mailer) for _ in range(3)]

    peers = [peer for to in recipients for peer in sink.peers_of(to)]
    assert len(peers) == 3
    assert len(set(peers)) == 1, peers


@pytest.mark.parametrize("tls", TLS_MODES)
async def test_a_wrong_password_is_a_permanent_535(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer], tls: Secure
) -> None:
    sink = tls_sink(tls)
    mailer = _mailer(mailers, sink, tls, ca_file=certificates.ca_file, password="wrong")

    with pytest.raises(PermanentError, match="535"):
        await _send(mailer)
    assert sink.received == []


@pytest.mark.parametrize("tls", TLS_MODES)
async def test_a_certificate_for_another_host_fails_permanently_saying_why(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer], tls: Secure
) -> None:
    sink = tls_sink(tls, certificate=certificates.other_host)
    by_address = _mailer(mailers, sink, tls, ca_file=certificates.ca_file)
    by_name = _mailer(mailers, sink, tls, ca_file=certificates.ca_file, host="localhost")

    with pytest.raises(PermanentError, match=r"certificate verify failed: IP address mismatch"):
        await _send(by_address)
    with pytest.raises(PermanentError, match=r"certificate verify failed: Hostname mismatch.*'localhost'"):
        await _send(by_name)
    assert sink.received == []


@pytest.mark.parametrize("tls", TLS_MODES)
async def test_a_certificate_from_a_ca_not_trusted_fails_permanently_saying_why(
    tls_sink: SinkFactory, mailers: list[Mailer], tls: Secure
) -> None:
    sink = tls_sink(tls)
    mailer = _mailer(mailers, sink, tls, ca_file=None)  # the system's CAs: the test CA is not one

    with pytest.raises(PermanentError, match="certificate verify failed: unable to get local issuer certificate"):
        await _send(mailer)
    assert sink.received == []


async def test_starttls_required_but_not_offered_is_permanent(
    smtp_sink: SmtpSink, certificates: TestCertificates, mailers: list[Mailer]
) -> None:
    # A server (or a man in the middle) that does not offer STARTTLS gets no plain-text email.
    mailer = _mailer(mailers, smtp_sink, "starttls", ca_file=certificates.ca_file)

    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        await _send(mailer)


def test_the_tls_context_always_verifies(certificates: TestCertificates) -> None:
    for ca_file in (None, certificates.ca_file):
        for tls in TLS_MODES:
            context = Mailer(host="h", port=1, sender=SENDER, tls=tls, ca_file=ca_file).tls_context
            assert context is not None
            assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert Mailer(host="h", port=1, sender=SENDER).tls_context is None


async def test_from_settings_sends_over_implicit_tls_with_auth(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer]
) -> None:
    sink = tls_sink("implicit", mechanisms=("LOGIN",))
    settings = Settings(
        _env_file=None,
        smtp_host="localhost",
        smtp_port=sink.port,
        smtp_tls="implicit",
        smtp_ca_file=certificates.ca_file,
        smtp_username=USER,
        smtp_password=SecretStr(PASSWORD),
        mail_from=SENDER,
    )
    mailer = Mailer.from_settings(settings)
    mailers.append(mailer)

    to = await _send(mailer)

    [received] = sink.received_by(to)
    assert (received.tls, received.login) == (True, USER)


async def test_implicit_tls_against_a_plain_port_fails_permanently_saying_why(
    smtp_sink: SmtpSink, certificates: TestCertificates, mailers: list[Mailer]
) -> None:
    mailer = _mailer(mailers, smtp_sink, "implicit", ca_file=certificates.ca_file)

    with pytest.raises(PermanentError, match=r"TLS handshake failed: .*WRONG_VERSION_NUMBER.*SMTP_TLS=implicit"):
        await _send(mailer)


async def test_a_server_requiring_auth_refuses_a_mailer_without_credentials_permanently(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer]
) -> None:
    sink = tls_sink("starttls")
    mailer = Mailer(
        host=sink.host, port=sink.port, sender=SENDER, tls="starttls", ca_file=certificates.ca_file, timeout=5.0
    )
    mailers.append(mailer)

    with pytest.raises(PermanentError, match="530"):
        await _send(mailer)
    assert sink.received == []


async def test_verify_opens_a_tls_session_with_auth_and_ends_it(
    tls_sink: SinkFactory, certificates: TestCertificates, mailers: list[Mailer]
) -> None:
    good = tls_sink("starttls")
    wrong_host = tls_sink("implicit", certificate=certificates.other_host)

    await _mailer(mailers, good, "starttls", ca_file=certificates.ca_file).verify()
    with pytest.raises(PermanentError, match="535"):
        await _mailer(mailers, good, "starttls", ca_file=certificates.ca_file, password="wrong").verify()
    with pytest.raises(PermanentError, match="certificate verify failed: IP address mismatch"):
        await _mailer(mailers, wrong_host, "implicit", ca_file=certificates.ca_file).verify()
    assert good.received == wrong_host.received == []


async def test_make_check_says_why_the_smtp_server_is_refused(
    tls_sink: SinkFactory, certificates: TestCertificates, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = tls_sink("implicit", certificate=certificates.other_host)
    settings = Settings(
        _env_file=None,
        smtp_host=sink.host,
        smtp_port=sink.port,
        smtp_tls="implicit",
        smtp_ca_file=certificates.ca_file,
        smtp_username=USER,
        smtp_password=SecretStr(PASSWORD),
    )

    assert not await preflight._check("smtp", "target", preflight._smtp(settings))
    err = capsys.readouterr().err
    assert f"smtp     DOWN at target: SMTP server 127.0.0.1:{sink.port}: TLS certificate verify failed" in err
    assert "IP address mismatch" in err
