"""Planting hostile values in a stack's Redis, and removing them after the test."""

from __future__ import annotations

from redis.asyncio import Redis


class PlantingRedis(Redis):
    """A client on the stack's Redis that remembers the keys a test planted (see :func:`plant`)."""

    planted: list[str | bytes]


def plant(redis: PlantingRedis, *keys: str | bytes) -> None:
    """Delete ``keys`` when the test ends."""
    redis.planted.extend(keys)
