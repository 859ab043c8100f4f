"""The roles' consumer-group sessions fit Apache Kafka's bounds with its default settings.

Kafka refuses a join whose session timeout is under ``group.min.session.timeout.ms``
(6 s by default) with ``InvalidSessionTimeoutError``, a fatal error for the consumer. Tansu
accepts any value, so only this check (and the Kafka test runs) would notice a default
that production's broker refuses. The test broker lowers the floor for its short test
sessions; production's does not.
"""

from __future__ import annotations

import inspect

from adapters.worker import run_adapters
from routing.router.app import RouterTuning

KAFKA_MIN_SESSION_MS = 6_000
KAFKA_MAX_SESSION_MS = 1_800_000


def test_the_router_default_session_is_within_kafkas_default_bounds() -> None:
    session_ms = RouterTuning().session_timeout * 1000
    assert KAFKA_MIN_SESSION_MS <= session_ms <= KAFKA_MAX_SESSION_MS


def test_the_adapters_default_session_is_within_kafkas_default_bounds() -> None:
    default = inspect.signature(run_adapters).parameters["session_timeout_ms"].default
    assert KAFKA_MIN_SESSION_MS <= default <= KAFKA_MAX_SESSION_MS
