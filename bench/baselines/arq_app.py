"""Baseline B, plain ARQ: a FastAPI app that enqueues the job on an ARQ pool opened in its lifespan.

Written as ARQ's users write it: ``create_pool`` at start-up, ``enqueue_job`` in the route, ARQ's
defaults (pickle). ``/process/timed`` passes the acceptance time to the job, so the bench can
measure the pickup latency; ``/signup`` queues the same three jobs as our ``/signup``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from arq import create_pool
from arq.connections import RedisSettings
from fastapi import FastAPI, Request
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    redis = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
    yield {"redis": redis}
    await redis.aclose()


app = FastAPI(lifespan=lifespan)


class Signup(BaseModel):
    email: str
    name: str


@app.post("/process")
async def process(request: Request) -> dict[str, Any]:
    job = await request.state.redis.enqueue_job("write_log", "Process started")
    return {"message": "Processing started", "job_id": job.job_id}


@app.post("/process/timed")
async def process_timed(request: Request) -> dict[str, Any]:
    job = await request.state.redis.enqueue_job("write_log", "Process started", accepted_at=time.time())
    return {"message": "Processing started", "job_id": job.job_id}


@app.post("/signup")
async def signup(signup: Signup, request: Request) -> dict[str, Any]:
    redis = request.state.redis
    body = f"Hello {signup.name},\n\nthanks for signing up. Your account is ready.\n\n-- Afterword\n"
    jobs = [
        await redis.enqueue_job("send_email", signup.email, f"Welcome to Afterword, {signup.name}", body),
        await redis.enqueue_job("update_user", signup.email, signup.name),
        await redis.enqueue_job("write_log", f"signup: {signup.email}"),
    ]
    return {"message": "Signup complete", "job_ids": [job.job_id for job in jobs]}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    """Serve the app on 127.0.0.1:$PORT."""
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop", http="httptools", access_log=False)


if __name__ == "__main__":
    main()
