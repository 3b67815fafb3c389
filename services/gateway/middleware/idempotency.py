"""``Idempotency-Key`` on POST requests, with Stripe's semantics, as a pure ASGI middleware.

A client that sends ``Idempotency-Key: <1 to 255 printable ASCII characters>`` on a POST can send
the same request again (after a timeout, a dropped connection, a gateway that died) without the
work being done twice:

* while the first request runs, the gateway holds the key (a Postgres advisory lock on a session
  of its own, ``services.gateway.middleware.idempotency_locks``); the same key meanwhile gets 409;
* the route's jobs are not written when it accepts them: they wait until the route has answered,
  then the jobs and the key's row, holding that answer, are committed in one statement
  (``services.gateway.intake``), and only then is the answer sent. A 2xx or 4xx answer is kept
  this way; a 5xx one is not, and its jobs are dropped, so that a retry runs again;
* the same key with the same request (method, path and body, hashed with SHA-256) gets the
  stored response again, marked ``Idempotent-Replayed: true``, and nothing runs;
* the same key with another request gets 422;
* a key is kept 24 hours (``services.ledger.idempotency``).

So a gateway killed mid-request leaves either nothing (the retry runs afresh, at once: Postgres
dropped the lock with the dead gateway's session) or the jobs with their stored answer (the
retry gets it). Keys belong to the API key that used them: the same key under two API keys is
two keys. The table stores a SHA-256 of the API key, never the key.

Other methods and requests without the header pass through untouched. So does a request without
a valid API key when keys are configured (the app answers 401): an unauthenticated client can
neither hold a key nor read a stored response. If Postgres cannot be reached the answer is 503
and nothing runs (or nothing is kept, when it goes away while the request runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.failures import POSTGRES_FAILED
from services.core.settings import Settings
from services.gateway import auth
from services.gateway.errors import ServiceUnavailable
from services.gateway.intake import Intake
from services.gateway.middleware.idempotency_locks import KeyLocks, lock_id
from services.ledger import NewJob
from services.ledger import idempotency as idempotency_keys
from services.ledger.idempotency import KeyRecord, Stored

log = logging.getLogger("afterword.gateway.idempotency")

HEADER = "Idempotency-Key"
_HEADER_KEY = HEADER.lower().encode("latin-1")  # as ASGI gives header names
NO_API_KEY_SCOPE = ""
"""The scope of every key when the gateway runs without API keys."""

_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")


@dataclass
class Response:
    """A response as the app sent it (or as it is answered again)."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    replayed: bool = False


class HeldJobs:
    """The jobs a request with a key accepted, held until its answer is known (a ``JobSink``)."""

    def __init__(self) -> None:
        self.jobs: list[NewJob] = []

    async def submit(self, jobs: Sequence[NewJob]) -> None:
        """Keep ``jobs``; the middleware commits them with the key's answer."""
        self.jobs.extend(jobs)


def fingerprint(scope: Scope, body: bytes) -> str:
    """SHA-256 of the request's method, path (with its query string) and body."""
    digest = hashlib.sha256()
    path = scope.get("raw_path") or scope["path"].encode()
    for part in (scope["method"].encode(), path, scope.get("query_string", b""), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def key_scope(api_key: str | None) -> str:
    """The scope of the keys sent with ``api_key``: its SHA-256 (hex), or :data:`NO_API_KEY_SCOPE`."""
    return NO_API_KEY_SCOPE if api_key is None else hashlib.sha256(api_key.encode()).hexdigest()


class IdempotencyMiddleware:
    """Replay the stored response of a POST whose ``Idempotency-Key`` was seen before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not any(key == _HEADER_KEY for key, _ in scope["headers"]):  # most requests: no key, no parsing
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        values = headers.getlist(HEADER)
        if len(values) > 1 or not _VALID_KEY.fullmatch(values[0]):
            detail = f"the {HEADER} header must be one value of 1 to 255 printable ASCII characters"
            await _send(send, _answer(400, detail))
            return
        settings: Settings = scope["state"]["settings"]
        api_key = None
        if settings.api_keys:
            presented = auth.presented_key(headers, settings.api_keys)
            if presented is None:
                await self.app(scope, receive, send)  # the app answers 401; nothing is held
                return
            api_key = presented.get_secret_value()
        body = await _read_body(receive)
        if body is None:
            return  # the client left before it sent its body
        key = values[0]
        request = _KeyedRequest(
            scope=scope,
            receive=receive,
            body=body,
            key=key,
            key_scope=key_scope(api_key),
            fingerprint=fingerprint(scope, body),
        )
        locks: KeyLocks = scope["state"]["idempotency_locks"]
        lock = lock_id(request.key_scope, key)
        try:
            held = await locks.acquire(lock)
        except POSTGRES_FAILED as exc:
            log.warning("idempotency keys unavailable, refusing the request: %s", type(exc).__name__)
            await _send(send, _unavailable())
            return
        if not held:
            detail = f"a request with this {HEADER} is still being processed; retry it later"
            await _send(send, _answer(409, detail, retry_after=1))
            return
        try:
            response = await self._run(request)
        finally:
            # Given back before the answer goes out: a retry sent as soon as it arrives finds the key free.
            await locks.release(lock)
        if response.status is not None:
            await _send(send, response)

    async def _run(self, request: _KeyedRequest) -> Response:
        """The answer to a request whose key this gateway holds: stored, refused, or run and recorded."""
        state = request.scope["state"]
        db: asyncpg.Pool = state["db"]
        try:
            stored = await idempotency_keys.look_up(db, scope=request.key_scope, key=request.key)
        except POSTGRES_FAILED as exc:
            log.warning("idempotency keys unavailable, refusing the request: %s", type(exc).__name__)
            return _unavailable()
        if stored is not None:
            return _replay(stored, request.fingerprint)
        held = HeldJobs()
        response = await request.run(self.app, {**state, "intake": held})
        if response.status is None or response.status >= 500:
            return response  # nothing is kept, and the jobs it accepted are dropped: a retry runs again
        intake: Intake = state["intake"]
        record = KeyRecord(
            scope=request.key_scope,
            key=request.key,
            fingerprint=request.fingerprint,
            status=response.status,
            headers=response.headers,
            body=bytes(response.body),
        )
        try:
            recorded = await intake.record(held.jobs, key=record)
        except ServiceUnavailable:
            return _unavailable()  # nothing was written: the route's answer is not sent
        if recorded:
            return response
        # Another request recorded the key first (it held the key while this gateway's lock
        # session was lost): its answer stands, and nothing of this one was written.
        try:
            stored = await idempotency_keys.look_up(db, scope=request.key_scope, key=request.key)
        except POSTGRES_FAILED as exc:
            log.warning("idempotency keys unavailable after a conflict: %s", type(exc).__name__)
            return _unavailable()
        if stored is None:
            return _answer(409, f"a request with this {HEADER} is still being processed; retry it later", retry_after=1)
        return _replay(stored, request.fingerprint)


@dataclass(frozen=True)
class _KeyedRequest:
    """A POST with a valid key: what the middleware read of it."""

    scope: Scope
    receive: Receive
    body: bytes
    key: str
    key_scope: str
    fingerprint: str

    async def run(self, app: ASGIApp, state: dict[str, object]) -> Response:
        """Run ``app`` on the request with ``state``; return its response, captured (nothing is sent)."""
        response = Response()
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            return await self.receive()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                response.body += message.get("body", b"")

        await app({**self.scope, "state": state}, replay_body, capture)
        return response


def _replay(stored: Stored, fingerprint: str) -> Response:
    if stored.fingerprint != fingerprint:
        detail = (
            f"this {HEADER} was already used for a different request (method, path or body); "
            "use a new key for a new request"
        )
        return _answer(422, detail)
    return Response(status=stored.status, headers=list(stored.headers), body=bytearray(stored.body), replayed=True)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client disconnected first."""
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(chunks)


async def _send(send: Send, response: Response) -> None:
    headers = list(response.headers)
    if response.replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": bytes(response.body)})


def _answer(status: int, detail: str, *, retry_after: int | None = None) -> Response:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return Response(status=status, headers=headers, body=bytearray(body))


def _unavailable() -> Response:
    return _answer(503, f"the {HEADER} store (Postgres) is unavailable; nothing was done", retry_after=5)
