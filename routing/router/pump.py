"""The batch pump: the router's hot path, off faust's per-event machinery.

faust costs about 150 µs per event on this machine (DESIGN §8), which caps a plain agent
far below the 10,000 statements/s target. In ``batch`` mode faust keeps what it does well,
group membership, partition assignment, the two Tables with their changelogs, recovery
and standbys, while this pump reads *both* input topics, ``iban.state`` and
``statements.received``, in batches with its own aiokafka consumer and routes each batch
in one call.

Reading ``iban.state`` here too, and not in a faust agent, gives both topics one reader
and one commit rule, takes faust's per-event cost off the state updates as well (a
deployment or a backfill publishes them by the hundred thousand), and lets the pump apply
states before the statements that need them.

How it keeps DESIGN §5:

* **Co-partitioning.** The pump never joins a group. It follows faust: after each
  rebalance it reads exactly the ``iban.state`` and ``statements.received`` partitions
  whose numbers are the partitions of the Tables' changelogs that faust made *active* on
  this worker (faust's assignor co-partitions topics of equal partition count, and both
  changelogs have the input topics' count). Standby partitions are faust's business.
* **Tables first.** It starts reading only on ``app.on_rebalance_complete``, which faust
  sends once table recovery has finished, so nothing is routed against a half-recovered
  Table. It stops reading in ``app.on_partitions_revoked`` (which faust awaits *before*
  the group moves on): the batches in flight are finished, acknowledged and committed
  first, so the next owner starts exactly after them.
* **States before statements.** After an assignment, statements wait (their partitions
  are paused) until ``iban.state`` has been read up to its high watermark, so a backlog
  is routed against current states instead of being held as "unknown IBAN" and released
  a moment later. Within a batch, states are applied before statements. Neither is
  needed for correctness (a held statement is released when its state arrives), only for
  latency and churn.
* **Fenced commits.** Offsets of both topics are committed to faust's own consumer group
  (the app id), *as faust's member, with the generation of the assignment the batch was
  read under* (``routing.router.fencing``). A router that faust's group has replaced (a
  long pause) cannot commit the partitions another one now owns: the broker refuses, and
  the pump drops its partitions until faust assigns it again.
* **Exactly-once on Kafka** (``KAFKA_EXACTLY_ONCE``, a broker with transactions): each
  input partition's share of a batch is one transaction of that partition's producer,
  outputs, changelog records and input offsets together (``Stepper.run_transaction``;
  ``routing.router.transactions`` for the fencing). The pump reads ``read_committed``,
  so a forwarded statement of an aborted transaction is never routed. Otherwise:
* **At-least-once.** Offsets are committed only after every output of the
  batch is acknowledged by the broker *and* so are the Tables' changelog records of the
  batch; when the batch deletes from a Table, those are sent only once the outputs are
  acknowledged (see ``Stepper.issue``: a held entry's tombstone must never be durable
  before the released statements are). A crash before the commit replays the batch:
  duplicates are possible, losses are not; a replayed state is an old version, ignored,
  and still releases what it should. A failed send or commit is fatal: the pump stops
  without committing and the runner stops the worker. The acks and the commit of a batch
  are awaited by a task while the next batch is read and routed (at most one batch in
  flight, commits in batch order): on Kafka, where ``acks=all`` takes a round trip, the
  router would otherwise sit idle for it once per batch.
* **Order.** Within a batch, records are routed in partition order and their outputs are
  issued in that order under the router's lock, so a release and a new statement of the
  same IBAN can never interleave.
* **Releases in chunks.** A large release (an approved mandate with 10,000 statements
  held) is routed ``RouterCore.release_chunk`` statements per step: each step ends with
  the next chunk (``RouterCore.continue_releases``), and while a release is in progress
  the pump does not wait for records (a poll without timeout, and a step of its own
  when none came), so the other IBANs' statements are routed between the chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from events.topics import Topics
from routing.router.core import RouterCore
from routing.router.emit import Out
from routing.router.faust_glue import Membership
from routing.router.fencing import CommitFenced, commit_as_member
from routing.router.step import Issued

log = structlog.get_logger("routing.router.pump")

# While statements wait for iban.state to catch up after an assignment, they wait at most
# this long: catching up is an optimisation, never a reason to stop routing.
_STATE_CATCH_UP_LIMIT_S = 60.0


class PumpTables(Protocol):
    def reset_stores(self) -> None: ...


class PumpHost(Protocol):
    """What the pump needs of its router (``RouterApp``; a fake in the unit tests)."""

    @property
    def core(self) -> RouterCore: ...

    @property
    def topics(self) -> Topics: ...

    @property
    def tables(self) -> PumpTables: ...

    async def run_step(self, step: Callable[[str], list[Out]]) -> None: ...

    async def issue_step(self, step: Callable[[str], list[Out]]) -> Issued:
        """Route and issue one step's records (``Stepper.issue``)."""
        ...

    async def settle_step(self, issued: Issued) -> None:
        """Await an issued step's acks (``Stepper.settle``); raises the first failure."""
        ...

    @property
    def exactly_once(self) -> bool:
        """Whether each partition's step is one transaction (``run_transaction``)."""
        ...

    async def run_transaction(
        self,
        step: Callable[[str], list[Out]],
        partition: int,
        offsets: dict[TopicPartition, int] | None,
    ) -> None: ...

    async def fatal(self, exc: BaseException, where: str) -> None: ...

    def active_partitions(self) -> frozenset[int]: ...

    def membership(self) -> Membership | None:
        """The group membership to commit as (None: plain commits, for fakes)."""
        ...


class BatchPump:
    """Reads the assigned ``iban.state`` and ``statements.received`` partitions in batches."""

    def __init__(
        self,
        router: PumpHost,
        consumer: AIOKafkaConsumer,
        *,
        max_records: int = 2_000,
        poll_timeout_ms: int = 50,
    ) -> None:
        self._router = router
        self._consumer = consumer
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._assigned: frozenset[int] = frozenset()
        self._catching_up: dict[TopicPartition, None] = {}
        self._catch_up_deadline = 0.0
        self._ready = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._settling: asyncio.Task[bool] | None = None
        self._failed = False  # a batch's acks or commit failed: nothing more is routed
        self._stopping = False
        self._member: Membership | None = None
        self.commit_as_member = commit_as_member
        self.fenced = 0
        self.batches = 0
        self.records = 0
        self.first_read: float | None = None
        self.last_ack: float | None = None

    @property
    def assigned(self) -> frozenset[int]:
        return self._assigned

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="router-batch-pump")

    async def stop(self) -> None:
        """Finish the batch in flight (acks and commit), then stop reading."""
        self._stopping = True
        task = self._task
        if task is not None:
            async with self._batch_lock:
                task.cancel()
                await self._settled()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._task = None
        await self._consumer.stop()

    # --- following faust's assignment ----------------------------------------------------

    async def on_partitions_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """faust awaits this during a rebalance: finish the batch, commit, stop reading."""
        async with self._batch_lock:
            await self._settled()
            self._ready.clear()
            if self._assigned:
                log.info("router_partitions_released", partitions=sorted(self._assigned))
            self._assigned = frozenset()
            self._catching_up = {}
            self._consumer.assign([])
            # Whoever owns them next may change their states (a delete and a re-creation
            # at an old version, which the cache's version check cannot see).
            self._router.core.forget_cached_states()

    async def on_rebalance_complete(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Tables are recovered: read the input partitions matching the active ones."""
        router = self._router
        parts = router.active_partitions()
        async with self._batch_lock:
            await self._settled()
            if self._stopping or (parts == self._assigned and self._ready.is_set()):
                return
            self._assigned = parts
            self._member = router.membership()
            router.core.forget_cached_states()
            router.core.keep_held_counts(parts)
            router.tables.reset_stores()
            topics = router.topics
            states = [TopicPartition(topics.iban_state, p) for p in sorted(parts)]
            received = [TopicPartition(topics.received, p) for p in sorted(parts)]
            self._consumer.assign(states + received)
            if received:
                self._consumer.pause(*received)
            self._catching_up = dict.fromkeys(states)
            self._catch_up_deadline = asyncio.get_running_loop().time() + _STATE_CATCH_UP_LIMIT_S
            log.info("router_partitions_assigned", partitions=sorted(parts))
            if parts and router.exactly_once:
                for p in sorted(parts):
                    await router.run_transaction(self._sweep(p), p, None)
                self._ready.set()
            elif parts:
                await router.run_step(lambda now: router.core.sweep(set(parts), now))
                self._ready.set()

    def _sweep(self, partition: int) -> Callable[[str], list[Out]]:
        core = self._router.core
        return lambda now: core.sweep({partition}, now)

    async def _caught_up(self) -> bool:
        """Whether every assigned ``iban.state`` partition was read to its high watermark.

        Resumes the statements' partitions when it is, or when the time limit passed.
        """
        consumer = self._consumer
        for tp in list(self._catching_up):
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                del self._catching_up[tp]
        late = asyncio.get_running_loop().time() > self._catch_up_deadline
        if self._catching_up and not late:
            return False
        if late:
            log.warning("router_state_catch_up_timed_out", partitions=len(self._catching_up))
        self._catching_up = {}
        received = self._router.topics.received
        consumer.resume(*(tp for tp in consumer.paused() if tp.topic == received))
        # The Tables were just recovered or loaded: a million small objects that live as
        # long as the process. Left to the collector, every full collection walked them
        # all (33 full collections, 5.8 s, in the benchmark's run). Frozen, they are
        # never scanned; they are still freed by reference counting when replaced. The
        # collection first, so that no cyclic garbage of the recovery is frozen for good.
        gc.collect()
        gc.freeze()
        return True

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopping and not self._failed:
                await self._ready.wait()
                async with self._batch_lock:
                    if not self._ready.is_set():
                        continue
                    releasing = bool(self._router.core.releasing_partitions())
                    try:
                        batch = await self._consumer.getmany(
                            timeout_ms=0 if releasing else self._poll_timeout_ms,
                            max_records=self._max_records,
                        )
                    except KafkaError as exc:
                        if not exc.retriable:
                            raise
                        # Nothing was read, so nothing is lost by trying again (seen on
                        # Tansu: a transient NotLeaderForPartition while resetting offsets).
                        log.warning("router_fetch_retry", error=type(exc).__name__)
                        await asyncio.sleep(0.5)
                        continue
                    if batch or releasing:
                        await self._process(batch)
                    if self._catching_up:
                        await self._caught_up()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed send or commit: stop, commit nothing more
            await self._router.fatal(exc, "batch pump")

    async def _commit(self, offsets: dict[Any, int], member: Membership | None) -> bool:
        """Commit as faust's member of the assignment; False if the broker fenced us.

        ``member`` is the membership the batch was read under. Fenced, this worker's
        assignment is stale: its partitions are dropped (nothing more is read or
        committed) until faust's next ``on_rebalance_complete``. The batch just routed is
        read again by the partitions' owner: duplicates, never a loss. A batch read under
        an assignment that was dropped meanwhile is not committed either.
        """
        if member is not self._member:
            return False
        if member is None:
            await self._consumer.commit(offsets)
            return True
        try:
            await self.commit_as_member(self._consumer, member, offsets)
        except CommitFenced as exc:
            self.fenced += 1
            log.warning(
                "router_commit_fenced",
                partitions=sorted(self._assigned),
                generation=member.generation,
                detail=str(exc),
            )
            self._ready.clear()
            self._assigned = frozenset()
            self._catching_up = {}
            self._member = None
            self._consumer.assign([])
            return False
        return True

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        if self._failed:
            return  # a batch's acks or commit failed: the worker is stopping
        if self.first_read is None:
            self.first_read = asyncio.get_running_loop().time()
        if self._router.exactly_once:
            await self._process_in_transactions(batch)
            self._count(batch)
        else:
            await self._process_at_least_once(batch)

    def _count(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Count a batch whose outputs are acknowledged (what the benchmarks read)."""
        self.batches += 1
        received = self._router.topics.received
        self.records += sum(len(records) for tp, records in batch.items() if tp.topic == received)
        self.last_ack = asyncio.get_running_loop().time()

    async def _process_in_transactions(
        self, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        """One transaction per input partition of the batch, run side by side.

        A partition's states are applied before its statements, as in one step; the
        partitions are independent (co-partitioning: a statement's state, held entries
        and changelog records all live on its own partition number).
        """
        core = self._router.core
        state_topic = self._router.topics.iban_state
        by_partition: dict[int, dict[TopicPartition, list[ConsumerRecord]]] = {}
        for tp, records in batch.items():
            by_partition.setdefault(tp.partition, {})[tp] = records
        for p in core.releasing_partitions():
            by_partition.setdefault(p, {})

        def route(
            p: int, part: dict[TopicPartition, list[ConsumerRecord]]
        ) -> Callable[[str], list[Out]]:
            def step(now: str) -> list[Out]:
                outs: list[Out] = []
                for tp, records in part.items():
                    if tp.topic == state_topic:
                        for r in records:
                            outs += core.on_state(r, now)
                for tp, records in part.items():
                    if tp.topic != state_topic:
                        for r in records:
                            outs += core.on_statement(r, now)
                return outs + core.continue_releases(now, {p})

            return step

        forwarded = core.stats["forwarded"]
        await asyncio.gather(
            *(
                self._router.run_transaction(
                    route(p, part),
                    p,
                    {tp: records[-1].offset + 1 for tp, records in part.items()},
                )
                for p, part in sorted(by_partition.items())
            )
        )
        forwarded = core.stats["forwarded"] - forwarded
        if forwarded:
            log.info("statements_forwarded", count=forwarded, reason="off their key's partition")

    async def _process_at_least_once(
        self, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        """Route and issue the batch, then settle it in a task while the next one is read.

        The batch is routed and its records issued (``Stepper.issue``) while the previous
        batch's acknowledgements may still be on their way; the previous batch is then
        settled and committed first (at most one batch is in flight, and commits stay in
        batch order), and this one is settled and committed by a task of its own
        (:meth:`_settle`) while the pump reads and routes the next. The rule is unchanged:
        a batch's offsets are committed only once every output and changelog record of it
        is acknowledged. The next step's records are issued after this one's on the same
        producer, so they cannot overtake them; a release's tombstones still wait for the
        released statements within their own step.
        """
        core = self._router.core
        state_topic = self._router.topics.iban_state
        states = [records for tp, records in batch.items() if tp.topic == state_topic]
        statements = [records for tp, records in batch.items() if tp.topic != state_topic]

        def route(now: str) -> list[Out]:
            outs: list[Out] = []
            for records in states:
                for r in records:
                    outs += core.on_state(r, now)  # a ConsumerRecord is a SourceRecord
            for records in statements:
                for r in records:
                    outs += core.on_statement(r, now)
            return outs + core.continue_releases(now)

        forwarded = core.stats["forwarded"]
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        member = self._member
        issued = await self._router.issue_step(route)
        await self._settled()
        if self._failed:
            return  # the batch before failed: this one is read again after the restart
        self._settling = asyncio.create_task(
            self._settle(batch, issued, offsets, member), name="router-batch-settle"
        )
        forwarded = core.stats["forwarded"] - forwarded
        if forwarded:
            log.info("statements_forwarded", count=forwarded, reason="off their key's partition")

    async def _settle(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        issued: Issued,
        offsets: dict[Any, int],
        member: Membership | None,
    ) -> bool:
        """Await the batch's acks, then commit its offsets; False if not committed.

        A failed ack or commit is fatal, as before: nothing more is committed, and the
        runner stops the worker (the next step refuses to run once the error is recorded).
        """
        try:
            await self._router.settle_step(issued)
            committed = await self._commit(offsets, member) if offsets else True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed = True
            await self._router.fatal(exc, "batch pump")
            return False
        if committed:
            self._count(batch)
        return committed

    async def _settled(self) -> None:
        """Wait for the batch in flight to be settled and committed (or to fail)."""
        task, self._settling = self._settling, None
        if task is not None:
            await task
