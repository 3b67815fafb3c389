"""Baseline A, the seed: the FastAPI Background Tasks tutorial, as written there.

``python -m bench.baselines.seed_app`` serves it like every system of the bench: one uvicorn
process, uvloop, httptools, no access log. ``LOG_FILE`` and ``PORT`` come from the environment.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import BackgroundTasks, FastAPI

LOG_FILE = os.environ.get("LOG_FILE", "log.txt")

app = FastAPI()


def write_log(message: str) -> None:
    with open(LOG_FILE, mode="a") as log:
        log.write(message + "\n")


@app.post("/process")
async def process(background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(write_log, "Process started")
    return {"message": "Processing started"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    """Serve the app on 127.0.0.1:$PORT."""
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop", http="httptools", access_log=False)


if __name__ == "__main__":
    main()
