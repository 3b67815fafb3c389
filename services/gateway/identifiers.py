"""New ids for jobs and requests: a random uuid4 in hex, as ``uuid.uuid4().hex`` gives it; and the
check that a string has that form (:func:`is_id`), so that the gateway refuses any other job id
before it reaches a query.

Built from the 16 random bytes directly, with the version and variant bits set as RFC 4122 says,
instead of through a ``uuid.UUID`` object: the gateway makes two per accepted request, and the
object costs several times what the random bytes do.
"""

from __future__ import annotations

import os
import re

_ID = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    """A new random id: 32 lowercase hex digits, a valid uuid4."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # variant: RFC 4122
    return raw.hex()


def is_id(value: str) -> bool:
    """True when ``value`` has the form :func:`new_id` gives; no other string names a job."""
    return _ID.fullmatch(value) is not None
