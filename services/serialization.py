"""The JSON serializer both services hand to ARQ instead of pickle.

A job in Redis is data, never code: whoever can write to Redis cannot make the worker run
anything. Results that hold an exception (ARQ stores the exception of a failed job) are written
as its text.
"""

from __future__ import annotations

import json
from typing import Any


def _fallback(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def serialize(obj: dict[str, Any]) -> bytes:
    """Serialize an ARQ job or result dict to compact JSON bytes."""
    return json.dumps(obj, default=_fallback, separators=(",", ":")).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    """Load an ARQ job or result dict; anything that is not a JSON object is refused."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a serialized job must be a JSON object")
    return value
