"""``python -m services.devstack.preflight``: say whether what the stack needs can be reached, and how to fix it.

It checks Postgres and Redis; ``make check`` adds the SMTP server (a session opened as the worker
opens one: TLS and AUTH as configured) and the workers' heartbeats. The exit status is 1 when
something is down. ``make run`` (:mod:`services.devstack`) probes Postgres and Redis with the
same functions before it starts anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable

import asyncpg
from redis.asyncio import Redis

from services.core.settings import Settings, load_settings
from services.jobs.effects.mailer import Mailer
from services.queue.heartbeat import live_workers

_TIMEOUT = 3.0

HOW_TO_START = {
    "postgres": (
        "start it (Debian: `pg_ctlcluster 15 main start`; macOS: `brew services start postgresql`) "
        "or point DATABASE_URL at a running server"
    ),
    "redis": (
        "start it (`redis-server --daemonize yes`; macOS: `brew services start redis`) "
        "or point REDIS_URL at a running server"
    ),
    "smtp": (
        "start one (`make run` starts a catcher) or point SMTP_HOST/SMTP_PORT at a server "
        "(and SMTP_TLS, SMTP_CA_FILE, SMTP_USERNAME/SMTP_PASSWORD at how it is run)"
    ),
    "workers": "start a worker: `python -m services.jobs` (or `make run`)",
}


async def postgres_answers(dsn: str) -> None:
    """Return when the Postgres server of ``dsn`` lets its role in; raise why not."""
    # The server, not the database: `make migrate` creates the database when it is missing.
    conn = await asyncpg.connect(dsn, database="postgres", timeout=_TIMEOUT)
    await conn.close()


async def redis_answers(url: str) -> None:
    """Return when the Redis of ``url`` answers PING; raise why not."""
    redis = Redis.from_url(url, socket_connect_timeout=_TIMEOUT, socket_timeout=_TIMEOUT)
    try:
        await redis.ping()
    finally:
        await redis.aclose()


async def _postgres(settings: Settings) -> None:
    await postgres_answers(settings.database_dsn)


async def _redis(settings: Settings) -> None:
    await redis_answers(str(settings.redis_url))


async def _smtp(settings: Settings) -> None:
    # A session as the worker opens one: TLS (certificate verified) and AUTH as configured.
    await Mailer.from_settings(settings).verify()


async def _workers(settings: Settings) -> None:
    redis = Redis.from_url(str(settings.redis_url), socket_connect_timeout=_TIMEOUT)
    try:
        if not await live_workers(redis, stale_after_seconds=settings.worker_stale_after_seconds):
            raise RuntimeError("no worker heartbeat")
    finally:
        await redis.aclose()


async def _check(name: str, target: str, probe: Awaitable[None]) -> bool:
    try:
        async with asyncio.timeout(_TIMEOUT + 1):
            await probe
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        sys.stderr.write(f"  {name:<8} DOWN at {target}: {reason}\n           -> {HOW_TO_START[name]}\n")
        return False
    print(f"  {name:<8} ok   at {target}")
    return True


async def preflight(settings: Settings, *, smtp: bool, workers: bool) -> bool:
    """Check each dependency in turn; True when all are up."""
    pg_target = f"{settings.database_url.hosts()[0].get('host')}:{settings.database_url.hosts()[0].get('port')}"
    redis_target = f"{settings.redis_url.host}:{settings.redis_url.port}"
    results = [
        await _check("postgres", pg_target, _postgres(settings)),
        await _check("redis", redis_target, _redis(settings)),
    ]
    if smtp:
        results.append(await _check("smtp", f"{settings.smtp_host}:{settings.smtp_port}", _smtp(settings)))
    if workers:
        results.append(await _check("workers", redis_target, _workers(settings)))
    return all(results)


def main() -> None:
    """Entry point of ``python -m services.devstack.preflight`` (Postgres and Redis) and ``make check`` (everything)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", action="store_true", help="also check SMTP and worker heartbeats")
    args = parser.parse_args()
    settings = load_settings()
    if not asyncio.run(preflight(settings, smtp=args.workers, workers=args.workers)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
