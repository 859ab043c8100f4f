"""Errors of the Kafka boundary: one root, readable messages, no aiokafka types leaking out.

Everything in ``routing.broker`` raises :class:`BrokerError` (or a subclass) instead of
aiokafka's own exceptions, so callers (the CLI, the API, the composition root) handle one
family and show a sentence an operator can act on, e.g. "cannot reach Kafka at
127.0.0.1:9092 while listing topics", rather than ``KafkaConnectionError: Unable to
bootstrap from [...]``. The original exception stays chained as ``__cause__`` for the logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NotCoordinatorError,
)

COORDINATOR_NOT_READY: tuple[type[KafkaError], ...] = (
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorError,
)
"""A group or transaction coordinator that is not there *yet*: a fresh Kafka node before
its offsets or transaction-state topic exists, or a coordinator moving. Worth a retry, or,
for a group the broker does not list, the sign that it never committed."""


class BrokerError(Exception):
    """Root of every failure at the Kafka boundary.

    ``code`` is a stable machine-readable name (for the API and for tests); ``message`` is
    the sentence shown to a person.
    """

    code = "broker_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BrokerUnavailable(BrokerError):
    """The bootstrap servers could not be reached, or did not answer in time."""

    code = "broker_unavailable"


class BrokerStartupError(BrokerError):
    """The embedded broker could not be started or never became ready."""

    code = "broker_startup_failed"


class UnknownTopic(BrokerError):
    """A topic the caller relies on does not exist (and must not be auto-created)."""

    code = "unknown_topic"

    def __init__(self, topic: str, bootstrap_servers: str) -> None:
        super().__init__(
            f"topic {topic} does not exist on {bootstrap_servers}; create the topics first "
            "(`ensure_topics`), because auto-created topics get the broker's default "
            "partition count and break co-partitioning"
        )
        self.topic = topic


class TopicMismatch(BrokerError):
    """An existing topic's partition count or cleanup policy differs from the catalogue."""

    code = "topic_mismatch"


class ReadTimeout(BrokerError):
    """Reading a topic up to its end offsets did not finish within the allowed time."""

    code = "read_timeout"


@asynccontextmanager
async def kafka_errors(action: str, bootstrap_servers: str) -> AsyncIterator[None]:
    """Translate aiokafka (and socket) errors raised inside the block into BrokerError.

    ``action`` completes the sentence "… while <action>", so the message says what we were
    doing, not only what aiokafka saw. BrokerError raised inside passes through untouched.
    """
    try:
        yield
    except BrokerError:
        raise
    except (KafkaConnectionError, ConnectionError) as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {bootstrap_servers} while {action}: {exc}"
        ) from exc
    except (KafkaTimeoutError, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"Kafka at {bootstrap_servers} did not answer in time while {action}"
            + (f": {exc}" if str(exc) else "")
        ) from exc
    except KafkaError as exc:
        raise BrokerError(f"Kafka at {bootstrap_servers} failed while {action}: {exc}") from exc
    except OSError as exc:
        raise BrokerUnavailable(
            f"network error talking to Kafka at {bootstrap_servers} while {action}: {exc}"
        ) from exc
