"""How many times a request is sent again, and how long apart.

Which requests may be sent again, and after which failures, is decided in
:mod:`afterword_client.flows`; this holds the numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, honouring the gateway's ``Retry-After``.

    ``attempts`` counts every try, the first included (1 turns retries off). The wait after the
    n-th failed try is drawn between half and all of ``backoff * 2**(n-1)``, at most
    ``max_backoff``; when the answer carried ``Retry-After``, the wait is at least that (cut to
    ``max_retry_after``).
    """

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1 (the first try)")
        if min(self.backoff, self.max_backoff, self.max_retry_after) < 0:
            raise ValueError("backoff, max_backoff and max_retry_after must not be negative")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failed tries in a row, before the next one."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(max(0, failures - 1), 64))
        wait = random.uniform(ceiling / 2, ceiling)  # spread out the clients that failed together
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait
