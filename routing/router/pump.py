"""The batch pump: the statements' hot path, off faust's per-event machinery.

faust costs about 150 µs per event on this machine (DESIGN §8), which caps a plain agent
far below the 10,000 statements/s target. In ``batch`` mode faust keeps what it does well,
group membership, partition assignment, the two Tables with their changelogs, recovery
and the ``iban.state`` agent, while this pump reads ``statements.received`` in batches
with its own aiokafka consumer and routes each batch in one call.

How it keeps DESIGN §5:

* **Co-partitioning.** The pump never joins a group. It follows faust: after each
  rebalance it reads exactly the ``statements.received`` partitions whose numbers are the
  ``iban.state`` partitions faust assigned to this worker (the Tables' active partitions
  are the same numbers, faust's assignor co-partitions topics of equal partition count).
* **Tables first.** It starts reading only on ``app.on_rebalance_complete``, which faust
  sends once table recovery has finished, so no statement is routed against a
  half-recovered Table. It stops reading in ``app.on_partitions_revoked`` (which faust
  awaits *before* the group moves on): the batch in flight is finished, acknowledged and
  committed first, so the next owner starts exactly after it.
* **At-least-once.** Offsets are committed (to the consumer group
  ``<app id>-statements``, as a manually assigned consumer) only after every routed event
  of the batch is acknowledged by the broker *and* so are the Tables' changelog records
  of the batch, which are sent only once the routed events are acknowledged (see
  ``RouterApp.run_step``: a held entry's tombstone must never be durable before the
  released statements are).
  A crash before the commit replays the batch: duplicates are possible, losses are
  not. A failed send or commit is fatal: the pump stops without committing and the
  runner stops the worker.
* **Order.** Within a batch, records are routed in partition order and their outputs are
  issued in that order under the router's lock, which the ``iban.state`` agent also
  takes to update the Tables and release held statements, so a release and a new
  statement of the same IBAN can never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from routing.router.emit import Out

if TYPE_CHECKING:
    from routing.router.app import RouterApp

log = structlog.get_logger("routing.router.pump")


class StatementPump:
    """Reads the assigned ``statements.received`` partitions in batches and routes them."""

    def __init__(
        self,
        router: RouterApp,
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
        self._ready = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        self.records = 0
        self.first_read: float | None = None
        self.last_ack: float | None = None

    @property
    def assigned(self) -> frozenset[int]:
        return self._assigned

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="statement-pump")

    async def stop(self) -> None:
        """Finish the batch in flight (acks and commit), then stop reading."""
        self._stopping = True
        task = self._task
        if task is not None:
            async with self._batch_lock:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._task = None
        await self._consumer.stop()

    # --- following faust's assignment ----------------------------------------------------

    async def on_partitions_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """faust awaits this during a rebalance: finish the batch, commit, stop reading."""
        async with self._batch_lock:
            self._ready.clear()
            if self._assigned:
                log.info("statements_partitions_released", partitions=sorted(self._assigned))
            self._assigned = frozenset()
            self._consumer.assign([])

    async def on_rebalance_complete(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Tables are recovered: read the statements partitions matching faust's ones."""
        router = self._router
        assignment = router.app.consumer.assignment()
        parts = frozenset(tp.partition for tp in assignment if tp.topic == router.topics.iban_state)
        async with self._batch_lock:
            if self._stopping or (parts == self._assigned and self._ready.is_set()):
                return
            self._assigned = parts
            router.core.forget_cached_states()
            router.tables.reset_stores()
            received = router.topics.received
            self._consumer.assign([TopicPartition(received, p) for p in sorted(parts)])
            log.info("statements_partitions_assigned", partitions=sorted(parts))
            if parts:
                await router.run_step(lambda now: router.core.sweep(set(parts), now))
                self._ready.set()

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._ready.wait()
                async with self._batch_lock:
                    if not self._ready.is_set():
                        continue
                    try:
                        batch = await self._consumer.getmany(
                            timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                        )
                    except KafkaError as exc:
                        if not exc.retriable:
                            raise
                        # Nothing was read, so nothing is lost by trying again (seen on
                        # Tansu: a transient NotLeaderForPartition while resetting offsets).
                        log.warning("statements_fetch_retry", error=type(exc).__name__)
                        await asyncio.sleep(0.5)
                        continue
                    if batch:
                        await self._process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed send or commit: stop, commit nothing more
            await self._router.fatal(exc, "statement pump")

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        loop = asyncio.get_running_loop()
        if self.first_read is None:
            self.first_read = loop.time()
        on_statement = self._router.core.on_statement

        def route(now: str) -> list[Out]:
            outs: list[Out] = []
            for records in batch.values():
                for r in records:
                    outs += on_statement(r, now)  # a ConsumerRecord is an InRecord
            return outs

        await self._router.run_step(route)
        await self._router.flush_tables()
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        await self._consumer.commit(offsets)
        self.batches += 1
        self.records += sum(len(records) for records in batch.values())
        self.last_ack = loop.time()
