"""How an integration test sees a job's effects: the email, the log line, the database row, the report.

Locally the stack's SMTP server is the test's own sink, its log file a temp file, its reports
directory a temp directory and its database a throwaway one. Against a running stack
(``GATEWAY_URL``) the email is read from Mailpit's API (``MAILPIT_URL``), the log from
``LOG_FILE``, the reports from ``REPORTS_DIR`` and the database from ``DATABASE_URL``, each only
when given; an effect that cannot be observed skips the test that needs it.
"""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.support.smtp_sink import SmtpSink


class Observer:
    """Reads the effects of jobs; each source is optional."""

    def __init__(
        self,
        *,
        sink: SmtpSink | None = None,
        mailpit_url: str | None = None,
        log_file: Path | None = None,
        reports_dir: Path | None = None,
        db: asyncpg.Pool | None = None,
        db_dsn: str | None = None,
        redis: Redis | None = None,
        queue_name: str | None = None,
    ) -> None:
        self.sink = sink
        self.mailpit_url = mailpit_url
        self.log_file = log_file
        self.reports_dir = reports_dir
        self._db = db
        self._db_dsn = db_dsn
        self._redis = redis
        self.queue_name = queue_name

    @property
    def db(self) -> asyncpg.Pool:
        """The stack's database; skips the test when it cannot be reached."""
        if self._db is None:
            pytest.skip("the stack's database is not observable (set DATABASE_URL)")
        return self._db

    @property
    def db_dsn(self) -> str:
        """The stack's database's DSN, for connections of a test's own; skips the test when unknown."""
        if not self._db_dsn:
            pytest.skip("the stack's database is not observable (set DATABASE_URL)")
        return self._db_dsn

    @property
    def redis(self) -> Redis:
        """The stack's Redis; skips the test when it cannot be reached."""
        if self._redis is None:
            pytest.skip("the stack's Redis is not observable (set REDIS_URL)")
        return self._redis

    def require_sink(self) -> SmtpSink:
        """The test's own SMTP sink (only when the tests started the stack)."""
        if self.sink is None:
            pytest.skip("needs the tests' own SMTP sink (not available against a running stack)")
        return self.sink

    async def emails_to(self, address: str) -> list[EmailMessage]:
        """Every email delivered to ``address``."""
        if self.sink is not None:
            return self.sink.messages_to(address)
        if self.mailpit_url is None:
            pytest.skip("emails are not observable (set MAILPIT_URL)")
        async with httpx.AsyncClient(base_url=self.mailpit_url, timeout=10) as client:
            found = await client.get("/api/v1/search", params={"query": f"to:{address}"})
            found.raise_for_status()
            messages = []
            for summary in found.json().get("messages", []):
                raw = await client.get(f"/api/v1/message/{summary['ID']}/raw")
                raw.raise_for_status()
                message = message_from_bytes(raw.content, policy=policy.default)
                assert isinstance(message, EmailMessage)
                messages.append(message)
            return messages

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of the log file, parsed; a line that is not JSON fails the test."""
        if self.log_file is None:
            pytest.skip("the log file is not observable (set LOG_FILE)")
        if not self.log_file.exists():
            return []
        lines = self.log_file.read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def reports_of(self, job_id: str) -> dict[str, str]:
        """The text of each report file the job ``job_id`` wrote (``write_report``), by file name, as written."""
        if self.reports_dir is None:
            pytest.skip("the reports directory is not observable (set REPORTS_DIR)")
        if not self.reports_dir.exists():
            return {}
        return {path.name: path.read_bytes().decode("utf-8") for path in self.reports_dir.glob(f"{job_id}-*.csv")}

    def log_records_of(self, job_id: str) -> list[dict[str, Any]]:
        """The log lines written by one job."""
        return [record for record in self.log_records() if record["job_id"] == job_id]

    async def queued_snapshot(self) -> tuple[int, set[bytes]]:
        """The ledger's row count and the ids on the ARQ queue: 'queues nothing' must add to neither.

        Rows are never deleted, so the count only grows; the queue also shrinks as jobs finish, so
        what matters there is that no new id appears. The worker's own cron runs (``cron:...``) are
        left out.
        """
        ledger = await self.db.fetchval("SELECT count(*) FROM jobs")
        ids = await self.redis.zrange(self.queue_name or "afterword:queue", 0, -1)
        return int(ledger), {job_id for job_id in ids if not job_id.startswith(b"cron:")}
