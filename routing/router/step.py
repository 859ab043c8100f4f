"""One routing step made durable: the outputs, then the Tables' changelog records.

:class:`Stepper` is the one place where records are routed and sent. It needs only the
Tables (with their queue of changelog records) and a sink, so the unit tests drive it,
and :class:`~routing.router.core.RouterCore` through it, with in-memory fakes
(``tests.unit.router.dict_tables.DictTables``, ``MemorySink``), without faust.

It is also where the transactions go on Kafka with ``KAFKA_EXACTLY_ONCE``:
:meth:`Stepper.run_transaction` runs one input partition's step as one transaction of that
partition's producer (``routing.router.transactions`` says why per partition): routed
outputs, changelog records and input offsets commit together, or are aborted together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import TopicPartition

from routing.router.core import TableAccess
from routing.router.emit import Out
from routing.router.sink import Sink
from routing.router.transactions import PartitionProducers


class RouterCrashed(RuntimeError):
    """The router stopped on an error it must not swallow (a send or a commit failed)."""


class ChangelogTables(TableAccess, Protocol):
    """The Tables, plus the changelog records their writes queued."""

    def take_changelog(self) -> list[Out]: ...

    def changelog_persisted(self, acks: Iterable[Any]) -> None: ...

    def count_changelog(self, changelog: Iterable[Out]) -> None: ...


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


async def _acked(futures: list[Any]) -> None:
    """Wait for every ack (raising the first failure); no suspension if all are in."""
    if all(future.done() for future in futures):
        for future in futures:
            future.result()
    else:
        await asyncio.gather(*futures)


@dataclass(frozen=True, slots=True)
class Issued:
    """A step whose records are issued: its changelog records and the acks to await."""

    changelog: list[Out]
    changelog_acks: list[Any]
    pending: list[Any]


class Stepper:
    """Runs routing steps under one lock and makes their records durable, in order."""

    def __init__(
        self,
        tables: ChangelogTables,
        sink: Callable[[], Sink],
        transactions: PartitionProducers | None = None,
    ) -> None:
        self.tables = tables
        self._get_sink = sink
        self.transactions = transactions
        self.lock = asyncio.Lock()
        self.fatal_error: BaseException | None = None

    async def run_step(self, step: Callable[[str], list[Out]]) -> None:
        """Route under the lock, make the outputs durable, then the Table writes.

        :meth:`issue` then :meth:`settle`, back to back. The batch pump calls the two
        apart, so that the next batch is routed while this one's acknowledgements are
        awaited, and commits the batch's offsets itself (``routing.router.pump``); the
        steps that consume no input (a sweep, the rest of a release) run here, in one piece.
        """
        await self.settle(await self.issue(step))

    async def issue(self, step: Callable[[str], list[Out]]) -> Issued:
        """Route under the lock and issue the step's records; return what to settle.

        The lock makes "read/update the Tables, decide, issue the sends" atomic with respect
        to any other step, which keeps per-IBAN order across a release.

        The routed outputs and the Tables' changelog records go through our sink's batched
        producer, in two rounds when it matters, because nothing orders deliveries across
        partitions. A changelog *tombstone* may state that outputs exist: a release deletes
        the held entries it routed. Were the tombstone durable before the released
        statements, a crash in between would lose them for good: after a restart the held
        entry is gone, the replayed ``iban.state`` record is a stale version with nothing
        held, and the sweep finds nothing. So when a step deletes from a Table, its outputs
        are acknowledged first (under the lock, so no later step's changelog record can
        overtake this one's), and only then are the changelog records issued. A crash in
        between leaves the Tables as before the step, and the input, not yet committed, is
        processed again: duplicates, never a loss.

        A step that only *writes* values (a statement held, a state applied) sends outputs
        and changelog together, in one round: whichever becomes durable first, the replay
        of the uncommitted input finds either nothing (and does it all again) or the
        statement already held (and re-emits only its audit event) or the state already
        applied (a stale version, and the statements after it in the batch are routed by
        it, as the first time). Once a step failed, no other one runs: the in-memory Tables
        may be ahead of their changelogs.

        Records are issued in step order, and the producer keeps that order per
        partition, so a step issued while an earlier one is unsettled cannot overtake it.
        """
        async with self.lock:
            if self.fatal_error is not None:
                raise RouterCrashed(f"router stopping: {self.fatal_error!r}")
            sink = self._get_sink()
            outs = step(utc_now())
            changelog = self.tables.take_changelog()
            if any(record.value is None for record in changelog):  # a tombstone: ordered
                pending: list[Any] = await sink.send_many(outs) if outs else []
                await _acked(pending)
                changelog_acks = await sink.send_many(changelog)
            else:
                records = [*outs, *changelog]
                pending = changelog_acks = await sink.send_many(records) if records else []
        return Issued(changelog, changelog_acks, pending)

    async def settle(self, issued: Issued) -> None:
        """Await every ack of an issued step (raising the first failure), then record
        its changelog records as persisted. Its input may be committed after this."""
        if issued.changelog:
            await _acked(issued.changelog_acks)
            # The acks of whole record batches; those of routed topics are ignored there.
            self.tables.changelog_persisted([ack.result() for ack in issued.changelog_acks])
            self.tables.count_changelog(issued.changelog)
        await _acked(issued.pending)

    async def run_transaction(
        self,
        step: Callable[[str], list[Out]],
        partition: int,
        offsets: dict[TopicPartition, int] | None,
        group_id: str,
    ) -> None:
        """Route one input partition's records as one transaction of its producer.

        Outputs and changelog records go in one round: nothing of the transaction is
        visible to a ``read_committed`` reader (the adapters, faust's recovery, the pump
        itself) before the commit, so a tombstone can never be seen without the released
        statements. The input ``offsets`` join the transaction (to faust's group), so a
        replay after a crash starts exactly after the last committed step. Any failure
        aborts the transaction and is fatal, as in :meth:`run_step` (the in-memory Tables
        are then ahead of their changelog); a router whose producer was fenced by a new
        owner of the partition stops on ``ProducerFenced`` without having committed.
        """
        transactions = self.transactions
        if transactions is None:
            raise RuntimeError("run_transaction needs the router's transactional producers")
        if partition not in transactions.partitions:
            await transactions.fence([partition])
        sink = transactions.sink(partition)
        producer = sink.producer
        async with transactions.lock(partition):
            begun = False
            try:
                async with self.lock:
                    if self.fatal_error is not None:
                        raise RouterCrashed(f"router stopping: {self.fatal_error!r}")
                    await producer.begin_transaction()
                    begun = True
                    outs = step(utc_now())
                    changelog = self.tables.take_changelog()
                    records = [*outs, *changelog]
                    acks = await sink.send_many(records) if records else []
                await _acked(acks)
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
            except BaseException:
                if begun:
                    with contextlib.suppress(Exception):
                        await producer.abort_transaction()
                raise
        if changelog:
            # Only once committed: an aborted changelog record is never recovered.
            self.tables.changelog_persisted([ack.result() for ack in acks])
            self.tables.count_changelog(changelog)
