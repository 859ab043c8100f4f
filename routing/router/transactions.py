"""Exactly-once on Kafka: one transactional producer per input partition (Kafka EOS v1).

With ``KAFKA_EXACTLY_ONCE=true`` on a broker that has transactions, each routing step of
one input partition ``p`` (its ``iban.state`` and ``statements.received`` records) is one
Kafka transaction of the producer whose ``transactional.id`` is ``<app id>-<p>``: the
routed outputs, the Tables' changelog records of ``p`` and the input offsets of ``p``
(``send_offsets_to_transaction`` to faust's group) commit together or not at all
(:meth:`routing.router.step.Stepper.run_transaction`).

Why one transactional id per *partition* rather than per router: the id is what fences.
Whoever takes partition ``p`` over calls ``init_transactions`` with ``<app id>-<p>``
before it recovers ``p``'s Tables and reads ``p``'s inputs (:meth:`fence`, called from
faust's recovery through ``faust_glue``). The broker then aborts any transaction the
previous owner left open and bumps the id's epoch, so the previous owner, be it dead
(SIGKILL) or a zombie (SIGSTOP, a GC pause, a network cut) that wakes up later, can
neither commit that transaction nor start another: ``ProducerFenced``. A per-router id
fences only a restart *of the same router*; a zombie's open transaction would commit
after the new owner re-routed the same input, and aiokafka's ``TxnOffsetCommit`` (v0)
carries no group generation to refuse it (KIP-447's generation check is not available),
so that design would still duplicate.

Producers are created on assignment (:meth:`fence`) and closed on revocation
(:meth:`release`): a producer kept across a rebalance might have been fenced meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog
from aiokafka import AIOKafkaProducer

from routing.router.sink import KafkaSink

log = structlog.get_logger("routing.router.transactions")


class PartitionProducers:
    """The transactional producers of the input partitions this router owns."""

    def __init__(self, app_id: str, make: Callable[[str], AIOKafkaProducer]) -> None:
        self.app_id = app_id
        self._make = make
        self._sinks: dict[int, KafkaSink] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._guard = asyncio.Lock()

    def transactional_id(self, partition: int) -> str:
        return f"{self.app_id}-{partition}"

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._sinks)

    async def fence(self, partitions: Iterable[int]) -> None:
        """Own the transactional ids of ``partitions``: ``init_transactions`` on each one
        not held yet, which aborts a previous owner's open transaction and fences it."""
        async with self._guard:
            new = sorted(set(partitions) - set(self._sinks))
            if not new:
                return
            sinks = {p: KafkaSink(self._make(self.transactional_id(p))) for p in new}
            results = await asyncio.gather(
                *(sink.start() for sink in sinks.values()), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                await asyncio.gather(
                    *(sink.stop() for sink in sinks.values()), return_exceptions=True
                )
                raise failed[0]
            self._sinks.update(sinks)
            for p in new:
                self._locks.setdefault(p, asyncio.Lock())
            log.info("router_transactions_fenced", partitions=new)

    def sink(self, partition: int) -> KafkaSink:
        return self._sinks[partition]

    def lock(self, partition: int) -> asyncio.Lock:
        """One transaction at a time per producer."""
        return self._locks.setdefault(partition, asyncio.Lock())

    async def release(self) -> None:
        """Close every producer (on revocation: the next owner fences the ids)."""
        async with self._guard:
            sinks, self._sinks = self._sinks, {}
            if sinks:
                await asyncio.gather(
                    *(sink.stop() for sink in sinks.values()), return_exceptions=True
                )
                log.info("router_transactions_released", partitions=sorted(sinks))
