"""A real SMTP server (aiosmtpd) in the test process that keeps what it receives.

Its behaviour can be switched while it runs: refuse a recipient with a given code, answer the
next deliveries with a temporary error, or stop listening altogether.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

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
                )
            )
        return "250 Message accepted for delivery"


class SmtpSink:
    """Start with :meth:`start`; read :attr:`received`; switch behaviour with the setters."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.behaviour = _Behaviour()
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen on :attr:`port`."""
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()

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
