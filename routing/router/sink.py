"""Where the router's output records go: a Kafka producer, or a list in unit tests.

``send`` only *issues* a record (it returns once the record is in the producer's batch, in
call order) and hands back a future that resolves when the broker acknowledged it. The
router issues all records of a step under its lock, so their order per partition is the
routing order, and awaits the futures before it lets the input offset be committed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from routing.router.emit import Out


class Sink(Protocol):
    async def send(self, out: Out) -> asyncio.Future[Any]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class KafkaSink:
    """Produces with an aiokafka producer built by ``routing.broker.make_producer``."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, out: Out) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self.producer.send(out.topic, out.value, key=out.key)
        return fut


class MemorySink:
    """Records what would be produced; every send is acknowledged at once."""

    def __init__(self) -> None:
        self.records: list[Out] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, out: Out) -> asyncio.Future[Any]:
        self.records.append(out)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def on(self, topic: str) -> list[Out]:
        return [r for r in self.records if r.topic == topic]

    def clear(self) -> None:
        self.records.clear()
