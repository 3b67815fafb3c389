"""Postgres and Redis for ``make run``: the configured servers, or private ones when the defaults do not answer.

A URL the developer set (``DATABASE_URL`` or ``REDIS_URL``, in the environment or in ``.env``)
must answer: when it does not, that is an error naming it, and nothing is started. When the
*default* URL does not answer, a private development server is started for it under ``var/``
(:mod:`.postgres_server`, :mod:`.redis_server`): on the default's port when that port is free,
else on the next free one, and its URL is handed to the services through the environment.
:func:`provided` stops what it started when its block ends, whatever ends it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from services.core.settings import Settings
from services.devstack.postgres_server import PrivatePostgres
from services.devstack.preflight import HOW_TO_START, postgres_answers, redis_answers
from services.devstack.processes import DevServerError, claim, free_port_near, port_is_free
from services.devstack.redis_server import PrivateRedis

Kind = Literal["postgres", "redis"]
_DEFAULT_PORTS: dict[Kind, int] = {"postgres": 5432, "redis": 6379}
_LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}
"""Hosts a private server can serve, and the address it listens on for each."""
_PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class Dependency:
    """Postgres or Redis as ``make run`` needs it: the URL, and where the developer set it (None: the default)."""

    kind: Kind
    setting: str
    url: str
    set_in: str | None = None


class PrivateServer(Protocol):
    """What :func:`provided` needs of :class:`PrivatePostgres` and :class:`PrivateRedis`."""

    kind: str
    directory: Path

    @property
    def pid(self) -> int | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def dependencies(settings: Settings, environ: Mapping[str, str] = os.environ) -> list[Dependency]:
    """Postgres and Redis as ``settings`` configure them, each saying whether the developer set its URL."""

    def set_in(field: str) -> str | None:
        if field not in settings.model_fields_set:
            return None
        exported = any(name.upper() == field.upper() and value for name, value in environ.items())
        return "the environment" if exported else ".env"

    return [
        Dependency("postgres", "DATABASE_URL", settings.database_dsn, set_in("database_url")),
        Dependency("redis", "REDIS_URL", str(settings.redis_url), set_in("redis_url")),
    ]


@contextmanager
def provided(
    needed: Sequence[Dependency], *, var_dir: Path, say: Callable[[str], None] = print
) -> Iterator[dict[str, str]]:
    """Make every dependency answer; yield the URLs of the private servers started, by setting name.

    Raises DevServerError when a URL the developer set does not answer, or when a private server
    cannot be started (binaries missing, a failed start). The private servers are stopped when the
    block ends; their files stay in ``var_dir`` for the next run.
    """
    started: list[PrivateServer] = []
    try:
        urls: dict[str, str] = {}
        for dependency in needed:
            url = _provide(dependency, var_dir=var_dir, started=started, say=say)
            if url is not None:
                urls[dependency.setting] = url
        yield urls
    finally:
        for server in reversed(started):
            if server.pid is not None:
                server.stop()
                say(f"  {server.kind:<8} private server stopped (its files stay in {_shown(server.directory)})")


def _provide(
    dependency: Dependency, *, var_dir: Path, started: list[PrivateServer], say: Callable[[str], None]
) -> str | None:
    """Check one dependency, or start its private server; the private server's URL, None when none is needed."""
    kind = dependency.kind
    parts = urlsplit(dependency.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS[kind]
    target = f"{host}:{port}"
    directory = var_dir / kind
    if dependency.set_in is None:
        leftover = _server_class(kind).stop_leftover(directory)
        if leftover is not None:
            say(f"  {kind:<8} stopped the private server an earlier make run left running (pid {leftover})")
    reason = _why_down(dependency)
    if reason is None:
        say(f"  {kind:<8} ok   at {target}")
        return None
    if dependency.set_in is not None:
        raise DevServerError(
            f"{kind} DOWN at {target}: {reason}\n"
            f"  -> {dependency.setting} is set in {dependency.set_in}, so make run starts no private server: "
            f"{HOW_TO_START[kind]}, or unset {dependency.setting} to have make run start one under var/"
        )
    listen = _LOOPBACK.get(host)
    if listen is None:
        raise DevServerError(
            f"{kind} DOWN at {target}: {reason}\n"
            f"  -> the default {dependency.setting} names another machine, so make run starts no private server: "
            f"{HOW_TO_START[kind]}"
        )
    chosen = port if port_is_free(listen, port) else free_port_near(listen, port)
    server = _server(kind, directory, host=listen, port=chosen, url=dependency.url)
    started.append(server)
    claim(directory)
    server.start()
    url = _with_port(dependency.url, chosen)
    moved = "" if chosen == port else f" on port {chosen} ({port} is taken by a server that did not answer)"
    say(
        f"  {kind:<8} started a private server{moved}: {dependency.setting}={url}, "
        f"files in {_shown(directory)}; it stops with make run"
    )
    return url


def _why_down(dependency: Dependency) -> str | None:
    """Why the server at ``dependency.url`` does not answer, None when it does."""
    probe = postgres_answers if dependency.kind == "postgres" else redis_answers

    async def answers() -> None:
        async with asyncio.timeout(_PROBE_SECONDS):
            await probe(dependency.url)

    try:
        asyncio.run(answers())
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


def _server_class(kind: Kind) -> type[PrivatePostgres] | type[PrivateRedis]:
    return PrivatePostgres if kind == "postgres" else PrivateRedis


def _server(kind: Kind, directory: Path, *, host: str, port: int, url: str) -> PrivateServer:
    parts = urlsplit(url)
    if kind == "postgres":
        return PrivatePostgres(directory, host=host, port=port, role=unquote(parts.username or "postgres"))
    return PrivateRedis(directory, host=host, port=port, password=unquote(parts.password) if parts.password else None)


def _with_port(url: str, port: int) -> str:
    """``url`` with its port replaced by ``port``."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = parts.hostname or "127.0.0.1"
    netloc = f"{userinfo}@" if userinfo else ""
    netloc += f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (``var/postgres``)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


__all__ = ["Dependency", "DevServerError", "dependencies", "provided"]
