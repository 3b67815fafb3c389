"""Email delivery over SMTP (aiosmtplib), with a Message-ID derived from the job id."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib

from services.jobs.errors import PermanentError, TransientError
from services.settings import Settings


class Mailer:
    """Builds and sends messages through one SMTP server."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout
        domain = parseaddr(sender)[1].rpartition("@")[2]
        self._domain = domain or "afterword.localhost"

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """A mailer for the configured SMTP server."""
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout,
        )

    def __repr__(self) -> str:
        return f"Mailer(host={self._host!r}, port={self._port}, sender={self._sender!r})"

    def message_id(self, job_id: str) -> str:
        """The Message-ID of the email a job sends: the same on every try of that job."""
        return f"<{job_id}@{self._domain}>"

    def build(self, *, job_id: str, to: str, subject: str, body: str) -> EmailMessage:
        """The message a job sends to one recipient."""
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = self.message_id(job_id)
        message.set_content(body)
        return message

    async def send(self, message: EmailMessage) -> None:
        """Deliver ``message``; raise TransientError or PermanentError when the server refuses."""
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                use_tls=False,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise _by_code(min(codes), f"recipient refused: {codes}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, f"SMTP {exc.code}: {exc.message}") from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise PermanentError(f"SMTP server does not support this: {exc}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientError(f"SMTP server {self._host}:{self._port} unreachable: {exc}") from None


def _by_code(code: int, text: str) -> TransientError | PermanentError:
    return TransientError(text) if 400 <= code < 500 else PermanentError(text)
