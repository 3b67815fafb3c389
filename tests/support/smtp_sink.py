"""A real SMTP server (aiosmtpd) in the test process that keeps what it receives.

Its behaviour can be switched while it runs: refuse a recipient with a given code, answer the
next deliveries with a temporary error, or stop listening altogether. Made with a TLS mode it
speaks STARTTLS (and requires it before anything else) or TLS from the first byte; made with
credentials it requires AUTH (LOGIN and PLAIN, or the mechanisms named), over TLS only.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.ports import free_port


@dataclass
class Received:
    """One delivered message."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    peer: Any = None
    """The client's (host, port): which SMTP session delivered the message."""
    raw: bytes = b""
    """The message as it came over the wire (after the DATA transparency dots were removed)."""
    tls: bool = False
    """Whether the session was encrypted when the message was delivered."""
    login: str | None = None
    """The user the session authenticated as, if it did."""


@dataclass
class _Behaviour:
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    temporary_failures: int = 0
    data_delay: float = 0.0
    quit_delay: float = 0.0
    waiting: int = 0


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self._sink.requires_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        with self._sink.lock:
            refusal = self._sink.behaviour.refuse.get(address.lower())
        if refusal is not None:
            code, text = refusal
            return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._sink.lock:
            delay = self._sink.behaviour.quit_delay
        if delay:
            await asyncio.sleep(delay)
        return "221 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._sink.lock:
            delay = self._sink.behaviour.data_delay
        if delay:
            with self._sink.lock:
                self._sink.behaviour.waiting += 1
            await asyncio.sleep(delay)
            if server.transport is None or server.transport.is_closing():
                # Like a careful server: a client gone before the 250 means nothing is delivered.
                return "451 4.4.2 Connection lost before the message was accepted"
        with self._sink.lock:
            if self._sink.behaviour.temporary_failures > 0:
                self._sink.behaviour.temporary_failures -= 1
                return "451 4.3.0 Try again later"
            content: Any = envelope.original_content or envelope.content
            message = message_from_bytes(content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            self._sink.received.append(
                Received(
                    sender=str(envelope.mail_from),
                    recipients=list(envelope.rcpt_tos),
                    message=message,
                    peer=session.peer,
                    raw=bytes(content),
                    tls=server.transport is not None and server.transport.get_extra_info("ssl_object") is not None,
                    login=_login(session),
                )
            )
        return "250 Message accepted for delivery"


def _login(session: Session) -> str | None:
    auth_data: Any = session.auth_data
    return auth_data.login.decode() if session.authenticated else None


class SmtpSink:
    """Start with :meth:`start`; read :attr:`received`; switch behaviour with the setters."""

    def __init__(
        self,
        port: int | None = None,
        *,
        tls: Literal["none", "starttls", "implicit"] = "none",
        tls_context: ssl.SSLContext | None = None,
        credentials: Mapping[str, str] | None = None,
        mechanisms: Collection[str] = ("LOGIN", "PLAIN"),
        eight_bit_mime: bool = True,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.behaviour = _Behaviour()
        self._controller: Controller | None = None
        if (tls == "none") != (tls_context is None):
            raise ValueError("a TLS mode needs a server context, and only a TLS mode takes one")
        self._tls = tls
        self._tls_context = tls_context
        self._credentials = dict(credentials or {})
        self._mechanisms = {mechanism.upper() for mechanism in mechanisms}
        self._eight_bit_mime = eight_bit_mime

    @property
    def requires_auth(self) -> bool:
        """Whether MAIL FROM needs a successful AUTH first."""
        return bool(self._credentials)

    def start(self) -> None:
        """Listen on :attr:`port`."""
        options: dict[str, Any] = {"decode_data": not self._eight_bit_mime}  # aiosmtpd's switch for 8BITMIME
        if self._tls == "starttls":
            options.update(tls_context=self._tls_context, require_starttls=True)
        if self._credentials:
            excluded = [m for m in ("LOGIN", "PLAIN") if m not in self._mechanisms]
            options.update(authenticator=self._authenticate, auth_exclude_mechanism=excluded)
            # aiosmtpd counts only STARTTLS as TLS for AUTH: on a TLS-from-the-first-byte port it
            # must be told TLS is not needed to offer AUTH (everything there is TLS already).
            # Either way MAIL FROM is refused before AUTH (handle_MAIL).
            options.update(auth_require_tls=self._tls != "implicit")
        self._controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=self._tls_context if self._tls == "implicit" else None,
            **options,
        )
        self._controller.start()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if user in self._credentials and self._credentials[user] == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def stop(self) -> None:
        """Stop listening (connections are then refused)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def refuse(self, address: str, code: int = 550, text: str = "5.1.1 No such user") -> None:
        """Refuse ``address`` at RCPT TO with ``code``."""
        with self.lock:
            self.behaviour.refuse[address.lower()] = (code, text)

    def accept(self, address: str) -> None:
        """Stop refusing ``address``."""
        with self.lock:
            self.behaviour.refuse.pop(address.lower(), None)

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` deliveries with 451 (a temporary failure)."""
        with self.lock:
            self.behaviour.temporary_failures = count

    def slow_down(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each message's DATA (0 to stop)."""
        with self.lock:
            self.behaviour.data_delay = seconds

    def slow_quit(self, seconds: float) -> None:
        """Wait ``seconds`` before answering QUIT (0 to stop)."""
        with self.lock:
            self.behaviour.quit_delay = seconds

    @property
    def waiting(self) -> int:
        """How many deliveries have reached a slowed-down DATA so far."""
        with self.lock:
            return self.behaviour.waiting

    def peers_of(self, address: str) -> list[Any]:
        """The SMTP session (client address) of each message delivered to ``address``."""
        with self.lock:
            return [r.peer for r in self.received if address.lower() in (a.lower() for a in r.recipients)]

    def received_by(self, address: str) -> list[Received]:
        """Everything delivered to ``address`` so far, as received."""
        with self.lock:
            return [r for r in self.received if address.lower() in (a.lower() for a in r.recipients)]

    def messages_to(self, address: str) -> list[EmailMessage]:
        """Messages delivered to ``address`` so far."""
        with self.lock:
            return [r.message for r in self.received if address.lower() in (a.lower() for a in r.recipients)]
