"""The retry policy: how many tries, how long between them, and what a job that gave up says."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import redis.exceptions
from pydantic import BaseModel, ValidationError

from services.core.settings import Settings
from services.jobs.errors import PermanentError, TransientError
from services.jobs.retries import Decision, RetryOverride, RetryPolicy, Verdict, duration, gave_up

HALF_AN_HOUR = 30 * 60


def default(name: str) -> Any:
    """A setting's default as declared (whatever the environment of the test run holds)."""
    return Settings.model_fields[name].default


def test_the_default_schedule_rides_out_a_half_hour_outage() -> None:
    policy = RetryPolicy(
        tries=default("job_max_tries"),
        base_delay=default("retry_base_delay_seconds"),
        max_delay=default("retry_max_delay_seconds"),
    )

    shortest, longest = policy.span()

    # 13 tries; the 12 waits' ceilings: 10, 20, 40, 80, 160, 320 s, then 600 s six times.
    assert [policy.ceiling(n) for n in range(1, policy.tries)] == [10, 20, 40, 80, 160, 320] + [600] * 6
    assert (shortest, longest) == (2115.0, 4230.0)  # 35 min 15 s to 70 min 30 s
    assert shortest > HALF_AN_HOUR, "a job failing all along must still be tried after a 30-minute outage"


def test_from_settings_takes_the_three_settings() -> None:
    settings = Settings(_env_file=None, job_max_tries=4, retry_base_delay_seconds=0.5, retry_max_delay_seconds=3)

    assert RetryPolicy.from_settings(settings) == RetryPolicy(tries=4, base_delay=0.5, max_delay=3)


@pytest.mark.parametrize(("job_try", "ceiling"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)])
def test_the_wait_doubles_with_jitter_in_its_upper_half(job_try: int, ceiling: float) -> None:
    policy = RetryPolicy(tries=10, base_delay=1.0, max_delay=300.0)

    assert policy.ceiling(job_try) == ceiling
    for _ in range(200):
        assert ceiling / 2 <= policy.delay(job_try) <= ceiling


def test_the_wait_is_capped_even_after_very_many_tries() -> None:
    policy = RetryPolicy(tries=100_000, base_delay=1.0, max_delay=10.0)

    for job_try in (30, 2_000, 99_999):
        assert policy.ceiling(job_try) == 10.0
        assert 5.0 <= policy.delay(job_try) <= 10.0


def test_the_span_of_a_policy() -> None:
    assert RetryPolicy(tries=1, base_delay=1.0, max_delay=60.0).span() == (0.0, 0.0)
    assert RetryPolicy(tries=4, base_delay=1.0, max_delay=3.0).span() == (3.0, 6.0)  # waits 1, 2, 3


def test_the_last_try() -> None:
    policy = RetryPolicy(tries=3, base_delay=1.0, max_delay=60.0)

    assert [policy.is_last(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_an_override_replaces_only_what_it_names() -> None:
    settings = RetryPolicy(tries=13, base_delay=10.0, max_delay=600.0)

    assert RetryOverride().applied_to(settings) == settings
    assert RetryOverride(tries=1).applied_to(settings) == RetryPolicy(tries=1, base_delay=10.0, max_delay=600.0)
    assert RetryOverride(base_delay=0.5, max_delay=5).applied_to(settings) == RetryPolicy(13, 0.5, 5)


@pytest.mark.parametrize(
    "values", [{"tries": 0}, {"base_delay": 0}, {"max_delay": -1.0}, {"tries": 1, "base_delay": 0.0}]
)
def test_a_policy_or_an_override_refuses_nonsense(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"tries|delay"):
        RetryOverride(**values)
    with pytest.raises(ValueError, match=r"tries|delay"):
        RetryPolicy(**{"tries": 3, "base_delay": 1.0, "max_delay": 10.0, **values})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1, "0.0s"),
        (0.84, "0.8s"),
        (9.94, "9.9s"),
        (12.4, "12s"),
        (60, "1m"),
        (41 * 60 + 3, "41m 3s"),
        (3600, "1h"),
        (2 * 3600 + 5 * 60 + 10, "2h 5m"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_gave_up_says_how_many_tries_over_how_long_and_why() -> None:
    error = "TransientError: SMTP 451 try again later"

    assert gave_up(tries=13, seconds=2540, error=error) == f"gave up after 13 tries over 42m 20s: {error}"
    assert gave_up(tries=1, seconds=0.25, error="OSError") == "gave up after 1 try over 0.2s: OSError"


def _invalid_payload() -> ValidationError:
    class Payload(BaseModel):
        email: str

    try:
        Payload.model_validate({})
    except ValidationError as exc:
        return exc
    raise AssertionError("an empty payload was valid")


TRANSIENT = [
    TransientError("SMTP 451 try again later"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    redis.exceptions.ConnectionError("Connection closed by server."),
]
PERMANENT = [
    PermanentError("SMTP 550 no such user"),
    ValueError("bad data"),
    RuntimeError("bug"),
    asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
    redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    _invalid_payload(),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize(("job_try", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0)])
def test_a_transient_failure_with_tries_left_is_tried_again_after_its_backoff(
    exc: BaseException, job_try: int, ceiling: float
) -> None:
    policy = RetryPolicy(tries=5, base_delay=1.0, max_delay=5.0)

    decision = policy.decide(exc, job_try)

    assert decision.verdict is Verdict.RETRY
    assert decision.retry
    assert decision.delay is not None
    assert ceiling / 2 <= decision.delay <= ceiling


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize("job_try", [5, 6])  # ARQ may start a try past the count (a crash re-run)
def test_a_transient_failure_of_the_last_try_gives_up(exc: BaseException, job_try: int) -> None:
    decision = RetryPolicy(tries=5, base_delay=1.0, max_delay=5.0).decide(exc, job_try)

    assert decision == Decision(Verdict.GIVE_UP)
    assert not decision.retry


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize("job_try", [1, 4, 5])
def test_a_permanent_failure_fails_at_once_whatever_the_try(exc: BaseException, job_try: int) -> None:
    decision = RetryPolicy(tries=5, base_delay=1.0, max_delay=5.0).decide(exc, job_try)

    assert decision == Decision(Verdict.FAIL)
    assert not decision.retry


def test_a_permanent_error_that_is_also_a_connection_error_fails_at_once() -> None:
    class Refused(PermanentError, ConnectionError):
        pass

    assert RetryPolicy(tries=5, base_delay=1.0, max_delay=5.0).decide(Refused("550"), 1) == Decision(Verdict.FAIL)


def test_a_single_try_is_never_retried() -> None:
    assert RetryPolicy(tries=1, base_delay=1.0, max_delay=5.0).decide(TimeoutError(), 1) == Decision(Verdict.GIVE_UP)


def test_a_decision_has_a_delay_exactly_when_it_retries() -> None:
    with pytest.raises(ValueError, match="needs"):
        Decision(Verdict.RETRY)
    with pytest.raises(ValueError, match="has no"):
        Decision(Verdict.FAIL, delay=1.0)
    with pytest.raises(ValueError, match="has no"):
        Decision(Verdict.GIVE_UP, delay=1.0)
