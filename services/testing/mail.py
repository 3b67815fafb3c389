"""An SMTP server in the test's process (aiosmtpd) that keeps every message it accepts.

The in-process Afterword points its mailer here, so a test reads the emails its jobs sent as the
server received them. A test can also make the server refuse a recipient (a permanent failure,
5xx) or answer the next deliveries with a temporary one (451), to see a job fail or be retried.
"""

from __future__ import annotations

import socket
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MailSink:
    """Start with :meth:`start`; read :attr:`messages`; :meth:`clear` between tests."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._received: list[tuple[frozenset[str], EmailMessage]] = []
        self._refused: dict[str, tuple[int, str]] = {}
        self._temporary_failures = 0
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen on a free port of ``host`` (:attr:`port`)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((self.host, 0))
            self.port = int(probe.getsockname()[1])
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message accepted so far, oldest first."""
        with self._lock:
            return [message for _, message in self._received]

    def messages_to(self, address: str) -> list[EmailMessage]:
        """The messages accepted for ``address`` (an envelope recipient, compared without case)."""
        wanted = address.lower()
        with self._lock:
            return [message for recipients, message in self._received if wanted in recipients]

    def refuse(self, address: str, *, code: int = 550, text: str = "5.1.1 No such user") -> None:
        """Refuse ``address`` at RCPT TO with ``code``: a 5xx fails a ``send_email`` job at once."""
        with self._lock:
            self._refused[address.lower()] = (code, text)

    def fail_next(self, count: int = 1) -> None:
        """Answer the next ``count`` deliveries with 451: the job is retried, by its retry policy."""
        with self._lock:
            self._temporary_failures = count

    def clear(self) -> None:
        """Forget the messages, the refusals and the failures to come."""
        with self._lock:
            self._received.clear()
            self._refused.clear()
            self._temporary_failures = 0

    def _refusal(self, address: str) -> tuple[int, str] | None:
        with self._lock:
            return self._refused.get(address.lower())

    def _deliver(self, recipients: list[str], content: bytes) -> str:
        with self._lock:
            if self._temporary_failures > 0:
                self._temporary_failures -= 1
                return "451 4.3.0 Try again later"
            message = message_from_bytes(content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            self._received.append((frozenset(address.lower() for address in recipients), message))
        return "250 Message accepted for delivery"


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self._sink._refusal(address)
        if refusal is not None:
            return f"{refusal[0]} {refusal[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content
        return self._sink._deliver(list(envelope.rcpt_tos), bytes(content))
