"""Whether an API key is strong enough for production, and if not, why (never quoting the key).

A key passes when it has at least :data:`MIN_LENGTH` characters, names no known placeholder
(``change-me``, ``your-api-key-here``, ...), does not repeat a shorter string, holds at least
:data:`MIN_DISTINCT` different characters, and is estimated at :data:`MIN_BITS` bits or more.

The estimate is the key's length times the bits of the smallest common alphabet that holds every
character of it: decimal digits (3.3 bits a character), hexadecimal (4), lower- or upper-case
letters and digits (5.2), letters and digits (5.95), base64 (6) or printable ASCII (6.55). That is
what a key drawn at random from that alphabet carries; a key a person made up carries less, which
the other checks catch in part only. ``python -c 'import secrets; print(secrets.token_urlsafe(32))'``
makes a good key.
"""

from __future__ import annotations

import math
import string

MIN_LENGTH = 32
MIN_BITS = 128
MIN_DISTINCT = 6

_ALPHABETS = (
    frozenset(string.digits),
    frozenset(string.digits + "abcdef"),
    frozenset(string.digits + "ABCDEF"),
    frozenset(string.digits + string.ascii_lowercase),
    frozenset(string.digits + string.ascii_uppercase),
    frozenset(string.digits + string.ascii_letters),
    frozenset(string.digits + string.ascii_letters + "-_"),
    frozenset(string.digits + string.ascii_letters + "+/="),
    frozenset(string.printable[:94]),  # every printable ASCII character but the space
)

PLACEHOLDERS = (
    "changeme",
    "replaceme",
    "placeholder",
    "example",
    "password",
    "yourkey",
    "yourapikey",
    "apikeyhere",
    "insertkey",
    "notsecret",
    "dummy",
)
"""Words of made-up keys, matched in the key's letters and digits, case ignored."""

GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
"""A command that prints a key strong enough, for the error messages."""


def estimated_bits(key: str) -> float:
    """The key's length times the bits a character of the smallest alphabet holding it carries."""
    characters = set(key)
    size = next((len(alphabet) for alphabet in _ALPHABETS if characters <= alphabet), 95)
    return len(key) * math.log2(size)


def _repeats(key: str) -> bool:
    """True when ``key`` is a shorter string written again and again (``abab...``, ``abcab``)."""
    return any(key == (key[:period] * (len(key) // period + 1))[: len(key)] for period in range(1, len(key) // 2 + 1))


def weakness(key: str) -> str | None:
    """Why ``key`` is too weak for production, or None when it is strong enough."""
    if len(key) < MIN_LENGTH:
        plural = "" if len(key) == 1 else "s"
        return f"has {len(key)} character{plural}; production needs at least {MIN_LENGTH} characters"
    letters = "".join(c for c in key.lower() if c.isalnum())
    if any(word in letters for word in PLACEHOLDERS):
        return "looks like a placeholder (change-me, example, ...)"
    if _repeats(key):
        return "repeats a shorter string"
    if len(set(key)) < MIN_DISTINCT:
        return f"has fewer than {MIN_DISTINCT} distinct characters"
    bits = estimated_bits(key)
    if bits < MIN_BITS:
        return f"is estimated at {bits:.0f} bits; production needs at least {MIN_BITS} bits"
    return None
