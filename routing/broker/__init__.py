"""The Kafka boundary: the embedded broker, topic administration, producers and readers.

Only this package (and the stream processors built on it) talks aiokafka; everything it
raises is a :class:`BrokerError`, so callers never handle aiokafka exceptions directly.
"""

from routing.broker.admin import (
    describe_cleanup_policies,
    describe_topics,
    end_offsets,
    ensure_topics,
    partition_end_offsets,
    require_topics,
)
from routing.broker.embedded import EmbeddedBroker, resolve_tansu_binary
from routing.broker.errors import (
    BrokerError,
    BrokerStartupError,
    BrokerUnavailable,
    ReadTimeout,
    TopicMismatch,
    UnknownTopic,
    kafka_errors,
)
from routing.broker.producer import ProducerParams, make_producer, read_topic

__all__ = [
    "BrokerError",
    "BrokerStartupError",
    "BrokerUnavailable",
    "EmbeddedBroker",
    "ProducerParams",
    "ReadTimeout",
    "TopicMismatch",
    "UnknownTopic",
    "describe_cleanup_policies",
    "describe_topics",
    "end_offsets",
    "ensure_topics",
    "kafka_errors",
    "make_producer",
    "partition_end_offsets",
    "read_topic",
    "require_topics",
    "resolve_tansu_binary",
]
