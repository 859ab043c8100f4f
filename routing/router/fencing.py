"""Input-offset commits that a router which lost its partitions cannot make.

The pump reads with its own, manually assigned consumer, so a plain ``commit()`` carries
no group generation: a "zombie" router (a long GC pause, a network cut, SIGSTOP) that
faust's group has already replaced could still commit the partitions another router now
owns, moving their offsets under it. :func:`commit_as_member` commits instead as faust's
group member, with the generation and member id of the assignment the batch was read
under. After a rebalance the broker refuses those (``IllegalGeneration``,
``UnknownMemberId``, ``RebalanceInProgress``: on Kafka and on the embedded Tansu alike),
and :class:`CommitFenced` tells the pump to drop its partitions and wait for faust's next
assignment. The input offsets therefore live in faust's group (the app id,
``<prefix>.router``).

This needs aiokafka's client (``consumer._client``) to send the OffsetCommit request
itself: aiokafka's public ``commit()`` takes the generation from the consumer's own
group membership, which the pump's consumer does not have.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import for_code
from aiokafka.protocol.commit import OffsetCommitRequest

from routing.router.faust_glue import Membership

_GROUP_COORDINATOR = 0
# Error codes meaning "you are no longer this group's member of that generation".
_FENCED = frozenset({22, 25, 27})  # IllegalGeneration, UnknownMemberId, RebalanceInProgress


class CommitFenced(Exception):
    """The broker refused a commit: this worker's assignment is no longer current."""


class CommitFailed(Exception):
    """A commit failed for another reason (the coordinator moved, the broker is down)."""


async def commit_as_member(
    consumer: AIOKafkaConsumer, member: Membership, offsets: dict[TopicPartition, int]
) -> None:
    """Commit ``offsets`` to ``member.group_id`` as that member of that generation."""
    by_topic: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for tp, offset in offsets.items():
        by_topic[tp.topic].append((tp.partition, offset, ""))
    client: Any = consumer._client
    node = await client.coordinator_lookup(_GROUP_COORDINATOR, member.group_id)
    request = OffsetCommitRequest(
        member.group_id,
        member.generation,
        member.member_id,
        OffsetCommitRequest.DEFAULT_RETENTION_TIME,
        list(by_topic.items()),
    )
    response = await client.send(node, request)
    codes = {code for _, partitions in response.topics for _, code in partitions if code}
    if not codes:
        return
    names = ", ".join(sorted(for_code(code).__name__ for code in codes))
    if codes & _FENCED:
        raise CommitFenced(
            f"commit refused for generation {member.generation} of {member.group_id}: {names}"
        )
    raise CommitFailed(f"commit to {member.group_id} failed: {names}")
