"""Afterword in the test's process: the real gateway and the real job implementations, no Redis.

:class:`InProcessAfterword` runs the gateway (``services.testing.gateway``) and a worker
(``services.testing.worker``) on an event loop of their own, in a thread, so that any test can
use it: a plain ``def`` test driving an app through Starlette's ``TestClient`` (which runs the app
on a loop of its own), an ``async def`` test, a sync endpoint calling the blocking
:class:`~afterword_client.Client`. Its :attr:`transport` and :attr:`async_transport` carry the
client's requests to that loop and back.

A test's code queues jobs through the client as in production; the test then asserts what was
queued (:attr:`InProcessAfterword.enqueued`, :meth:`InProcessAfterword.of`), runs the jobs
(:meth:`InProcessAfterword.run_all`) and asserts their effects: the emails in
:attr:`InProcessAfterword.mail`, the lines of ``settings.log_file``, the rows of the ``users``
table of ``settings.database_url``, each job's record (:meth:`InProcessAfterword.job`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from afterword_client import AsyncClient, Client, RetryPolicy
from anyio.from_thread import BlockingPortal, start_blocking_portal

from services import ledger
from services.contract import JobName, JobStatus
from services.core.settings import Settings
from services.testing.gateway import InProcessGateway, QueuedJob
from services.testing.mail import MailSink
from services.testing.worker import InProcessWorker, JobFailed, Run

T = TypeVar("T")

BASE_URL = "http://afterword.test"
"""The gateway's URL for the clients of the in-process Afterword (no request leaves the process)."""

NO_REDIS = "redis://127.0.0.1:1/0"
"""``REDIS_URL`` of the in-process Afterword: a closed port, so that nothing reaches a real Redis."""


def in_process_settings(*, database_url: str, mail: MailSink, directory: Path, **overrides: Any) -> Settings:
    """The settings of an in-process Afterword: its database, the mail sink, files under ``directory``.

    No API keys (any key, or none, is accepted), and no Redis; ``overrides`` (settings' field
    names: ``api_keys``, ``job_max_tries``, ...) win. The ``.env`` file is not read.
    """
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "redis_url": NO_REDIS,
        "smtp_host": mail.host,
        "smtp_port": mail.port,
        "smtp_tls": "none",
        "smtp_username": None,
        "smtp_password": None,
        "log_file": directory / "afterword.log",
        "temp_dir": directory / "tmp",
        "api_keys": [],
        "api_read_keys": [],
        **overrides,
    }
    return Settings(_env_file=None, **values)


def run_in_thread(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await function(*args)`` on an event loop of its own, in a thread of its own (from sync code)."""
    with start_blocking_portal() as portal:
        return portal.call(function, *args)


class InProcessAfterword:
    """The gateway and a worker of one database, in this process (:meth:`start` one)."""

    def __init__(
        self,
        *,
        settings: Settings,
        mail: MailSink,
        portal: BlockingPortal,
        gateway: InProcessGateway,
        worker: InProcessWorker,
    ) -> None:
        self.settings = settings
        self.mail = mail
        """The SMTP server the jobs' emails go to: ``mail.messages_to(address)``, ``mail.refuse(address)``."""
        self.runs: list[Run] = []
        """Every try the worker made, oldest first (by :meth:`run_all` and in the inline mode)."""
        self._portal = portal
        self._gateway = gateway
        self._worker = worker
        self._loop_thread = portal.call(threading.get_ident)
        self._inline = False
        self.transport: httpx.BaseTransport = _Transport(self)
        """For an ``httpx.Client`` of your own: every request goes to the in-process gateway."""
        self.async_transport: httpx.AsyncBaseTransport = _AsyncTransport(self)
        """For an ``httpx.AsyncClient`` of your own: every request goes to the in-process gateway."""

    @classmethod
    @contextmanager
    def start(cls, settings: Settings, *, mail: MailSink) -> Iterator[InProcessAfterword]:
        """Open the gateway and the worker of ``settings`` (on their own loop), and close them after."""
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(_opened(settings)) as (gateway, worker),
        ):
            yield cls(settings=settings, mail=mail, portal=portal, gateway=gateway, worker=worker)

    @property
    def base_url(self) -> str:
        """The gateway's URL for a client on :attr:`transport` or :attr:`async_transport`."""
        return BASE_URL

    def client(self, *, api_key: str | None = None, retry: RetryPolicy | None = None) -> Client:
        """A blocking client of the in-process gateway."""
        return Client(BASE_URL, api_key=api_key, retry=retry, http=httpx.Client(transport=self.transport))

    def async_client(self, *, api_key: str | None = None, retry: RetryPolicy | None = None) -> AsyncClient:
        """An asyncio client of the in-process gateway, for any event loop."""
        return AsyncClient(
            BASE_URL, api_key=api_key, retry=retry, http=httpx.AsyncClient(transport=self.async_transport)
        )

    @property
    def enqueued(self) -> list[QueuedJob]:
        """Every job the gateway accepted so far, in order (a replayed answer queued none)."""
        return list(self._gateway.enqueued)

    def of(self, name: JobName | str) -> list[QueuedJob]:
        """The jobs named ``name`` the gateway accepted so far, in order."""
        return [job for job in self._gateway.enqueued if job.name == name]

    @property
    def inline(self) -> bool:
        """When true, each request that queued jobs runs the jobs due (``run_all(due_only=True,
        check=False)``) before it is answered, as Celery's eager mode does. Off by default."""
        return self._inline

    @inline.setter
    def inline(self, on: bool) -> None:
        self._inline = on
        self._gateway.after_accepting = functools.partial(self._run, due_only=True) if on else None

    def run_all(self, *, due_only: bool = False, check: bool = True) -> list[Run]:
        """Run the jobs not yet ended with their implementations, each try in turn, until none is left.

        Deferrals and the waits between tries are skipped, unless ``due_only``: then only the
        jobs due now run (a job left ``retrying`` waits for a later call). Returns this call's
        runs. With ``check``, raises :class:`JobFailed` (an ``AssertionError``) if a job failed.
        """
        return self._checked(self._portal.call(functools.partial(self._run, due_only=due_only)), check=check)

    async def arun_all(self, *, due_only: bool = False, check: bool = True) -> list[Run]:
        """:meth:`run_all`, awaited (from an ``async def`` test: the test's loop is not blocked)."""
        return self._checked(await self._on_loop(functools.partial(self._run, due_only=due_only)), check=check)

    def job(self, job_id: str) -> ledger.JobRecord:
        """The job's record in the ledger (status, tries, result, error, times)."""
        record = self._portal.call(ledger.get_job, self._gateway.db, job_id)
        if record is None:
            raise LookupError(f"no job {job_id} in the ledger")
        return record

    async def _run(self, *, due_only: bool) -> list[Run]:
        runs = await self._worker.run_all(due_only=due_only)
        self.runs.extend(runs)
        return runs

    def _checked(self, runs: Sequence[Run], *, check: bool) -> list[Run]:
        failed = [run for run in runs if run.status is JobStatus.failed]
        if check and failed:
            raise JobFailed(failed, runs)
        return list(runs)

    async def _on_loop(self, function: Callable[[], Awaitable[T]]) -> T:
        """``await function()`` on the in-process Afterword's loop, from any loop."""
        if threading.get_ident() == self._loop_thread:
            return await function()
        return await asyncio.wrap_future(self._portal.start_task_soon(function))


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[tuple[InProcessGateway, InProcessWorker]]:
    async with InProcessGateway.open(settings) as gateway, InProcessWorker.open(settings, db=gateway.db) as worker:
        yield gateway, worker


class _Transport(httpx.BaseTransport):
    def __init__(self, afterword: InProcessAfterword) -> None:
        self._afterword = afterword

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        afterword = self._afterword
        if threading.get_ident() == afterword._loop_thread:
            raise RuntimeError("a blocking client cannot call the in-process gateway from its own loop (a job's code)")
        return afterword._portal.call(afterword._gateway.handle, request)


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, afterword: InProcessAfterword) -> None:
        self._afterword = afterword

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await self._afterword._on_loop(functools.partial(self._afterword._gateway.handle, request))
