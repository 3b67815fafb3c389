"""A user's app that queues Afterword jobs: a signup endpoint that queues a welcome email.

The app gets its Afterword client from a factory, as an app would take any client it is given
(``create_app(lambda: AsyncClient(url, api_key=key))`` in production): its tests hand it
``afterword_jobs.async_client`` (``tests/unit/test_in_process_afterword.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypedDict

from afterword_client import AsyncClient, SendEmail
from fastapi import FastAPI, Request
from pydantic import BaseModel, EmailStr


class Signup(BaseModel):
    """Someone signing up."""

    email: EmailStr
    name: str


class State(TypedDict):
    """What the app's lifespan opens."""

    afterword: AsyncClient


def welcome_email(signup: Signup) -> SendEmail:
    """The email a signup queues."""
    return SendEmail(
        to=signup.email,
        subject=f"Welcome, {signup.name}",
        body=f"Hello {signup.name}, thanks for signing up.",
        mark_welcome_sent=True,
    )


def create_app(afterword: Callable[[], AsyncClient]) -> FastAPI:
    """The app, its Afterword client made by ``afterword`` when it starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with afterword() as client:
            yield {"afterword": client}

    app = FastAPI(lifespan=lifespan)

    @app.post("/signup", status_code=201)
    async def signup(signup: Signup, request: Request) -> dict[str, str]:
        client: AsyncClient = request.state.afterword
        accepted = await client.enqueue(welcome_email(signup), idempotency_key=f"welcome:{signup.email}")
        return {"email": signup.email, "welcome_job": accepted.id}

    return app
