"""The size rule on the brokers: every topic is created with it, every producer and consumer
of ours moves a record at the limit, and a topic with a smaller limit is refused."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from config.catalogue import default_catalogue
from events.limits import BROKER_MESSAGE_BYTES, MAX_RECORD_BYTES
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.broker.admin import ensure_topics
from routing.broker.errors import TopicMismatch
from tests.fixtures.broker import unique_prefix


async def max_message_bytes(bootstrap: str, names: list[str]) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n, configs=None) for n in names]
        found: dict[str, str] = {}
        for response in await admin.describe_configs(resources):
            for _code, _message, _type, name, entries, *_ in response.resources:
                for entry in entries:
                    if entry[0] == "max.message.bytes":
                        found[name] = entry[1]
        return found
    finally:
        await admin.close()


async def test_every_topic_is_created_with_the_size_rule(kafka_broker: EmbeddedBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    specs = Topics(prefix=unique_prefix(), partitions=2).specs(default_catalogue())
    await ensure_topics(bootstrap, specs)
    names = [s.name for s in specs]
    assert await max_message_bytes(bootstrap, names) == dict.fromkeys(
        names, str(BROKER_MESSAGE_BYTES)
    )


async def test_a_record_at_the_record_limit_goes_through_our_producer_and_reader(
    kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    """Kafka's own default (about 1 MB) and aiokafka's (1 MiB) would both refuse it."""
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        value = b"v" * MAX_RECORD_BYTES
        await producer.send_and_wait(topics.received, value, key=b"k")
        with pytest.raises(MessageSizeTooLargeError):  # the producer's own check
            await producer.send_and_wait(topics.received, b"v" * BROKER_MESSAGE_BYTES, key=b"k")
    finally:
        await producer.stop()
    [record] = await read_topic(kafka_broker.bootstrap_servers, topics.received)
    assert record.value == value


async def test_a_topic_with_a_smaller_limit_is_refused_with_the_fix(
    kafka_broker: EmbeddedBroker,
) -> None:
    """Both brokers report a topic's own max.message.bytes; the one created by hand here
    (as an operator might, before the rule) is refused with the command that fixes it."""
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.received, 2, 1, topic_configs={
                "cleanup.policy": "delete", "max.message.bytes": "1048588"})
        ])
    finally:
        await admin.close()
    with pytest.raises(TopicMismatch) as refused:
        await ensure_topics(bootstrap, topics.specs([]))
    assert (
        f"topic {topics.received} has max.message.bytes=1048588 but the size rule needs "
        f"{BROKER_MESSAGE_BYTES}"
    ) in str(refused.value)
    assert f"--add-config max.message.bytes={BROKER_MESSAGE_BYTES}" in str(refused.value)
