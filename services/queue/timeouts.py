"""Timeouts on every Redis and Postgres call of the worker, derived from the lease.

A worker cut off from Redis or Postgres must not wait on a call until the network returns: while
it waits it cannot tell that it lost a job's lease, and a job whose end it cannot write holds its
slot. Every call therefore gives up after :func:`call_timeout`, a third of ``LEASE_SECONDS`` (the
renewal period: a renewal that gets no answer has failed before the next one is due):

- Redis: the socket timeout of the worker's connections, and of their connecting
  (:func:`create_redis`); the wake-up subscription reads with it and pings a quiet connection;
- Postgres: asyncpg's ``command_timeout`` for every statement and ``timeout`` for connecting
  (``services.jobs.setup``).

A call that times out fails as a transient error (``services.jobs.errors``): the lease keeper
stops counting on the lease, a job's end is written again while the lease holds, the main loop
gives up and the worker starts again once Redis answers (``services.jobs.__main__``).
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis, RedisSettings

CALL_SHARE = 1 / 3
"""Of a lease, how long one call to Redis or Postgres may take."""


def call_timeout(lease_seconds: float) -> float:
    """Seconds after which one Redis or Postgres call of the worker gives up."""
    return lease_seconds * CALL_SHARE


async def create_redis(settings: RedisSettings, *, call_seconds: float, **options: Any) -> ArqRedis:
    """ARQ's pool (``arq.connections.create_pool``, for one server) whose calls give up after ``call_seconds``.

    ``options`` are the ArqRedis attributes ARQ's ``create_pool`` sets (``job_serializer``,
    ``job_deserializer``, ``default_queue_name``, ``expires_extra_ms``). Connection errors are
    raised at once: the entry point starts the worker again (``services.jobs.__main__``).
    """
    if settings.sentinel:
        raise ValueError("the worker's Redis timeouts need one server, not Sentinel")
    pool = ArqRedis(
        host=settings.host,
        port=settings.port,
        unix_socket_path=settings.unix_socket_path,
        db=settings.database,
        username=settings.username,
        password=settings.password,
        socket_connect_timeout=call_seconds,
        socket_timeout=call_seconds,
        ssl=settings.ssl,
        ssl_keyfile=settings.ssl_keyfile,
        ssl_certfile=settings.ssl_certfile,
        ssl_cert_reqs=settings.ssl_cert_reqs,
        ssl_ca_certs=settings.ssl_ca_certs,
        ssl_ca_data=settings.ssl_ca_data,
        ssl_check_hostname=settings.ssl_check_hostname,
        retry=settings.retry,
        retry_on_timeout=settings.retry_on_timeout,
        retry_on_error=settings.retry_on_error,
        max_connections=settings.max_connections,
        encoding="utf8",
    )
    for name, value in options.items():
        setattr(pool, name, value)
    try:
        await pool.ping()
    except BaseException:
        await pool.aclose(close_connection_pool=True)
        raise
    return pool
