"""The pipeline's commands: topics, schemas, and the long-running roles."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from config.settings import Settings
from events.schemas import SCHEMAS
from events.topics import Topics
from routing.bootstrap import catalogue, open_store
from routing.cli.common import fail, run, settings
from routing.metrics import metrics_endpoint
from routing.runtime import require_bootstrap, until_signalled

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
    created = run(
        ensure_topics(require_bootstrap(cfg), specs, cfg.topic_replication_factor)
    )
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        typer.echo(f"{state:<8} {spec.name}  partitions={spec.partitions} cleanup={spec.cleanup}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the topic catalogue: name, key, schema, cleanup and who writes and reads it."""
    cfg = settings()
    for spec in topic_catalogue(cfg).specs(catalogue(cfg)):
        typer.echo(f"{spec.name:<48} key={spec.key:<22} {spec.schema:<32} {spec.cleanup}")


def export_schemas(directory: Path) -> list[Path]:
    """Write one JSON Schema file per event schema; return the paths written."""
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
    from routing.broker.producer import make_producer
    from routing.relay import OutboxRelay

    cfg = settings()
    bootstrap = require_bootstrap(cfg)

    async def main(stop: asyncio.Event) -> None:
        async with metrics_endpoint(cfg), open_store(cfg, migrate=False) as store:
            producer = make_producer(cfg, bootstrap_servers=bootstrap, client_id="relay")
            await producer.start()
            try:
                await OutboxRelay(store, producer, topic_catalogue(cfg)).run(stop)
            finally:
                await producer.stop()

    run(until_signalled(main))


def router() -> None:
    """Run one router worker; start more processes to share the partitions."""
    from routing.router import RouterCrashed, run_router

    cfg = settings()
    bootstrap = require_bootstrap(cfg)

    async def main(stop: asyncio.Event) -> None:
        async with metrics_endpoint(cfg):
            await run_router(cfg, topic_catalogue(cfg), catalogue(cfg), stop,
                             bootstrap_servers=bootstrap)

    try:
        run(until_signalled(main))
    except RouterCrashed as exc:
        # Nothing was committed past the failure: restarting resumes safely.
        fail(f"{exc}; nothing was committed past it, restart the router to resume")
