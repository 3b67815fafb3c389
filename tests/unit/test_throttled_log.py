"""A lasting trouble is logged once, then at most once per period, and its end once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from services.core import throttled_log
from services.core.throttled_log import MAX_TROUBLES, ThrottledLog

log = logging.getLogger("test.throttled")


def test_a_trouble_met_again_is_not_logged_again_within_the_period(caplog: pytest.LogCaptureFixture) -> None:
    throttled = ThrottledLog(log, every=3600)
    with caplog.at_level(logging.INFO, logger="test.throttled"):
        for _ in range(5):
            throttled.warning("queue", "the queue is broken: %s", "WRONGTYPE")
        throttled.warning("abort", "the abort set is broken")
        throttled.over("queue", "the queue works again")
        throttled.over("queue", "the queue works again")  # said once
        throttled.over("never", "nothing to say")

    assert [r.getMessage() for r in caplog.records] == [
        "the queue is broken: WRONGTYPE",
        "the abort set is broken",
        "the queue works again",
    ]
    assert not throttled.active("queue")
    assert throttled.active("abort")


def test_after_the_period_the_warning_says_how_often_it_was_met(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(throttled_log, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    throttled = ThrottledLog(log, every=60)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        throttled.warning("queue", "broken")
        for _ in range(3):
            clock[0] += 10
            throttled.warning("queue", "broken")
        clock[0] += 60
        throttled.warning("queue", "broken")

    assert [r.getMessage() for r in caplog.records] == [
        "broken",
        "broken (met 3 more time(s) since the last warning)",
    ]


def test_it_remembers_a_bounded_number_of_troubles() -> None:
    throttled = ThrottledLog(log)
    for n in range(MAX_TROUBLES + 10):
        throttled.warning(f"id-{n}", "unreadable")

    assert not throttled.active("id-0")
    assert throttled.active(f"id-{MAX_TROUBLES + 9}")
