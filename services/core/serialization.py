"""The JSON serializer both services hand to ARQ instead of pickle.

A job in Redis is data, never code: whoever can write to Redis cannot make the worker run
anything. Results that hold an exception (ARQ stores the exception of a failed job) are written
as its text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""Keys that are not strings become strings, and dates and dataclasses go to the fallback, as with ``json``."""


def json_bytes(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact JSON, what ``json.dumps`` writes: by orjson, and by ``json`` what orjson
    refuses (an integer beyond 64 bits). What JSON cannot hold goes to ``default``.

    Only a NaN or infinite float differs: orjson writes ``null`` where ``json`` wrote ``NaN``,
    which is not JSON. orjson writes the hot path's JSON (ARQ's job, the access line, the ledger
    row's payload) several times faster than ``json``.
    """
    try:
        return orjson.dumps(value, default=default, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(value, default=default, separators=(",", ":")).encode()


def _fallback(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def serialize(obj: dict[str, Any]) -> bytes:
    """Serialize an ARQ job or result dict to compact JSON bytes (:func:`json_bytes`)."""
    return json_bytes(obj, default=_fallback)


def deserialize(data: bytes) -> dict[str, Any]:
    """Load an ARQ job or result dict; anything that is not a JSON object is refused."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a serialized job must be a JSON object")
    return value
