"""Email delivery over SMTP (aiosmtplib), with a Message-ID derived from the job id.

A worker sends many emails to one server, so the mailer keeps up to ``keep_connections`` SMTP
sessions open between emails and sends the next email on one of them, as Django's and
Flask-Mail's connections can: a new email then costs its own commands (MAIL, RCPT, DATA) and not
a TCP connection, the greeting, EHLO (with the local host name looked up by aiosmtplib in a
thread each time), the TLS handshake and AUTH, and QUIT. A session is taken again only while its
socket is open and it has been idle less than :data:`IDLE_SECONDS` (servers close idle sessions
after some minutes, RFC 5321 4.5.3.2.7); a session that failed in any way is dropped, never reused.

TLS is STARTTLS (required: a server that does not offer it gets nothing) or TLS from the first
byte, as the settings say; the server's certificate is always verified, against the system's CAs
or the ones in a given CA file, and its host name checked. There is no way to turn that off.

The headers that carry values from outside (From, To, Subject) and the Message-ID are written by
:mod:`services.jobs.effects.mail_headers`, never parsed by the email package, and the serialized message's
header block is checked there before it is sent: what is sent is the bytes that were checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import re
import socket
import ssl
import time
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Literal

import aiosmtplib
from aiosmtplib.email import flatten_message

from services.core.settings import Settings
from services.jobs.effects.mail_headers import (
    AddressHeader,
    HeaderRefused,
    check_header_block,
    id_header,
    mailbox,
    text_header,
)
from services.jobs.errors import PermanentError, TransientError

TlsMode = Literal["none", "starttls", "implicit"]
"""No TLS; STARTTLS on a plain connection (port 587), required; or TLS from the first byte (465)."""

IDLE_SECONDS = 30.0
"""An open session idle longer than this is closed instead of used for the next email."""
QUIT_ON_CLOSE_SECONDS = 2.0
"""At shutdown, how long each open session's QUIT may wait for the server (they go all at once)."""


class _HeaderClasses(HeaderRegistry):
    """The standard library's header registry, making each header class once instead of per header.

    ``HeaderRegistry.__getitem__`` (CPython 3.11) creates a new class, with
    ``type()``, for every header it parses: each ``message[name] = value`` and each header that
    ``set_content`` writes, nine per email. The class it makes depends only on the registered
    class for the name, so it is made once per registered class here; parsing, defects and
    folding are the standard library's. Making those classes was a large part of building an
    email.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        registered = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(registered)
        if made is None:
            made = self._made[registered] = super().__getitem__(name)
        return made


POLICY = email.policy.default.clone(header_factory=_HeaderClasses())
"""The standard library's default email policy (``email.policy.default``), header classes made once."""


class Mailer:
    """Builds and sends messages through one SMTP server, on sessions kept open between emails."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        tls: TlsMode = "none",
        ca_file: str | Path | None = None,
        timeout: float = 10.0,
        keep_connections: int = 4,
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be none, starttls or implicit, not {tls!r}")
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._tls = tls
        self.tls_context = None if tls == "none" else _verifying_context(ca_file)
        """How the server's certificate is checked (None without TLS): always against the CAs
        (``ca_file``'s, else the system's) and the host name."""
        self._timeout = timeout
        self._keep = keep_connections
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # open sessions, with when each was last used
        self._local_hostname: str | None = None  # what EHLO names us: looked up once
        # Header objects are immutable and can go in any number of messages: the sender's is
        # made once, the date's once a second.
        self._from_header = AddressHeader.of("From", mailbox(sender, what="sender"))
        self._domain = _message_id_domain(self._from_header.mailbox.address.rpartition("@")[2])
        self._date_header: tuple[str, BaseHeader] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """A mailer for the configured SMTP server."""
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            tls=settings.smtp_tls,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout,
            keep_connections=settings.smtp_keep_connections,
        )

    def __repr__(self) -> str:
        return f"Mailer(host={self._host!r}, port={self._port}, sender={self._sender!r})"

    def message_id(self, job_id: str) -> str:
        """The Message-ID of the email a job sends: the same on every try of that job."""
        return f"<{job_id}@{self._domain}>"

    def build(self, *, job_id: str, to: str, subject: str, body: str) -> EmailMessage:
        """The message a job sends to one recipient (``user@example.com`` or ``Name <user@example.com>``).

        Raises :class:`HeaderRefused` (a permanent error) for a value that cannot go into a header
        safely: a control character in the subject or a name, a recipient that is not one plain
        address, a job id that cannot be a Message-ID.
        """
        message = EmailMessage(policy=POLICY)
        message["From"] = self._from_header
        message["To"] = AddressHeader.of("To", mailbox(to, what="recipient"))
        message["Subject"] = text_header("Subject", subject)
        message["Date"] = self._date()
        message["Message-ID"] = id_header("Message-ID", self.message_id(job_id))
        message.set_content(body)
        return message

    def _date(self) -> BaseHeader:
        """The Date header for now, parsed once per distinct date (the text has whole seconds)."""
        text = formatdate(localtime=False, usegmt=True)
        if self._date_header is None or self._date_header[0] != text:
            self._date_header = (text, POLICY.header_store_parse("Date", text)[1])
        return self._date_header[1]

    async def send(self, message: EmailMessage) -> None:
        """Deliver ``message``; raise TransientError or PermanentError when the server refuses.

        On any error or cancellation the connection is dropped at once, never closed with QUIT: a
        server still busy with our DATA must see the client gone and not deliver, rather than answer
        250 to a sender that has already given up (which would then send the message twice).

        The message must come from :meth:`build`: its envelope is its From and To, and its
        serialized header block is checked (:func:`check_header_block`) before it is sent.
        """
        sender, recipient = _envelope(message)
        utf8 = not (sender + recipient).isascii()
        client = self._idle_session()
        try:
            if client is None:
                client = await self._new_client()
                await self._open(client)
            await _send_checked(client, message, sender=sender, recipient=recipient, utf8=utf8)
        except BaseException as exc:
            if client is not None:
                client.close()
            if isinstance(exc, Exception) and not isinstance(exc, PermanentError):
                raise _classify(exc, self._host, self._port) from None
            raise
        await self._keep_or_quit(client)

    async def verify(self) -> None:
        """Open a session as an email would (connection, TLS, AUTH) and end it with QUIT.

        Raises what :meth:`send` would: a certificate that does not verify or a wrong password is
        a PermanentError saying why, a server away a TransientError.
        """
        client = await self._new_client()
        try:
            await self._open(client)
        except Exception as exc:
            client.close()
            raise exc if isinstance(exc, PermanentError) else _classify(exc, self._host, self._port) from None
        await _quit(client)

    async def close(self) -> None:
        """End the open sessions: QUIT on each at once, and hang up on a server that does not answer
        within :data:`QUIT_ON_CLOSE_SECONDS` (the SMTP timeout would hold a stopping worker up)."""
        idle, self._idle = self._idle, []
        wait = min(self._timeout, QUIT_ON_CLOSE_SECONDS)
        await asyncio.gather(*(_quit(client, wait=wait) for client, _ in idle))

    async def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            use_tls=self._tls == "implicit",
            start_tls=False,  # done by _open, which refuses a server that does not offer it
            tls_context=self.tls_context,
            local_hostname=await self._ehlo_name(),
        )

    async def _open(self, client: aiosmtplib.SMTP) -> None:
        await client.connect()
        if self._tls == "starttls":
            await client.ehlo()
            if not client.supports_extension("starttls"):  # nothing goes out in plain text instead
                raise PermanentError(f"SMTP server {self._host}:{self._port} does not offer STARTTLS")
            await client.starttls()
        if self._username is not None and self._password is not None:
            await client.login(self._username, self._password)
        if client.is_ehlo_or_helo_needed:  # the extensions decide how the message is serialized
            await client.ehlo()

    def _idle_session(self) -> aiosmtplib.SMTP | None:
        """The most recently used open session that may be used again; None if there is none."""
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < IDLE_SECONDS:
                return client
            client.close()  # closed by the server, or idle too long: the server may be closing it
        return None

    async def _keep_or_quit(self, client: aiosmtplib.SMTP) -> None:
        if self._keep > 0 and client.is_connected and len(self._idle) < self._keep:
            self._idle.append((client, time.monotonic()))
        else:
            await _quit(client)

    async def _ehlo_name(self) -> str:
        # aiosmtplib looks up socket.getfqdn() in a thread on every connection otherwise.
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname


_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
"""A domain as it may stand in a Message-ID."""


def _message_id_domain(domain: str) -> str:
    """The sender's domain, an internationalised one in its ASCII form; a fixed one when it has none."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "afterword.localhost"
    return ascii_domain if _DOMAIN.fullmatch(ascii_domain) else "afterword.localhost"


def _envelope(message: EmailMessage) -> tuple[str, str]:
    """The sender and the recipient of a message :meth:`Mailer.build` made."""
    sender, to = message["From"], message["To"]
    if not (isinstance(sender, AddressHeader) and isinstance(to, AddressHeader)):
        raise HeaderRefused("the message was not built by the mailer: its From and To are not the mailer's")
    return sender.mailbox.address, to.mailbox.address


async def _send_checked(
    client: aiosmtplib.SMTP, message: EmailMessage, *, sender: str, recipient: str, utf8: bool
) -> None:
    """Serialize ``message`` as aiosmtplib's ``send_message`` would, check its header block, send those bytes."""
    options = []
    if utf8:
        if not client.supports_extension("smtputf8"):
            raise PermanentError("the address is not ASCII and the SMTP server does not offer SMTPUTF8")
        options.append("SMTPUTF8")
    eight_bit = client.supports_extension("8bitmime")
    if eight_bit:
        options.append("BODY=8BITMIME")
    data = flatten_message(message, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    check_header_block(data, names=message.keys())
    await client.sendmail(sender, [recipient], data, mail_options=options)


async def _quit(client: aiosmtplib.SMTP, *, wait: float | None = None) -> None:
    """QUIT, waiting ``wait`` seconds for the answer (None: the session's timeout), then hang up."""
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):  # SMTPTimeoutError included
        await (client.quit() if wait is None else client.quit(timeout=wait))
    client.close()


def _verifying_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """A client TLS context that verifies the server's certificate and host name (Python's
    defaults), trusting the CAs in ``ca_file`` only when it is given, else the system's."""
    return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))


def _classify(exc: Exception, host: str, port: int) -> TransientError | PermanentError:
    """Retry what may pass (no answer, a 4xx reply), fail at once on a 5xx reply or a TLS failure.

    A certificate that does not verify (not signed by a trusted CA, expired, for another host) or
    a TLS handshake that fails is permanent: the same configuration meets the same certificate on
    every try, and retrying would only hide the reason, which the error gives. The job can be
    retried once the setting or the server is fixed.
    """
    tls_error = _tls_error(exc)
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        return PermanentError(
            f"SMTP server {host}:{port}: TLS certificate verify failed: {tls_error.verify_message}"
            f" ({_CERTIFICATE_HINT})"
        )
    if tls_error is not None:
        return PermanentError(f"SMTP server {host}:{port}: TLS handshake failed: {tls_error} ({_HANDSHAKE_HINT})")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [recipient.code for recipient in exc.recipients]
        return _by_code(min(codes), f"recipient refused: {codes}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, f"SMTP {exc.code}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentError(f"SMTP server does not support this: {exc}")
    return TransientError(f"SMTP server {host}:{port} unreachable: {type(exc).__name__}: {exc}")


_CERTIFICATE_HINT = "SMTP_HOST must be a name the certificate holds; SMTP_CA_FILE trusts a private CA"
_HANDSHAKE_HINT = "SMTP_TLS=implicit is for a port speaking TLS at once (465), starttls for 587"


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (aiosmtplib wraps one met while connecting), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _by_code(code: int, text: str) -> TransientError | PermanentError:
    return TransientError(text) if 400 <= code < 500 else PermanentError(text)
