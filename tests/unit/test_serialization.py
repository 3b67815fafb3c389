"""The JSON serializer handed to ARQ: data in, data out, and never pickle."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.core.serialization import deserialize, serialize


def test_round_trip_of_a_job_dict() -> None:
    job = {
        "t": 1,
        "f": "send_email",
        "a": [{"to": "ada@example.com", "subject": "Zoë", "body": "a\nb\u2028c"}],
        "k": {},
        "et": 1714564800000,
        "nested": {"none": None, "float": 1.5, "bool": True},
    }

    data = serialize(job)

    assert isinstance(data, bytes)
    assert deserialize(data) == job


def test_output_is_compact_json() -> None:
    assert serialize({"a": [1, 2], "b": "c"}) == b'{"a":[1,2],"b":"c"}'


def test_an_exception_is_written_as_its_type_and_text() -> None:
    data = serialize({"r": ValueError("boom"), "s": False})

    assert deserialize(data) == {"r": "ValueError: boom", "s": False}


def test_other_values_fall_back_to_lists_and_text() -> None:
    value = deserialize(serialize({"set": {3}, "frozen": frozenset({"x"}), "tuple": (1, 2), "path": Path("/a")}))

    assert value == {"set": [3], "frozen": ["x"], "tuple": [1, 2], "path": "/a"}


@dataclasses.dataclass
class _Point:
    x: int
    y: int

    def __str__(self) -> str:
        return f"({self.x}, {self.y})"


@pytest.mark.parametrize(
    "value",
    [
        {"t": 1, "a": [{"x": "é\u2028"}], "k": {}, "big": 2**70, "neg": -(2**64)},
        {"keys": {1: "int", 2.5: "float", False: "bool", None: "none"}},
        {"when": datetime(2026, 11, 24, 5, 30, tzinfo=UTC), "point": _Point(1, 2)},
    ],
)
def test_what_json_wrote_is_written_the_same(value: dict[str, object]) -> None:
    expected = json.dumps(value, default=str, separators=(",", ":")).encode()

    assert serialize(value) == expected


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"t": 1, "f": "send_email", "a": [_Exploit(marker)]})

    with pytest.raises(ValueError):
        deserialize(payload)

    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_pickle_protocols_are_refused_too(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker), protocol=protocol)

    with pytest.raises(ValueError):
        deserialize(payload)

    assert not marker.exists()


@pytest.mark.parametrize("data", [b"[1, 2, 3]", b'"text"', b"42", b"null", b"true"])
def test_anything_but_an_object_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        deserialize(data)


def test_invalid_json_is_refused() -> None:
    with pytest.raises(json.JSONDecodeError):
        deserialize(b"{not json")
