"""Whether a failed try of a job is followed by another, how many a job gets, and when the next one is.

:meth:`RetryPolicy.decide` is the one place that says it, once per failure (``services.jobs.execution``
acts on its :class:`Decision`): a failure that will not pass (``services.jobs.errors.is_transient``
says which) fails the job at once; a transient one is tried again after a wait, unless it was
the last try.

A job is tried at most ``tries`` times. After a transient failure of try ``n`` it waits a random
time in the upper half of ``min(max_delay, base_delay * 2 ** (n - 1))`` (exponential backoff,
capped, jittered so that jobs failed together do not come back together), then try ``n + 1``
runs. The last try's failure fails the job, with an error that says how many tries it had and
over how long (:func:`gave_up`).

The settings ``JOB_MAX_TRIES``, ``RETRY_BASE_DELAY_SECONDS`` and ``RETRY_MAX_DELAY_SECONDS``
give every job's policy; a job defined with its own ``tries``, ``base_delay``, ``max_delay`` or
``permanent`` errors (its ``JobDefinition`` in ``services.contract``) keeps those:
:func:`retry_policy` is a job's policy. ARQ is
given the same number of tries (``services.jobs.setup``), and :func:`check_retries_fit` refuses a
policy whose last try could come after ARQ has forgotten the job.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from services.contract import JobName
from services.jobs.errors import is_transient
from services.queue import JOB_KEY_LIFETIME_SECONDS

if TYPE_CHECKING:
    from services.core.settings import Settings

_MAX_EXPONENT = 1000
"""Doublings beyond this change nothing (any cap is reached) and would overflow a float."""


class Verdict(StrEnum):
    """What follows a failed try."""

    RETRY = "retry"
    """Transient, with tries left: the job is tried again after :attr:`Decision.delay`."""
    GIVE_UP = "give up"
    """Transient, but it was the last try: the job fails, saying so (:func:`gave_up`)."""
    FAIL = "fail"
    """Trying again will not help: the job fails at once."""


@dataclass(frozen=True)
class Decision:
    """The policy's answer to one failed try."""

    verdict: Verdict
    delay: float | None = None
    """Seconds until the next try: set when the verdict is :attr:`Verdict.RETRY`, None otherwise."""

    def __post_init__(self) -> None:
        if (self.delay is not None) != (self.verdict is Verdict.RETRY):
            raise ValueError(f"a {self.verdict} decision {'needs' if self.delay is None else 'has no'} delay")

    @property
    def retry(self) -> bool:
        """True when the job is tried again."""
        return self.verdict is Verdict.RETRY


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a job gets and how long it waits between them (see the module docstring)."""

    tries: int
    base_delay: float
    """Seconds: the ceiling of the first wait, doubled for each wait after it."""
    max_delay: float
    """Seconds: no wait's ceiling is longer."""
    permanent: tuple[type[BaseException], ...] = ()
    """Errors of this job that fail it at once, whatever they are otherwise."""

    def __post_init__(self) -> None:
        if self.tries < 1:
            raise ValueError(f"tries must be at least 1, not {self.tries}")
        if not self.base_delay > 0 or not self.max_delay > 0:
            raise ValueError("base_delay and max_delay must be more than 0 seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the settings give every job."""
        return cls(
            tries=settings.job_max_tries,
            base_delay=settings.retry_base_delay_seconds,
            max_delay=settings.retry_max_delay_seconds,
        )

    def decide(self, exc: BaseException, job_try: int) -> Decision:
        """What follows try ``job_try`` (1 for the first) failing with ``exc``.

        A permanent failure fails the job; a transient one is tried again after :meth:`delay`,
        unless ``job_try`` was the last try (:meth:`is_last`).
        """
        if isinstance(exc, self.permanent) or not is_transient(exc):
            return Decision(Verdict.FAIL)
        if self.is_last(job_try):
            return Decision(Verdict.GIVE_UP)
        return Decision(Verdict.RETRY, delay=self.delay(job_try))

    def is_last(self, job_try: int) -> bool:
        """True when try ``job_try`` may not be followed by another."""
        return job_try >= self.tries

    def ceiling(self, job_try: int) -> float:
        """The longest wait after try ``job_try`` (the shortest is half of it)."""
        exponent = min(max(job_try - 1, 0), _MAX_EXPONENT)
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def delay(self, job_try: int) -> float:
        """Seconds to wait after try ``job_try`` failed: a random time in the upper half of its ceiling."""
        ceiling = self.ceiling(job_try)
        return random.uniform(ceiling / 2, ceiling)

    def span(self) -> tuple[float, float]:
        """The shortest and longest total of the waits between the first try and the last, in seconds.

        A job failing transiently every time is given up no sooner than the first figure after
        its first try started (plus the time its tries ran), and no later than the second.
        """
        longest = sum(self.ceiling(n) for n in range(1, self.tries))
        return longest / 2, longest


@dataclass(frozen=True)
class RetryOverride:
    """What a job declares of its own policy; None leaves the setting's value."""

    tries: int | None = None
    base_delay: float | None = None
    max_delay: float | None = None
    permanent: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.tries is not None and self.tries < 1:
            raise ValueError(f"tries must be at least 1, not {self.tries}")
        for delay in (self.base_delay, self.max_delay):
            if delay is not None and not delay > 0:
                raise ValueError("base_delay and max_delay must be more than 0 seconds")

    def applied_to(self, policy: RetryPolicy) -> RetryPolicy:
        """``policy`` with this override's values in place of its own."""
        return RetryPolicy(
            tries=policy.tries if self.tries is None else self.tries,
            base_delay=policy.base_delay if self.base_delay is None else self.base_delay,
            max_delay=policy.max_delay if self.max_delay is None else self.max_delay,
            permanent=(*policy.permanent, *self.permanent),
        )


RETRIES: dict[JobName, RetryOverride] = {}
"""What each job declared of its own retry policy (:func:`declare`); the settings give the rest."""


def declare(name: JobName, override: RetryOverride, *, timeout: float | None = None) -> None:
    """Record what job ``name`` defines of its own policy (``services.jobs.execution.register`` does)."""
    RETRIES[name] = override
    if timeout is None:
        TIMEOUTS.pop(name, None)
    else:
        TIMEOUTS[name] = timeout


def retry_policy(name: JobName, settings: Settings) -> RetryPolicy:
    """How many tries ``name`` gets and how long it waits between them."""
    return RETRIES.get(name, RetryOverride()).applied_to(RetryPolicy.from_settings(settings))


TIMEOUTS: dict[JobName, float] = {}
"""The jobs defined with a timeout of their own (:func:`declare`); the others have the setting's."""


def job_timeout(name: JobName, settings: Settings) -> float:
    """Seconds one try of ``name`` may run."""
    return TIMEOUTS.get(name, settings.job_timeout_seconds)


def check_retries_fit(settings: Settings) -> None:
    """Refuse a retry policy whose last try could come after ARQ has forgotten the job.

    ARQ's job key lives for a day after the job was due (``expires_extra_ms``) and is not renewed
    by a retry: a try due later fails as "job expired". The waits at their longest plus every
    try but the last running to its timeout must end before that.
    """
    lifetime = JOB_KEY_LIFETIME_SECONDS
    for name in JobName:
        policy = retry_policy(name, settings)
        reach = policy.span()[1] + (policy.tries - 1) * job_timeout(name, settings)
        if reach >= lifetime:
            raise ValueError(
                f"the retries of {name} could last {reach / 3600:.1f} h, but ARQ forgets a job "
                f"{lifetime / 3600:.0f} h after it was due: lower JOB_MAX_TRIES, RETRY_MAX_DELAY_SECONDS "
                "or the job's own tries/max_delay"
            )


def gave_up(*, tries: int, seconds: float, error: str) -> str:
    """The error of a job whose last try failed transiently: how many tries, over how long, and why."""
    return f"gave up after {tries} {'try' if tries == 1 else 'tries'} over {duration(seconds)}: {error}"


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``0.8s``, ``12s``, ``41m 3s``, ``2h 5m``."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"
