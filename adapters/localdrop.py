"""Topic-to-directory sinks for the embedded mode: partner drops and a global-file folder.

Each routed statement's file lands atomically (temporary name, then rename) under a name
fixed by its statement id, so a redelivery overwrites instead of duplicating. Offsets are
committed only after the files of a batch are written: a crash rewrites, never loses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer

from routing.domain.iban import mask_iban

log = structlog.get_logger(__name__)

EXTENSIONS = {"cfonb120": ".txt", "camt053": ".xml", "mt940": ".sta"}


def statement_file_name(event: dict[str, Any]) -> str:
    """``<statement_id>.<ext>``; statement ids are restricted to [A-Za-z0-9._:-]."""
    safe = str(event["statement_id"]).replace(":", "_").replace("/", "_")
    return safe + EXTENSIONS.get(str(event.get("format")), ".bin")


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class TopicToDirectory:
    """Consume one routed topic and write each statement's file under ``root``."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        root: Path,
        subdirectory: Callable[[dict[str, Any]], str] = lambda _: "",
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._group = group_id
        self._root = root
        self._subdirectory = subdirectory
        self.written = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self._topic,
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for records in batches.values():
                    for record in records:
                        self._write(record.value)
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()

    def _write(self, value: bytes | None) -> None:
        try:
            event = json.loads(value or b"")
            content = base64.b64decode(event["content_b64"])
            path = self._root / self._subdirectory(event) / statement_file_name(event)
        except (ValueError, KeyError, TypeError) as exc:
            # The router only emits validated events; say so loudly if one is not.
            log.error("unreadable_routed_event", topic=self._topic, error=str(exc))
            return
        write_atomically(path, content)
        self.written += 1
        log.info(
            "statement_written",
            statement_id=event["statement_id"],
            iban=mask_iban(str(event.get("iban", ""))),
            path=str(path),
        )
