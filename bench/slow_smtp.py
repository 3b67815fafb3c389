"""An SMTP sink that answers each message after a delay, as a real mail server takes its time.

The bench's own sink (``aiosmtpd.handlers.Sink``) accepts a message at once, so that a drain of
the signup mix measures the services and not the mail server. A real relay answers in
milliseconds at best; while a job waits for it, its worker's CPU is free for other jobs, or for
another worker. The bench runs this sink for one extra measure, two workers against one draining
the signup mix (``bench.phases.WAITING_DRAINS``):
``python -m aiosmtpd -n -c bench.slow_smtp.SlowSink`` (aiosmtpd builds the handler with no
arguments, so the delay is :data:`DELAY_SECONDS`).
"""

from __future__ import annotations

import asyncio
from typing import Any

DELAY_SECONDS = 0.005
"""How long the server takes to answer a message's DATA."""


class SlowSink:
    """aiosmtpd handler: drop each message, answering ``250`` after :data:`DELAY_SECONDS`."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(DELAY_SECONDS)
        return "250 OK"
