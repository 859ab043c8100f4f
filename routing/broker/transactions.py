"""What exactly-once needs of the broker: whether it has transactions, and where a
partition's *committed* data ends.

* :func:`broker_has_transactions` asks the broker for a producer id (``InitProducerId``
  without a transactional id, which fences nobody). Apache Kafka answers with one; the
  embedded Tansu broker advertises the transaction APIs in ``ApiVersions`` but answers
  ``InitProducerId`` with an error, so asking is the only reliable test.
* :func:`committed_end_offsets` is the offset after the last record a ``read_committed``
  reader gets from a partition. A transactional partition ends with a commit or abort
  *marker*, which occupies an offset but is never delivered, so a reader that waits for
  "the high watermark minus one" (faust's table recovery does) would wait for ever. This
  reads backwards from the end, ``read_committed``, in growing windows, until it finds a
  record (or the partition's start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, NoError, for_code
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.structs import TopicPartition

from routing.broker.admin import require_topics
from routing.broker.errors import COORDINATOR_NOT_READY, ReadTimeout, kafka_errors
from routing.broker.topic_reader import assigned_consumer

__all__ = ["broker_has_transactions", "committed_end_offsets"]

_FIRST_WINDOW = 64


async def broker_has_transactions(bootstrap_servers: str, *, timeout: float = 60.0) -> bool:  # noqa: ASYNC109
    """Whether the broker hands out producer ids (idempotence and transactions).

    A Kafka that has just started answers "coordinator not available" until its
    transaction-state topic exists: that is retried (up to ``timeout``), not a "no".
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout(timeout):
            await client.bootstrap()
            while True:
                node = client.get_random_node()
                response = await client.send(node, InitProducerIdRequest(None, 60_000))
                error = for_code(response.error_code)
                if error is NoError:
                    return True
                if error not in COORDINATOR_NOT_READY or loop.time() > deadline:
                    return False
                await asyncio.sleep(0.5)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()


async def committed_end_offsets(
    bootstrap_servers: str,
    partitions: Iterable[tuple[str, int]],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - bounds the whole read, named in ReadTimeout
) -> dict[TopicPartition, int]:
    """Per partition, the offset after its last record visible ``read_committed`` (0: none).

    Waits for transactions still open on the partitions to end (a new owner's
    ``init_transactions`` aborts a dead one's at once; otherwise the broker does after the
    transaction timeout).
    """
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not wanted:
        return {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    counts = await require_topics(bootstrap_servers, sorted({tp.topic for tp in wanted}))
    action = "finding the committed end of changelog partitions"
    reader = assigned_consumer(
        bootstrap_servers, counts, action=action, isolation_level="read_committed"
    )
    found: dict[TopicPartition, int] = {}
    async with reader as (consumer, _), kafka_errors(action, bootstrap_servers):
        consumer.assign(wanted)
        starts = await consumer.beginning_offsets(wanted)
        ends = await consumer.end_offsets(wanted)  # the last stable offsets, read_committed
        window = {tp: _FIRST_WINDOW for tp in wanted}
        pending = {tp for tp in wanted if ends[tp] > starts[tp]}
        found = {tp: 0 for tp in wanted if tp not in pending}
        while pending:
            for tp in pending:
                consumer.seek(tp, max(starts[tp], ends[tp] - window[tp]))
            last: dict[TopicPartition, int] = {}
            reading = set(pending)
            while reading:
                if loop.time() > deadline:
                    raise ReadTimeout(f"{action} did not finish within {timeout:g}s")
                batch = await consumer.getmany(*reading, timeout_ms=200)
                for tp, records in batch.items():
                    if records:
                        last[tp] = max(last.get(tp, -1), records[-1].offset)
                for tp in list(reading):
                    if await consumer.position(tp) >= ends[tp]:
                        reading.discard(tp)
            for tp in list(pending):
                if tp in last:
                    found[tp] = last[tp] + 1
                    pending.discard(tp)
                elif ends[tp] - window[tp] <= starts[tp]:
                    found[tp] = 0  # only aborted records (or markers) in the partition
                    pending.discard(tp)
                else:
                    window[tp] *= 16
    return found
