"""Producers with the pipeline's delivery settings, and a whole-topic reader for tests and ops.

Every producer in the project comes from :func:`make_producer`, so the at-least-once
settings (DESIGN §5) live in one place:

* ``acks="all"``: a send is acknowledged only once every in-sync replica has it, so an
  acknowledged routed event survives a broker failure on a real cluster;
* no idempotence and no transactions unless ``exactly_once`` or a ``transactional_id``
  is asked for explicitly, because Tansu has neither (``InitProducerId`` fails, DESIGN
  §6). Duplicates from retries are absorbed by the sinks, which are idempotent on
  ``statement_id``. The router's transactional producers (one per input partition,
  ``routing.router.transactions``) give them a short transaction timeout (10 s, as Kafka
  Streams does): a transaction left open by a killed router blocks ``read_committed``
  readers of its partitions until the broker aborts it, or a new owner fences it;
* a small ``linger_ms`` so sends made in the same moment share a batch without adding
  noticeable latency (the p99 target is 250 ms end to end);
* no compression: the values are small JSON documents and, on loopback, compression costs
  more CPU than it saves;
* ``max_request_size`` is the size rule's broker limit (``events.limits``), the
  ``max.message.bytes`` every topic is created with: a record one role may write, the
  broker takes and every consumer can fetch. aiokafka's default (1 MiB) would refuse a
  statement at the limit once in base64.

Messages are sent as bytes; (de)serialisation belongs to ``events.schemas``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from config.settings import Settings
from events.limits import BROKER_MESSAGE_BYTES
from routing.broker.admin import require_topics
from routing.broker.errors import BrokerError, ReadTimeout, kafka_errors
from routing.broker.topic_reader import assigned_consumer, read_to_end

__all__ = ["ProducerParams", "make_producer", "read_topic", "send_all"]


@dataclass(frozen=True, slots=True)
class ProducerParams:
    """What a producer needs to know; build it from Settings with ``from_settings``."""

    bootstrap_servers: str
    client_id: str = "statement-router"
    exactly_once: bool = False
    linger_ms: int = 5
    max_batch_size: int = 16_384
    request_timeout_ms: int = 30_000
    transactional_id: str | None = None
    transaction_timeout_ms: int = 10_000
    max_request_size: int = BROKER_MESSAGE_BYTES

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        bootstrap_servers: str,
        client_id: str = "statement-router",
    ) -> ProducerParams:
        """Parameters from the process settings, on the broker the composition root
        resolved (``routing.entrypoints.bootstrap.broker_address``: the settings' address, or the
        embedded broker's, known only once it runs)."""
        return cls(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            exactly_once=settings.kafka_exactly_once,
            linger_ms=settings.kafka_linger_ms,
        )


def make_producer(params: ProducerParams) -> AIOKafkaProducer:
    """An unstarted AIOKafkaProducer with at-least-once settings.

    Call it inside a running event loop (aiokafka binds the producer to it), then
    ``await producer.start()`` and finally ``await producer.stop()``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise BrokerError("make_producer() must be called inside a running event loop") from None
    return AIOKafkaProducer(
        bootstrap_servers=params.bootstrap_servers,
        client_id=params.client_id,
        acks="all",
        enable_idempotence=params.exactly_once or params.transactional_id is not None,
        transactional_id=params.transactional_id,
        transaction_timeout_ms=params.transaction_timeout_ms,
        linger_ms=params.linger_ms,
        compression_type=None,
        max_batch_size=params.max_batch_size,
        request_timeout_ms=params.request_timeout_ms,
        max_request_size=params.max_request_size,
    )


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds the whole read, named in ReadTimeout
    isolation_level: str = "read_uncommitted",
) -> list[ConsumerRecord]:
    """Every record of ``topic``, from the beginning up to the end offsets seen on entry.

    For tests, the CLI and the demo: it joins no consumer group and commits nothing, so it
    never disturbs a running pipeline. Records written after the call starts are not
    waited for, which makes the result well-defined while producers are still active.
    Records come sorted by (partition, offset); keys and values are raw bytes. Raises
    UnknownTopic for a missing topic (never auto-creates it) and ReadTimeout if the
    records cannot all be fetched within ``timeout`` seconds. ``read_committed`` leaves out
    the records of aborted transactions (and waits for open ones to end).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    counts = await require_topics(bootstrap_servers, [topic])
    action = f"reading topic {topic}"
    records: list[ConsumerRecord] = []
    reader = assigned_consumer(
        bootstrap_servers, counts, action=action, isolation_level=isolation_level
    )
    def timed_out(pending: set[TopicPartition]) -> ReadTimeout:
        missing = sorted(f"{tp.topic}[{tp.partition}]" for tp in pending)
        return ReadTimeout(
            f"reading topic {topic} from {bootstrap_servers} did not reach the end "
            f"offsets within {timeout:g}s (still reading {', '.join(missing)}; "
            f"{len(records)} records read so far)"
        )

    async with reader as (consumer, partitions), kafka_errors(action, bootstrap_servers):
        async for batch in read_to_end(
            consumer, partitions, deadline=deadline, what=topic, timed_out=timed_out
        ):
            records.extend(batch)
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def send_all(
    producer: AIOKafkaProducer, messages: Sequence[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Send (topic, key, value) messages and wait until the broker acknowledged them all."""
    futures = [await producer.send(topic, value=value, key=key) for topic, key, value in messages]
    if futures:
        await asyncio.gather(*futures)
