"""Baseline B's worker: plain ARQ doing the same effects as our jobs, at ARQ's defaults.

Run it as ARQ's users do: ``arq bench.baselines.arq_worker.WorkerSettings`` (the bench runs
``python -m arq ...``). ``ARQ_POLL_DELAY`` sets ``poll_delay`` (ARQ's default, 0.5 s, when unset).
The effects: ``write_log`` appends a line to ``LOG_FILE``, ``send_email`` sends through
``SMTP_HOST``:``SMTP_PORT`` with aiosmtplib, ``update_user`` upserts the user's row in
``DATABASE_URL`` (when set). A job given ``accepted_at`` appends its pickup latency to ``PICKUP_FILE``.
"""

from __future__ import annotations

import os
import time
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import asyncpg
from arq.connections import RedisSettings

LOG_FILE = os.environ.get("LOG_FILE", "log.txt")
PICKUP_FILE = os.environ.get("PICKUP_FILE", "pickup.txt")


async def write_log(ctx: dict[str, Any], message: str, accepted_at: float | None = None) -> None:
    started = time.time()
    if accepted_at is not None:
        with open(PICKUP_FILE, mode="a") as pickup:  # noqa: ASYNC230 (as ARQ's users write it)
            pickup.write(f"{(started - accepted_at) * 1000:.3f}\n")
    with open(LOG_FILE, mode="a") as log:  # noqa: ASYNC230 (as ARQ's users write it)
        log.write(message + "\n")


async def send_email(ctx: dict[str, Any], to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "Afterword <noreply@afterword.localhost>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await aiosmtplib.send(message, hostname=os.environ["SMTP_HOST"], port=int(os.environ["SMTP_PORT"]))


async def update_user(ctx: dict[str, Any], email: str, name: str) -> None:
    await ctx["db"].execute(
        "INSERT INTO users (email, name) VALUES ($1, $2) "
        "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, updated_at = now()",
        email.lower(),
        name,
    )


async def startup(ctx: dict[str, Any]) -> None:
    if os.environ.get("DATABASE_URL"):
        ctx["db"] = await asyncpg.create_pool(os.environ["DATABASE_URL"])


async def shutdown(ctx: dict[str, Any]) -> None:
    if "db" in ctx:
        await ctx["db"].close()


class WorkerSettings:
    functions = [write_log, send_email, update_user]  # noqa: RUF012 (ARQ's documented form)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    poll_delay = float(os.environ.get("ARQ_POLL_DELAY", "0.5"))
