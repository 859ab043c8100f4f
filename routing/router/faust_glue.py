"""Everything the router needs of faust beyond its public API, in one place.

faust-streaming keeps the router's group membership, Tables, changelogs and recovery. The
batch pump reads the inputs with its own consumer and writes the Tables itself, which
faust offers no extension point for, so a few of faust's internals are used. They are
all here, each with why, and nowhere else in the code:

* the stores' data (``Table.data``, and the memory store's inner dict): the pump reads and
  writes a Table outside a faust stream event;
* the RocksDB store's ``_db_for_partition``, ``_encode_key``, ``_encode_value`` and
  ``_key_index``: a RocksDB write takes its partition from "the current event", and
  batch-mode records are not faust events, so the write names its partition explicitly;
  its ``_dbs``: a read looks in the key's partition first (:func:`get_in_partition`),
  where faust, without an event, would find the partition through an LRU index of 1,000
  keys and, on a miss, search every partition;
* ``Store.set_persisted_offset``: what faust's own changelog send records;
* the changelog record format (JSON key and value, null value deletes), written by the
  router's producer: faust's recovery must read it back (a test replays our records
  through faust's own ``apply_changelog_batch``);
* ``app.assignor.assigned_actives()``: which Table partitions are active on this worker;
* ``app.consumer.highwaters``, wrapped: Tansu's ListOffsets stops recovery short; with
  exactly-once, recovery stops at the last *committed* changelog record instead, and the
  partitions' transactional ids are fenced first (:func:`recover_committed_only`);
* faust's consumer thread's ``_create_worker_consumer``, wrapped so that its aiokafka
  consumer reads ``read_committed`` with exactly-once (faust does only when its own
  ``processing_guarantee`` is ``exactly_once``, which would make faust run transactions
  of its own);
* ``app.monitor``, set to faust's Prometheus monitor before start;
* the group membership of faust's consumer (its aiokafka coordinator's ``generation``
  and ``member_id``): the pump commits input offsets *as that member*, so that a router
  that lost its partitions cannot commit them (``routing.router.fencing``).

:data:`SUPPORTED` is the faust range these were checked against (``pyproject.toml``
pins the same); :func:`check_faust` refuses to build a router on another version, and
tests/unit/router/test_faust_glue.py fails loudly if any of the above changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson

from routing.broker.admin import partition_end_offsets
from routing.broker.transactions import committed_end_offsets

SUPPORTED = ((0, 15, 2), (0, 16, 0))
"""faust-streaming versions ``>= 0.15.2, < 0.16``: the ones this module was checked on."""


class UnsupportedFaust(RuntimeError):
    """The installed faust is outside the range whose internals this module knows."""


def faust_version() -> tuple[int, ...]:
    return tuple(int(part) for part in faust.__version__.split(".")[:3])


def check_faust() -> None:
    """Refuse a faust version whose internals were not checked (see the module doc)."""
    low, high = SUPPORTED
    if not low <= faust_version() < high:
        raise UnsupportedFaust(
            f"faust-streaming {faust.__version__} is not supported by the router "
            f"(needs >= {'.'.join(map(str, low))}, < {'.'.join(map(str, high))}): its "
            "internals used by routing/router/faust_glue.py may have changed"
        )


def store_of(table: Any) -> MutableMapping[Any, Any]:
    """A Table's storage as a mapping: the memory store's dict, or the store itself."""
    store = table.data
    inner = getattr(store, "data", None)
    if isinstance(inner, dict):
        return inner
    return cast(MutableMapping[Any, Any], store)


def put_in_partition(store: MutableMapping[Any, Any], key: str, value: Any, partition: int) -> None:
    """Write ``key`` into ``partition``'s part of the store.

    faust's RocksDB store takes a write's partition from the current stream event and
    asserts that there is one (``Store._set``); batch-mode records are not faust events,
    so the write goes to the partition's database explicitly: where faust's own setter,
    and its changelog recovery, put it.
    """
    for_partition = getattr(store, "_db_for_partition", None)
    if for_partition is None:  # the memory store's dict
        store[key] = value
        return
    faust_store: Any = store
    raw_key = faust_store._encode_key(key)
    for_partition(partition).put(raw_key, faust_store._encode_value(value))
    faust_store._key_index[raw_key] = partition


def get_in_partition(store: MutableMapping[Any, Any], key: str, partition: int) -> Any:
    """The value of ``key``, looked up in ``partition``'s part of the store first.

    Without a current stream event, faust's RocksDB store finds a key's partition through
    an LRU index of 1,000 keys (``table_key_index_size``), and on a miss asks every
    partition's bloom filter: about 60 % of a read's cost in the router's profile. The
    router knows the partition (the key's, as every write put it there); a key that is not
    there (an unknown IBAN, a state read off its key's partition) is looked up faust's way.
    The value is JSON whoever wrote it (faust's recovery stores the changelog record's
    bytes, which the router encoded with orjson): it is decoded with orjson, not through
    faust's serializer registry, which cost twice the RocksDB read itself.
    """
    dbs = getattr(store, "_dbs", None)
    if dbs is None:  # the memory store's dict
        return store.get(key)
    db = dbs.get(partition)
    if db is not None:
        faust_store: Any = store
        raw = db.get(faust_store._encode_key(key))
        if raw is not None:
            return orjson.loads(raw)
    return store.get(key)


def changelog_topic(table: Any) -> str:
    return str(table.changelog_topic.get_topic_name())


def set_persisted_offset(table: Any, tp: Any, offset: int) -> None:
    """Record how far the Table's changelog is durable (what faust's own send does)."""
    table.data.set_persisted_offset(tp, offset)


def active_partitions(app: faust.App, changelog: str) -> frozenset[int]:
    """The partition numbers of ``changelog`` that faust made active on this worker."""
    return frozenset(
        tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog
    )


def attach_monitor(app: faust.App, monitor: Any) -> None:
    """Make ``monitor`` the app's monitor; faust adds it to its sensors at start."""
    target: Any = app
    target.monitor = monitor


def use_true_highwaters(app: faust.App, bootstrap_servers: str) -> None:
    """Make faust's table recovery read each changelog to its real end.

    faust recovers a Table by reading its changelog up to the highwaters its consumer
    reports, which come from ListOffsets. Tansu answers ListOffsets with the offset after
    the *first* record of the partition's last record batch, so recovery stopped short of
    the last batch's other records: IBAN states and held entries were missing after a
    restart, and their statements were held as unknown for good (seen in the SIGKILL
    test). ``routing.broker.partition_end_offsets`` reads the true end from a Fetch; on
    Kafka both agree and this costs one small fetch per partition, at recovery only.
    """
    consumer: Any = app.consumer
    listed_highwaters = consumer.highwaters

    async def highwaters(*partitions: Any) -> dict[Any, int]:
        listed = await listed_highwaters(*partitions)
        if not partitions:
            return dict(listed)
        true = await partition_end_offsets(bootstrap_servers, partitions)
        return {
            tp: max(int(listed.get(tp) or 0), true[(tp.topic, tp.partition)]) for tp in partitions
        }

    consumer.highwaters = highwaters


def recover_committed_only(
    app: faust.App,
    bootstrap_servers: str,
    fence: Callable[[frozenset[int]], Awaitable[None]],
) -> None:
    """Make faust's table recovery exactly-once: fenced first, committed records only.

    * faust's consumer reads ``read_committed``: the changelog records of an aborted
      transaction (a router killed mid-step) are never recovered.
    * Before recovery reads an *active* changelog partition's end, ``fence`` is awaited
      with the active partition numbers: the router takes the partitions' transactional
      ids (``init_transactions``), which aborts a previous owner's open transaction and
      forbids it to commit one later. Only then is "the end" final.
    * The end is the offset after the last committed record (``committed_end_offsets``),
      not the high watermark: a transactional partition ends with a commit marker that a
      reader never gets, so faust (which waits for "high watermark - 1" unless its own
      ``processing_guarantee`` is exactly_once) would wait for ever.

    Standby partitions are not fenced (their owner runs elsewhere), only read committed.
    """
    consumer: Any = app.consumer
    thread: Any = consumer._thread
    create_worker_consumer = thread._create_worker_consumer

    def create_read_committed(transport: Any) -> Any:
        worker = create_worker_consumer(transport)
        worker._isolation_level = "read_committed"
        return worker

    thread._create_worker_consumer = create_read_committed
    listed_highwaters = consumer.highwaters

    async def highwaters(*partitions: Any) -> dict[Any, int]:
        if not partitions:
            return dict(await listed_highwaters(*partitions))
        actives = set(app.assignor.assigned_actives())
        await fence(frozenset(tp.partition for tp in partitions if tp in actives))
        ends = await committed_end_offsets(
            bootstrap_servers, [(tp.topic, tp.partition) for tp in partitions]
        )
        return {tp: ends[(tp.topic, tp.partition)] for tp in partitions}

    consumer.highwaters = highwaters


@dataclass(frozen=True, slots=True)
class Membership:
    """This worker's membership of faust's consumer group, as of one assignment."""

    group_id: str
    generation: int
    member_id: str


def membership(app: faust.App) -> Membership | None:
    """faust's consumer's current group generation and member id (None: not a member).

    Read from faust's aiokafka consumer, which lives in faust's consumer thread: two plain
    attributes, read together, once per assignment.
    """
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", None)
    member_id = getattr(coordinator, "member_id", None)
    if not isinstance(generation, int) or generation < 0 or not member_id:
        return None
    return Membership(str(app.conf.id), generation, str(member_id))
