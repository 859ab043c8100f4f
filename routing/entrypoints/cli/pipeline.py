"""The pipeline's commands: topics, schemas, and the long-running roles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from events.topics import Topics
from routing.entrypoints.cli.common import (
    EXIT_UNAVAILABLE,
    broker_or_none,
    catalogue,
    fail,
    require_broker,
    require_reachable,
    run,
    run_role,
    settings,
)

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

    from config.settings import Settings

topics_app = typer.Typer(help="The Kafka topics of the pipeline.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contract as JSON Schema.", no_args_is_help=True)


def topic_catalogue(cfg: Settings) -> Topics:
    return Topics(prefix=cfg.topic_prefix, partitions=cfg.topic_partitions)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic with its explicit partition count and cleanup policy (idempotent)."""
    from routing.broker.admin import ensure_topics

    cfg = settings()
    specs = topic_catalogue(cfg).specs(catalogue(cfg))
    bootstrap = require_broker(cfg)
    require_reachable(bootstrap, "creating topics")
    created = run(ensure_topics(bootstrap, specs, cfg.topic_replication_factor))
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        typer.echo(f"{state:<8} {spec.name}  partitions={spec.partitions} cleanup={spec.cleanup}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the topic catalogue: name, key, schema, cleanup and who writes and reads it."""
    cfg = settings()
    for spec in topic_catalogue(cfg).specs(catalogue(cfg)):
        typer.echo(f"{spec.name:<48} key={spec.key:<22} {spec.schema:<32} {spec.cleanup:<8} "
                   f"{spec.description}")


def export_schemas(directory: Path) -> list[Path]:
    """Write one JSON Schema file per event schema; return the paths written."""
    from events.schemas import SCHEMAS

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$id"] = name
        # Producers must send the discriminator even though our models default it.
        schema["required"] = ["schema", *[f for f in schema.get("required", []) if f != "schema"]]
        path = directory / (name.replace("/", ".") + ".schema.json")
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write the files.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Export the JSON Schema of every event (docs/schemas/ is generated this way)."""
    for path in export_schemas(directory):
        typer.echo(str(path))


def relay() -> None:
    """Run the outbox relay: publish committed IBAN states to iban.state, in order."""
    from routing.entrypoints.bootstrap import open_store, run_relay
    from routing.observability.metrics_http import metrics_endpoint

    cfg = settings()
    bootstrap = require_broker(cfg)

    async def main(stop: asyncio.Event) -> None:
        async with metrics_endpoint(cfg), open_store(cfg, migrate=False) as store:
            await run_relay(cfg, topic_catalogue(cfg), store, stop, bootstrap_servers=bootstrap)

    run_role("relay", bootstrap, main)


def router() -> None:
    """Run one router worker; start more processes to share the partitions."""
    from routing.entrypoints.bootstrap import run_router
    from routing.observability.metrics_http import metrics_endpoint
    from routing.router import RouterCrashed

    cfg = settings()
    bootstrap = require_broker(cfg)

    async def main(stop: asyncio.Event) -> None:
        async with metrics_endpoint(cfg):
            await run_router(cfg, topic_catalogue(cfg), catalogue(cfg), stop,
                             bootstrap_servers=bootstrap)

    try:
        run_role("router", bootstrap, main)
    except RouterCrashed as exc:
        # Nothing was committed past the failure: restarting resumes safely.
        fail(f"{exc}; nothing was committed past it, restart the router to resume")


def _bootstrap_or_running_up(cfg: Settings, given: str | None) -> str:
    """``--bootstrap``, else ``KAFKA_BOOTSTRAP_SERVERS``, else the broker of the ``up``
    running on ``DATA_DIR`` (its lock file says where), the demo's included."""
    address = broker_or_none(cfg, given)
    if address is not None:
        return address
    from routing.entrypoints.up_lock import lock_path, running_up

    for demo in (False, True):
        running = running_up(lock_path(cfg.data_dir, demo=demo))
        if running and running.get("broker"):
            return str(running["broker"])
    fail(
        "no broker: set KAFKA_BOOTSTRAP_SERVERS or --bootstrap, or start `statement-router up` "
        f"(none runs on DATA_DIR={cfg.data_dir})",
        EXIT_UNAVAILABLE,
    )


def _shown(record_key: bytes | None, value: bytes | None) -> tuple[str, str]:
    """The key and value as printed: IBANs masked, the value as compact JSON if it is."""
    from routing.domain.iban import mask_iban

    key = "" if record_key is None else record_key.decode("utf-8", errors="replace")
    if value is None:
        return mask_iban(key) if key else "-", "(tombstone)"
    try:
        document = json.loads(value)
    except ValueError:
        return mask_iban(key) if key else "-", value.decode("utf-8", errors="replace")
    if isinstance(document, dict) and isinstance(document.get("iban"), str):
        document["iban"] = mask_iban(document["iban"])
    return mask_iban(key) if key else "-", json.dumps(document, ensure_ascii=False)


@topics_app.command("tail")
def topics_tail(
    topic: Annotated[str, typer.Argument(help="A topic, with or without its prefix.")],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new records until Ctrl-C.")
    ] = False,
    key: Annotated[
        str | None, typer.Option("--key", help="Only the records of this IBAN (the key).")
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", help="Kafka bootstrap servers (default: see below)."),
    ] = None,
) -> None:
    """Print a topic's records (partition:offset, key, value; IBANs masked), from the start.

    Reads with the project's Kafka client, so it works on the embedded broker (kcat does
    not). The broker: --bootstrap, else $KAFKA_BOOTSTRAP_SERVERS, else the running `up`'s.
    Joins no consumer group and commits nothing.
    """
    from routing.domain.iban import normalise_iban
    from routing.entrypoints.runtime import until_signalled

    cfg = settings()
    servers = _bootstrap_or_running_up(cfg, bootstrap)
    name = topic if topic.startswith(f"{cfg.topic_prefix}.") else f"{cfg.topic_prefix}.{topic}"
    wanted = None if key is None else normalise_iban(key).encode()

    async def main(stop: asyncio.Event) -> None:
        async for record in _records(servers, name, follow, stop):
            if wanted is not None and record.key != wanted:
                continue
            shown_key, shown_value = _shown(record.key, record.value)
            typer.echo(f"{record.partition}:{record.offset}  {shown_key}  {shown_value}")

    run(until_signalled(main))


async def _records(
    servers: str, topic: str, follow: bool, stop: asyncio.Event
) -> AsyncIterator[ConsumerRecord]:
    from routing.broker.admin import require_topics
    from routing.broker.topic_reader import assigned_consumer, true_end_offsets

    counts = await require_topics(servers, [topic])
    action = f"reading topic {topic}"
    async with assigned_consumer(servers, counts, action=action) as (consumer, partitions):
        loop = asyncio.get_running_loop()
        ends = await true_end_offsets(consumer, partitions, deadline=loop.time() + 30, what=topic)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            batch = await consumer.getmany(*partitions, timeout_ms=300)
            for tp in sorted(batch, key=lambda tp: tp.partition):
                for record in batch[tp]:
                    yield record
            if follow:
                continue
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                return


async def invalid_records(cfg: Settings, prefix: str) -> list[dict[str, object]]:
    """The ``statements.invalid`` records whose statement id starts with ``prefix`` (the
    reason, not the content), from the configured broker or the running ``up``'s."""
    from routing.broker import read_topic

    servers = _bootstrap_or_running_up(cfg, None)
    found: list[dict[str, object]] = []
    for record in await read_topic(servers, f"{cfg.topic_prefix}.statements.invalid"):
        try:
            document = json.loads(record.value or b"{}")
        except ValueError:
            continue
        if not isinstance(document, dict):
            continue
        statement_id = str(document.get("statement_id") or "")
        if not statement_id.startswith(prefix):
            continue
        found.append(
            {
                "statement_id": statement_id,
                "reason": document.get("reason"),
                "detected_by": document.get("detected_by"),
                "partition": record.partition,
                "offset": record.offset,
            }
        )
    return found
