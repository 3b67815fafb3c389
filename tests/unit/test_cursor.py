"""GET /jobs's cursors: what encode makes decodes back; anything else is InvalidCursor, nothing else."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.gateway import cursor
from services.gateway.identifiers import new_id


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_cursor_decodes_to_what_it_was_made_from() -> None:
    job_id = new_id()
    moment = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))

    made = cursor.encode(moment, job_id)

    assert cursor.decode(made) == (moment, job_id)
    assert cursor.decode(made)[0].tzinfo == UTC
    assert len(made) < cursor.MAX_LENGTH


NOW = "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "value",
    [
        cursor_of([NOW, "a\x00b"]),  # Postgres refuses a NUL in text
        cursor_of([NOW, "a\ud800b"]),  # not UTF-8
        cursor_of([NOW, "x" * 32]),
        cursor_of([NOW, 7]),
        cursor_of(["0001-01-01T00:00:00+14:00", new_id()]),  # before datetime's first day in UTC
        cursor_of(["9999-12-31T23:59:59-14:00", new_id()]),  # after its last
        cursor_of(["2026-01-01T00:00:00", new_id()]),  # no offset
        cursor_of([NOW, new_id(), "more"]),
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # nested past the recursion limit
        cursor_of([NOW, new_id()]) + "A" * cursor.MAX_LENGTH,
        "\x00",
        "%",
        "",
    ],
)
def test_anything_else_is_an_invalid_cursor(value: str) -> None:
    with pytest.raises(cursor.InvalidCursor):
        cursor.decode(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.text(),
        st.binary(max_size=150).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.tuples(st.one_of(st.datetimes(timezones=st.timezones()).map(datetime.isoformat), json_values), json_values)
        .map(list)
        .map(cursor_of),
    )
)
@example(value=cursor_of([NOW, "a\ud800b"]))
def test_decode_returns_a_utc_time_and_an_id_or_refuses(value: str) -> None:
    try:
        moment, job_id = cursor.decode(value)
    except cursor.InvalidCursor:
        return
    assert moment.tzinfo == UTC
    assert len(job_id) == 32
