"""A 422 echoes what the client sent; whatever that holds, the answer encodes as JSON in UTF-8."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.errors import json_safe
from tests.support import hostile_values as hostile


def encoded(value: Any) -> Any:
    """``value`` through json_safe, as the 422 sends it (strict JSON, UTF-8), and read back."""
    return json.loads(json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False).encode("utf-8"))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a\ud800b", "a\ufffdb"),
        ({"k\udfff": ["\ud83d"]}, {"k\ufffd": ["\ufffd"]}),
        ("a\U0001f600b", "a\U0001f600b"),  # a whole pair is left alone
        (math.nan, "nan"),
        (-math.inf, "-inf"),
        (b"\xff\xfeok", "\ufffd\ufffdok"),
        ((1, "x"), [1, "x"]),
        (Decimal("1.5"), 1.5),
        ({"error": ValueError("bad")}, {"error": {}}),  # as FastAPI's own encoder shows it
        (10**300, 10**300),
    ],
)
def test_what_json_cannot_carry_is_shown_as_what_it_is(value: Any, shown: Any) -> None:
    assert encoded(value) == shown


def test_nesting_past_32_levels_is_cut() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]

    shown = encoded({"input": deep})

    depth, level = 0, shown["input"]
    while isinstance(level, list):
        depth, level = depth + 1, level[0]
    assert (depth, level) == (31, "…")


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile.text | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(hostile.text, inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=anything)
def test_anything_encodes(value: Any) -> None:
    encoded(value)
