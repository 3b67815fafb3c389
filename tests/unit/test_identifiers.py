"""New ids are what ``uuid.uuid4().hex`` gives: 32 hex digits of a random version-4 UUID."""

from __future__ import annotations

import uuid

from services.identifiers import new_id


def test_a_new_id_is_the_hex_of_a_random_uuid4() -> None:
    ids = [new_id() for _ in range(2000)]

    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # The other 122 bits are random: every hex digit shows up at the positions not fixed.
    assert {value[0] for value in ids} == set("0123456789abcdef")
