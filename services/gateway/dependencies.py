"""Dependency aliases that hand the lifespan's resources to route functions."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request

from services.settings import Settings


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def _db(request: Request) -> asyncpg.Pool:
    db: asyncpg.Pool = request.state.db
    return db


def _redis(request: Request) -> ArqRedis:
    redis: ArqRedis = request.state.redis
    return redis


def _request_id(request: Request) -> str | None:
    value = request.headers.get("x-request-id")
    return value[:200] if value and value.isprintable() else None


SettingsDep = Annotated[Settings, Depends(_settings)]
DbDep = Annotated[asyncpg.Pool, Depends(_db)]
RedisDep = Annotated[ArqRedis, Depends(_redis)]
RequestIdDep = Annotated[str | None, Depends(_request_id)]
