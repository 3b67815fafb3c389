"""``Idempotency-Key`` on POST requests, with Stripe's semantics, as a pure ASGI middleware.

A client that sends ``Idempotency-Key: <1 to 255 printable ASCII characters>`` on a POST can send
the same request again (after a timeout, a dropped connection) without the work being done twice:

* the first request claims the key in Postgres (table ``idempotency_keys``) and runs; a 2xx or
  4xx response is stored, a 5xx one releases the key so that a retry runs again;
* the same key with the same request (method, path and body, hashed with SHA-256) gets the
  stored response again, marked ``Idempotent-Replayed: true``, and nothing runs;
* the same key with another request gets 422; while the first request still runs, 409;
* a key is kept 24 hours; a claim still ``processing`` after 60 seconds (a gateway that died
  mid-request) may be taken over by the same request.

Other methods and requests without the header pass through untouched. So does a request without
a valid API key when keys are configured (the app answers 401): an unauthenticated client can
neither claim a key nor read a stored response. If Postgres cannot be reached the answer is 503
and nothing runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import auth
from services.gateway.errors import DATABASE_ERRORS
from services.settings import Settings

log = logging.getLogger("afterword.gateway.idempotency")

HEADER = "Idempotency-Key"
_HEADER_KEY = HEADER.lower().encode("latin-1")  # as ASGI gives header names
KEEP_SECONDS = 24 * 3600.0
"""How long a key and its response are kept."""
CLAIM_TIMEOUT_SECONDS = 60.0
"""A claim older than this that never finished may be taken over by the same request."""

_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_PURGE_EVERY_SECONDS = 60.0
_STORE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, asyncpg.PostgresError)

# A new key is inserted. A key whose row expired is taken over by any request; a key still
# 'processing' past the claim timeout only by the same request (another one gets 422).
_CLAIM = """
INSERT INTO idempotency_keys AS k (key, fingerprint, status, claim_token)
VALUES ($1, $2, 'processing', $3)
ON CONFLICT (key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, status = 'processing', claim_token = EXCLUDED.claim_token,
    response_status = NULL, response_headers = NULL, response_body = NULL, created_at = clock_timestamp()
WHERE k.created_at < clock_timestamp() - make_interval(secs => $4)
   OR (k.status = 'processing' AND k.fingerprint = EXCLUDED.fingerprint
       AND k.created_at < clock_timestamp() - make_interval(secs => $5))
RETURNING claim_token
"""
_LOOK_UP = """
SELECT fingerprint, status, response_status, response_headers, response_body
FROM idempotency_keys WHERE key = $1 AND created_at >= clock_timestamp() - make_interval(secs => $2)
"""
_STORE = """
UPDATE idempotency_keys SET status = 'done', response_status = $3, response_headers = $4, response_body = $5
WHERE key = $1 AND claim_token = $2
"""
_RELEASE = "DELETE FROM idempotency_keys WHERE key = $1 AND claim_token = $2 AND status = 'processing'"
_PURGE = """
DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys WHERE created_at < clock_timestamp() - make_interval(secs => $1) LIMIT 1000
)
"""


@dataclass
class StoredResponse:
    """A response as the app sent it."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Claimed:
    """This request holds the key; ``token`` proves it when storing or releasing."""

    token: str


class Busy:
    """The key's first request is still running."""


class Mismatch:
    """The key was used for another request."""


Claim = Claimed | StoredResponse | Busy | Mismatch


def fingerprint(scope: Scope, body: bytes) -> str:
    """SHA-256 of the request's method, path (with its query string) and body."""
    digest = hashlib.sha256()
    path = scope.get("raw_path") or scope["path"].encode()
    for part in (scope["method"].encode(), path, scope.get("query_string", b""), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def claim(db: asyncpg.Pool, *, key: str, fingerprint: str) -> Claim:
    """Claim ``key`` for a request, or say why not (its stored response, busy, another request)."""
    token = uuid.uuid4().hex
    for _ in range(3):
        if await db.fetchval(_CLAIM, key, fingerprint, token, KEEP_SECONDS, CLAIM_TIMEOUT_SECONDS) is not None:
            return Claimed(token)
        row = await db.fetchrow(_LOOK_UP, key, KEEP_SECONDS)
        if row is None:
            continue  # released or expired between the two statements: try to claim it again
        if row["fingerprint"] != fingerprint:
            return Mismatch()
        if row["status"] == "processing":
            return Busy()
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in json.loads(row["response_headers"])
        ]
        return StoredResponse(status=row["response_status"], headers=headers, body=bytearray(row["response_body"]))
    return Busy()


async def store(db: asyncpg.Pool, *, key: str, token: str, response: StoredResponse) -> None:
    """Keep the response of the request that holds ``key``."""
    headers = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in response.headers]
    await db.execute(_STORE, key, token, response.status, json.dumps(headers), bytes(response.body))


async def release(db: asyncpg.Pool, *, key: str, token: str) -> None:
    """Free ``key`` (its request failed), so that a retry runs again."""
    await db.execute(_RELEASE, key, token)


async def purge(db: asyncpg.Pool) -> None:
    """Delete up to 1000 expired keys."""
    await db.execute(_PURGE, KEEP_SECONDS)


class IdempotencyMiddleware:
    """Replay the stored response of a POST whose ``Idempotency-Key`` was seen before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._next_purge = 0.0

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
            await _answer(send, 400, detail)
            return
        settings: Settings = scope["state"]["settings"]
        if settings.api_keys and not auth.authorized(headers, settings.api_keys):
            await self.app(scope, receive, send)  # the app answers 401; nothing is claimed
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before it sent its body
        db: asyncpg.Pool = scope["state"]["db"]
        key = values[0]
        try:
            outcome = await claim(db, key=key, fingerprint=fingerprint(scope, body))
        except _STORE_ERRORS as exc:
            log.warning("idempotency keys unavailable, refusing the request: %s", type(exc).__name__)
            detail = f"the {HEADER} store (Postgres) is unavailable; nothing was done"
            await _answer(send, 503, detail, retry_after=5)
            return
        if isinstance(outcome, StoredResponse):
            await _send(send, outcome, replayed=True)
        elif isinstance(outcome, Busy):
            detail = f"a request with this {HEADER} is still being processed; retry it later"
            await _answer(send, 409, detail, retry_after=1)
        elif isinstance(outcome, Mismatch):
            detail = (
                f"this {HEADER} was already used for a different request (method, path or body); "
                "use a new key for a new request"
            )
            await _answer(send, 422, detail)
        else:
            await self._run(scope, receive, send, body=body, db=db, key=key, token=outcome.token)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, *, body: bytes, db: asyncpg.Pool, key: str, token: str
    ) -> None:
        """Run the request holding the key; keep its response (or free the key), then send it."""
        response = StoredResponse()
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                response.body += message.get("body", b"")

        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            with contextlib.suppress(Exception):
                await release(db, key=key, token=token)
            raise
        try:
            if response.status is None or response.status >= 500:
                await release(db, key=key, token=token)
            else:
                await store(db, key=key, token=token, response=response)
        except _STORE_ERRORS as exc:
            # The work is done: answer with its response anyway. The claim expires on its own.
            log.warning("could not record an idempotent response: %s", type(exc).__name__)
        if response.status is not None:
            await _send(send, response, replayed=False)
        await self._purge_now_and_then(db)

    async def _purge_now_and_then(self, db: asyncpg.Pool) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_SECONDS
        try:
            await purge(db)
        except _STORE_ERRORS as exc:
            log.warning("could not purge expired idempotency keys: %s", type(exc).__name__)


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


async def _send(send: Send, response: StoredResponse, *, replayed: bool) -> None:
    headers = list(response.headers)
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": bytes(response.body)})


async def _answer(send: Send, status: int, detail: str, *, retry_after: int | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
