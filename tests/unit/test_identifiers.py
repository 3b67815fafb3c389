"""New ids are what ``uuid.uuid4().hex`` gives: 32 hex digits of a random version-4 UUID."""

from __future__ import annotations

import uuid

from services.gateway.identifiers import is_id, new_id


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


def test_only_the_form_of_a_new_id_is_an_id() -> None:
    assert all(is_id(new_id()) for _ in range(200))
    assert is_id(uuid.uuid4().hex)
    for other in ["", "nope", "\x00", "a" * 31, "a" * 33, "A" * 32, str(uuid.uuid4()), "g" * 32, "a" * 32 + "\n"]:
        assert not is_id(other), other
