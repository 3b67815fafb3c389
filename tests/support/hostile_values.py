"""Hypothesis strategies of hostile input: text, JSON documents, path segments and header values.

Each holds what has broken a service before: a NUL (Postgres refuses it in text), a lone
surrogate (no UTF-8 encoding; JSON's ``"\\ud800"`` decodes to one), line breaks of every kind,
numbers JSON cannot carry (NaN, Infinity, integers of thousands of digits), deep nesting, and
fragments of markup, paths and mail headers.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import strategies as st

PIECES = [
    "\x00", "\ud800", "\udfff", "\ud83d", "\ud83d\ude00", "\r\n", "\n", "\r", "\u2028", "\u2029", "\x85",
    "\x1b[31m", "\ufeff", "\U0001f600", "%00", "%ZZ", "../", "'", '"', "\\", "{{root}}", "<script>",
    "=?utf-8?q?a=0D=0ABcc:_e@x.io?=", "Bcc: eve@example.com", " ", "", "a" * 300,
]  # fmt: skip
"""Pieces that hostile text is made of, besides any other characters."""

text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=6).map("".join)
"""Hostile text: lone surrogates included (so not always encodable as UTF-8)."""

BIG_DIGITS = st.integers(min_value=300, max_value=5000).map(lambda n: "9" * n)
"""An integer past any float, sometimes past Python's 4,300-digit limit on parsing one."""

json_scalars = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "Infinity", "-Infinity", "1e999", "-0", "0.0"]),
    st.integers().map(str),
    BIG_DIGITS,
    st.floats().map(json.dumps),
    text.map(json.dumps),  # lone surrogates as \\udXXX escapes
    text.map(lambda value: json.dumps(value, ensure_ascii=False)),  # ... or raw (surrogatepass below)
)
"""JSON scalars as text, including what Python's parser takes and strict JSON does not."""


def array(items: list[str]) -> str:
    """A JSON array of JSON texts."""
    return "[" + ",".join(items) + "]"


def obj(members: list[tuple[str, str]]) -> str:
    """A JSON object of (key, JSON text) pairs."""
    return "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in members) + "}"


json_values = st.one_of(
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=3).map(array) | st.lists(st.tuples(text, inner), max_size=3).map(obj),
        max_leaves=8,
    ),
    st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth),
)
"""Any JSON value as text, deep nesting included."""


def json_objects(fields: list[str]) -> st.SearchStrategy[str]:
    """JSON objects whose keys are mostly ``fields``, with hostile values (and a hostile key now and then)."""
    key = st.one_of(st.sampled_from(fields), text) if fields else text
    return st.lists(st.tuples(key, json_values), max_size=len(fields) + 2).map(obj)


def utf8(document: str) -> bytes:
    """A JSON text as a body: UTF-8, with any lone surrogate written as its three bytes, as a
    careless encoder would (Python's JSON parser reads them back as the surrogate)."""
    return document.encode("utf-8", "surrogatepass")


path_segments = st.one_of(
    text.map(lambda value: quote(value.encode("utf-8", "surrogatepass"), safe="")),
    st.lists(st.sampled_from(["%00", "%FF", "%ED%A0%80", "%", "%2", "%2F", "%25", ";", "a", "0" * 32]), max_size=4).map(
        "".join
    ),
)
"""A path segment as it travels in a URL: percent-encoded text, or raw escapes, broken ones included."""

FIELD_VALUE_BYTES = frozenset([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
"""The bytes a header value may hold (RFC 9110 5.5): HTAB, visible ASCII, space, obs-text."""

header_values = st.one_of(
    st.binary(max_size=40),
    text.map(lambda value: value.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"Bearer ", b"Bearer \xff", b"bearer  x", b"Basic Og==", b"[", b"a]:1", b"x" * 8000]),
).map(lambda raw: bytes(b for b in raw if b in FIELD_VALUE_BYTES).strip(b" \t"))
"""Header values HTTP/1.1 can carry (no NUL, CR or LF; RFC 9110's obs-text bytes included)."""
