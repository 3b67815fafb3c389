# syntax=docker/dockerfile:1
# One image for both services; the command picks one:
#   python -m services.gateway  (default)   python -m services.jobs   python -m services.ledger.migrate
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: resolve the locked dependencies into /app/.venv --------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
RUN pip install uv==0.13.9
WORKDIR /app
# Dependencies first, so editing the code does not reinstall them. The project itself is not a
# package ([tool.uv] package = false): its code runs from /app. The Python client's pyproject.toml
# comes too: uv checks the lock against it (a dev dependency, so nothing of it is installed).
COPY pyproject.toml uv.lock ./
COPY clients/python/pyproject.toml clients/python/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

# --- runtime: the virtualenv and the code, without uv or pip caches --------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    WORKER_METRICS_HOST=0.0.0.0 \
    LOG_FILE=/var/lib/afterword/afterword.log \
    TEMP_DIR=/var/lib/afterword/tmp \
    REPORTS_DIR=/var/lib/afterword/reports
# A fixed non-root user. /var/lib/afterword is created here with its owner so that a new named
# volume mounted there starts out writable by that user.
RUN groupadd --system --gid 10001 afterword \
    && useradd --system --uid 10001 --gid afterword --home-dir /app --no-create-home afterword \
    && mkdir -p /var/lib/afterword/tmp /var/lib/afterword/reports \
    && chown -R afterword:afterword /var/lib/afterword
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY services/ services/
COPY migrations/ migrations/
USER afterword
# 8000: the gateway; 9101: a jobs worker's metrics (WORKER_METRICS_PORT)
EXPOSE 8000 9101
CMD ["python", "-m", "services.gateway"]
