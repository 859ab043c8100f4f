"""Topic administration: create the catalogue's topics exactly, and inspect them safely.

Why this is stricter than "create if missing":

* ``statements.received`` and ``iban.state`` must have the same partition count (DESIGN §3:
  the router's IBAN-state table is co-partitioned with the statements, so a statement and
  its IBAN's state are in the same partition number). A topic that already exists with
  another count, typically one a client auto-created, is an error, never "fine".
* Naming an unknown topic in a metadata request makes the broker auto-create it (Tansu does
  so with 4 partitions). So every lookup here asks for *all* topics' metadata and filters,
  which cannot create anything.
* Tansu accepts any ``cleanup.policy`` value, partition count or replication factor without
  validation (measured: ``cleanup.policy=bogus``, 0 partitions and replication factor 3 on
  one broker are all "created"), so the inputs are checked here before they are sent, and
  the result is checked after creation.

Every topic is created with the size rule's ``max.message.bytes`` (``events.limits``): 2 MiB
where Kafka's default is about 1 MB, so a statement at the limit, in base64 with its
envelope, is accepted on every topic it travels. Both brokers accept the setting; Kafka
enforces it, Tansu stores and reports it without enforcing any size. An existing topic
that reports a smaller one is refused, with the command that raises it.

Tansu stores and reports ``cleanup.policy`` (``compact`` for ``iban.state``) but its memory
store never compacts; a real Kafka does. Existing topics are checked for a cleanup policy
that would lose data: ``iban.state`` without ``compact`` eventually forgets IBAN states,
and a compacted statements topic keeps only the last statement per IBAN.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code
from aiokafka.structs import TopicPartition

from events.limits import BROKER_MESSAGE_BYTES, TOPIC_CONFIGS
from events.topics import TopicSpec
from routing.broker.errors import BrokerError, TopicMismatch, UnknownTopic, kafka_errors
from routing.broker.topic_reader import assigned_consumer, true_end_offsets

__all__ = [
    "describe_cleanup_policies",
    "describe_topics",
    "end_offsets",
    "ensure_topics",
    "partition_end_offsets",
    "require_topics",
]

_TOPIC_ALREADY_EXISTS = 36
_DEFAULT_REQUEST_TIMEOUT_MS = 30_000
_METADATA_SETTLE_ATTEMPTS = 20
_METADATA_SETTLE_DELAY_S = 0.1


@asynccontextmanager
async def _admin(
    bootstrap_servers: str, action: str, request_timeout_ms: int
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client whose errors read as BrokerError; always closed."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="statement-router-admin",
        request_timeout_ms=request_timeout_ms,
    )
    try:
        async with kafka_errors(action, bootstrap_servers):
            await admin.start()
            yield admin
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, bootstrap_servers: str) -> dict[str, int]:
    # topics=None asks for every topic: a request naming topics would auto-create them.
    topics: list[dict[str, Any]] = await admin.describe_topics(None)
    counts: dict[str, int] = {}
    for topic in topics:
        if topic["error_code"]:
            error = for_code(topic["error_code"])
            raise BrokerError(
                f"Kafka at {bootstrap_servers} reports topic {topic['topic']} as broken: "
                f"{error.__name__} ({error.description})"
            )
        counts[str(topic["topic"])] = len(topic["partitions"])
    return counts


async def describe_topics(
    bootstrap_servers: str,
    names: Iterable[str] | None = None,
    *,
    request_timeout_ms: int = _DEFAULT_REQUEST_TIMEOUT_MS,
) -> dict[str, int]:
    """Partition count per existing topic, for ``names`` (or every topic when None).

    Names that do not exist are simply absent from the result, and are not created.
    """
    async with _admin(bootstrap_servers, "describing topics", request_timeout_ms) as admin:
        counts = await _partition_counts(admin, bootstrap_servers)
    if names is None:
        return counts
    return {name: counts[name] for name in names if name in counts}


async def require_topics(
    bootstrap_servers: str,
    names: Sequence[str],
    *,
    request_timeout_ms: int = _DEFAULT_REQUEST_TIMEOUT_MS,
) -> dict[str, int]:
    """Like ``describe_topics`` but every name must exist (UnknownTopic otherwise)."""
    counts = await describe_topics(bootstrap_servers, names, request_timeout_ms=request_timeout_ms)
    for name in names:
        if name not in counts:
            raise UnknownTopic(name, bootstrap_servers)
    return counts


_CHECKED_CONFIGS = ("cleanup.policy", "max.message.bytes")


async def _cleanup_policies(
    admin: AIOKafkaAdminClient, names: Sequence[str], bootstrap_servers: str
) -> dict[str, str]:
    configs = await _topic_configs(admin, names, bootstrap_servers)
    return {
        name: found["cleanup.policy"]
        for name, found in configs.items()
        if "cleanup.policy" in found
    }


async def _topic_configs(
    admin: AIOKafkaAdminClient, names: Sequence[str], bootstrap_servers: str
) -> dict[str, dict[str, str]]:
    """The checked configs (``_CHECKED_CONFIGS``) of each topic, as the broker reports them."""
    if not names:
        return {}
    # configs=None asks for every config: Tansu 0.6 cannot decode a DescribeConfigs request
    # that names the configs it wants (it drops the connection, "StringWithoutLength").
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs=None) for name in names]
    responses = await admin.describe_configs(resources)
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, error_message, _type, name, entries, *_ in response.resources:
            if error_code:
                raise BrokerError(
                    f"Kafka at {bootstrap_servers} cannot describe the configuration of topic "
                    f"{name}: {error_message or for_code(error_code).__name__}"
                )
            found = configs.setdefault(str(name), {})
            for entry in entries:
                if entry[0] in _CHECKED_CONFIGS and entry[1] is not None:
                    found[str(entry[0])] = str(entry[1])
    return configs


async def describe_cleanup_policies(
    bootstrap_servers: str,
    names: Sequence[str],
    *,
    request_timeout_ms: int = _DEFAULT_REQUEST_TIMEOUT_MS,
) -> dict[str, str]:
    """The ``cleanup.policy`` of each named topic, as the broker reports it.

    Call it for existing topics only (see ``describe_topics``); topics the broker reports
    without a cleanup policy are absent from the result.
    """
    async with _admin(bootstrap_servers, "describing topic configs", request_timeout_ms) as admin:
        return await _cleanup_policies(admin, list(names), bootstrap_servers)


def _check_specs(specs: Sequence[TopicSpec], replication_factor: int) -> list[TopicSpec]:
    """Reject what the broker would wrongly accept; drop exact duplicates."""
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be at least 1, not {replication_factor}")
    unique: dict[str, TopicSpec] = {}
    for spec in specs:
        if spec.partitions < 1:
            raise ValueError(f"topic {spec.name}: partitions must be at least 1")
        if spec.cleanup not in ("delete", "compact"):
            raise ValueError(f"topic {spec.name}: unknown cleanup policy {spec.cleanup!r}")
        seen = unique.get(spec.name)
        if seen is not None and (seen.partitions, seen.cleanup) != (spec.partitions, spec.cleanup):
            raise ValueError(f"topic {spec.name} is listed twice with different settings")
        unique.setdefault(spec.name, spec)
    return list(unique.values())


def _partition_mismatch(spec: TopicSpec, actual: int) -> str:
    return f"topic {spec.name} has {actual} partitions but the catalogue needs {spec.partitions}"


def _cleanup_mismatch(spec: TopicSpec, actual: str) -> str | None:
    policies = {part.strip() for part in actual.split(",") if part.strip()}
    if spec.cleanup == "compact" and "compact" not in policies:
        return (
            f"topic {spec.name} has cleanup.policy={actual} but needs compact: without "
            "compaction old IBAN states are deleted by retention and the router forgets them"
        )
    if spec.cleanup == "delete" and "compact" in policies:
        return (
            f"topic {spec.name} has cleanup.policy={actual} but needs delete: compaction "
            "would keep only the last record per key and lose statements"
        )
    return None


_CO_PARTITIONING = (
    "Every IBAN-keyed topic must have the catalogue's partition count: the router keeps "
    "iban.state in a table co-partitioned with statements.received, so both must have the "
    "same number of partitions or statements meet the wrong IBAN state. A wrong count "
    "usually means a client auto-created the topic before it was pre-created. Delete and "
    "recreate the topic on an empty cluster, or set topic_partitions to the existing count."
)


async def ensure_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    replication_factor: int = 1,
    *,
    request_timeout_ms: int = _DEFAULT_REQUEST_TIMEOUT_MS,
) -> list[str]:
    """Create the missing topics with their exact partition count and cleanup policy.

    Idempotent: topics that already exist with the right partition count and a compatible
    cleanup policy are left alone. Any mismatch raises TopicMismatch *before* anything is
    created, so a wrong cluster is never half-initialised. A concurrent creator (another
    process running ``ensure_topics``) is tolerated: "already exists" answers are checked
    like existing topics. Returns the names created by this call, in ``specs`` order.
    """
    wanted = _check_specs(specs, replication_factor)
    async with _admin(bootstrap_servers, "creating topics", request_timeout_ms) as admin:
        existing = await _partition_counts(admin, bootstrap_servers)
        await _verify_existing(
            admin, bootstrap_servers, [s for s in wanted if s.name in existing], existing
        )
        missing = [s for s in wanted if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    s.partitions,
                    replication_factor,
                    topic_configs={"cleanup.policy": s.cleanup, **TOPIC_CONFIGS},
                )
                for s in missing
            ],
            timeout_ms=request_timeout_ms,
        )
        created: set[str] = set()
        raced: set[str] = set()
        failures: list[str] = []
        for name, error_code, *rest in response.topic_errors:
            if error_code == 0:
                created.add(name)
            elif error_code == _TOPIC_ALREADY_EXISTS:
                raced.add(name)
            else:
                error = for_code(error_code)
                detail = rest[0] if rest and rest[0] else error.description
                failures.append(f"{name}: {error.__name__} ({detail})")
        if failures:
            raise BrokerError(
                f"Kafka at {bootstrap_servers} refused to create topics: " + "; ".join(failures)
            )
        # Check the result: the broker validates little, and a racing creator may differ.
        done = [s for s in missing if s.name in created | raced]
        after = await _partition_counts(admin, bootstrap_servers)
        for _ in range(_METADATA_SETTLE_ATTEMPTS):
            if all(s.name in after for s in done):
                break
            # A multi-broker Kafka may answer metadata before the creation reached it.
            await asyncio.sleep(_METADATA_SETTLE_DELAY_S)
            after = await _partition_counts(admin, bootstrap_servers)
        await _verify_existing(admin, bootstrap_servers, done, after)
    return [s.name for s in missing if s.name in created]


async def _verify_existing(
    admin: AIOKafkaAdminClient,
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    counts: dict[str, int],
) -> None:
    problems: list[str] = []
    for spec in specs:
        actual = counts.get(spec.name)
        if actual is None:
            problems.append(f"topic {spec.name} was created but the broker does not list it")
        elif actual != spec.partitions:
            problems.append(_partition_mismatch(spec, actual))
    if problems:
        raise TopicMismatch("; ".join(problems) + ". " + _CO_PARTITIONING)
    configs = await _topic_configs(admin, [s.name for s in specs], bootstrap_servers)
    for spec in specs:
        found = configs.get(spec.name, {})
        policy = found.get("cleanup.policy")
        mismatch = _cleanup_mismatch(spec, policy) if policy is not None else None
        if mismatch:
            problems.append(mismatch)
        size = found.get("max.message.bytes")
        if size is not None and size.isdigit() and int(size) < BROKER_MESSAGE_BYTES:
            problems.append(_size_mismatch(spec, int(size)))
    if problems:
        raise TopicMismatch("; ".join(problems))


def _size_mismatch(spec: TopicSpec, actual: int) -> str:
    return (
        f"topic {spec.name} has max.message.bytes={actual} but the size rule needs "
        f"{BROKER_MESSAGE_BYTES} (docs/operations.md#limits): a statement at the limit would "
        "be refused by the broker. Raise it with kafka-configs.sh --bootstrap-server … --alter "
        f"--entity-type topics --entity-name {spec.name} "
        f"--add-config max.message.bytes={BROKER_MESSAGE_BYTES}"
    )


async def end_offsets(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    request_timeout_ms: int = _DEFAULT_REQUEST_TIMEOUT_MS,
) -> dict[TopicPartition, int]:
    """The offset after the last record, per partition of each topic (all must exist).

    Correct on Tansu too, whose ListOffsets answer is wrong after batched sends (see
    ``topic_reader.true_end_offsets``); use this, not ``consumer.end_offsets``, for lag.
    ``TopicPartition`` is a named tuple, so ``result[("topic", 0)]`` works too.
    """
    counts = await require_topics(bootstrap_servers, topics, request_timeout_ms=request_timeout_ms)
    action = "reading end offsets"
    deadline = asyncio.get_running_loop().time() + request_timeout_ms / 1000
    reader = assigned_consumer(bootstrap_servers, counts, action=action)
    async with reader as (consumer, partitions), kafka_errors(action, bootstrap_servers):
        return await true_end_offsets(
            consumer, partitions, deadline=deadline, what=", ".join(topics)
        )


async def partition_end_offsets(
    bootstrap_servers: str,
    partitions: Iterable[tuple[str, int]],
    *,
    request_timeout_ms: int = _DEFAULT_REQUEST_TIMEOUT_MS,
) -> dict[TopicPartition, int]:
    """:func:`end_offsets` for some partitions (any ``(topic, partition)`` tuples)."""
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    ends = await end_offsets(
        bootstrap_servers,
        sorted({tp.topic for tp in wanted}),
        request_timeout_ms=request_timeout_ms,
    )
    return {tp: ends[tp] for tp in wanted}
