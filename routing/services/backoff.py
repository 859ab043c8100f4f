"""The redelivery schedule: exponential backoff with full jitter, honouring Retry-After.

Why full jitter (a uniform draw between 0 and the exponential ceiling, as in AWS's
"Exponential Backoff and Jitter"): when a partner comes back after an outage, every
connector worker and every partition that was waiting on it would otherwise retry in
lock-step and knock it over again. Spreading the retries uniformly gives the partner the
smoothest load for the same mean wait.

``Retry-After`` is the partner telling us when it can take more; waiting less would only
earn another 429/503, so the wait is ``max(jittered backoff, retry_after)``. Both are
capped by ``max_seconds``: a partner asking for a day must not silently park a connector
for a day (the attempt budget still dead-letters the statement eventually, where an
operator sees it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from config.settings import Settings


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """How long to wait before each redelivery, and how many attempts a statement gets.

    ``max_attempts`` counts every attempt, the first included: with 12, a statement is
    tried 12 times and dead-lettered after the 12th failure.
    """

    base_seconds: float = 1.0
    max_seconds: float = 300.0
    max_attempts: int = 12

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.max_seconds <= 0:
            raise ValueError("backoff durations must be positive")
        if self.max_seconds < self.base_seconds:
            raise ValueError("max_seconds must be at least base_seconds")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySchedule:
        return cls(
            base_seconds=settings.delivery_retry_base_seconds,
            max_seconds=max(settings.delivery_retry_max_seconds,
                            settings.delivery_retry_base_seconds),
            max_attempts=settings.delivery_max_attempts,
        )

    @classmethod
    def short(cls) -> RetrySchedule:
        """A schedule for tests and the embedded demo: seconds, not hours, to a dead letter."""
        return cls(base_seconds=0.05, max_seconds=1.0, max_attempts=5)

    def ceiling(self, attempt: int) -> float:
        """The backoff ceiling after failed attempt ``attempt`` (1-based), before jitter."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        # 2**k overflows float for huge k; the cap is reached long before 64 doublings.
        return min(self.max_seconds, self.base_seconds * 2.0 ** min(attempt - 1, 64))

    def exhausted(self, attempt: int) -> bool:
        """Whether failed attempt ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the next one."""
        draw = (rng or _RNG).uniform(0.0, self.ceiling(attempt))
        if retry_after is not None:
            draw = max(draw, retry_after)
        return min(draw, self.max_seconds)


# Jitter is not security-sensitive; a module-level generator avoids re-seeding per call.
_RNG = random.Random()  # noqa: S311
