"""The redelivery schedule: full jitter under an exponential ceiling, Retry-After honoured."""

from __future__ import annotations

import random

import pytest

from config.settings import Settings
from routing.services.backoff import RetrySchedule


def test_the_ceiling_doubles_up_to_the_cap() -> None:
    schedule = RetrySchedule(base_seconds=1, max_seconds=300, max_attempts=12)
    assert [schedule.ceiling(n) for n in range(1, 12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert schedule.ceiling(10_000) == 300


def test_full_jitter_stays_within_zero_and_the_ceiling_and_spreads() -> None:
    schedule = RetrySchedule(base_seconds=1, max_seconds=300)
    rng = random.Random(1)
    draws = [schedule.delay(4, rng=rng) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in draws)
    assert min(draws) < 1 and max(draws) > 7  # uniform over the range, not clustered


def test_retry_after_is_a_floor_and_the_cap_still_applies() -> None:
    schedule = RetrySchedule(base_seconds=0.1, max_seconds=60)
    rng = random.Random(2)
    assert all(schedule.delay(1, 5.0, rng) == 5.0 for _ in range(100))
    assert schedule.delay(1, 3600.0, rng) == 60


def test_attempts_are_counted_from_one_and_include_the_first() -> None:
    schedule = RetrySchedule(max_attempts=3)
    assert [schedule.exhausted(n) for n in (1, 2, 3)] == [False, False, True]
    with pytest.raises(ValueError):
        schedule.ceiling(0)


@pytest.mark.parametrize("kwargs", [{"base_seconds": 0}, {"max_attempts": 0},
                                    {"base_seconds": 10, "max_seconds": 1}])
def test_nonsense_schedules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(**kwargs)  # type: ignore[arg-type]


def test_production_defaults_come_from_the_settings() -> None:
    schedule = RetrySchedule.from_settings(Settings())
    assert (schedule.base_seconds, schedule.max_seconds, schedule.max_attempts) == (1, 300, 12)
    short = RetrySchedule.short()
    assert short.max_seconds <= 1
