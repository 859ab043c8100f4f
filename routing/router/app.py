"""The router worker: a faust app built by a factory, and a runner for the CLI and ``up``.

Nothing connects at import time and there is no module-level faust App: every test, the
CLI and the benchmark build their own with :func:`create_router_app`, which binds the app
to its topics and settings, and :func:`run_router` runs one in the current event loop
until a stop event is set.

Two modes share :class:`~routing.router.core.RouterCore`:

* ``batch`` (the default): faust runs the Tables, membership, recovery and standbys;
  both input topics are read in batches by :class:`~routing.router.pump.BatchPump` (the
  hot path; its docstring and docs/performance.md say why and how it keeps the
  guarantees). This is the mode to run.
* ``agent``: a plain faust agent per input topic. It is the reference implementation,
  simple to reason about and what the unit tests drive with ``agent.test_context()``,
  at faust's per-event speed, kept to check the pump against and for comparisons. Not
  for production: its SIGKILL test still loses a few statements in about one run in six
  (tests/e2e/test_router_crash.py), which the batch mode does not.

The agents run with ``concurrency=1`` (faust issue #606: with more, an offset can be
committed past an unprocessed message) and ``processing_guarantee='at_least_once'``
unless ``settings.kafka_exactly_once`` (a real Kafka only: Tansu has no transactional
producer). The batch pump is at-least-once in every case; the sinks absorb duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import faust
import structlog
from aiokafka import AIOKafkaConsumer

from config.settings import Settings
from events.topics import Topics
from routing.broker.admin import partition_end_offsets
from routing.broker.producer import ProducerParams, make_producer
from routing.metrics import attach_faust_sensor
from routing.router.core import Handler, InRecord, Record, RouterCore
from routing.router.emit import Out
from routing.router.pump import BatchPump
from routing.router.sink import KafkaSink, Sink
from routing.router.tables import FaustTables

log = structlog.get_logger("routing.router")

RouterMode = Literal["batch", "agent"]




class RouterCrashed(RuntimeError):
    """The router stopped on an error it must not swallow (a send or a commit failed)."""


@dataclass(frozen=True, slots=True)
class RouterTuning:
    """Knobs that are not business settings: group timing and batch sizes.

    faust's defaults (60 s session) make Tansu hold the first join of a group for about
    half the session timeout, so a worker would need ~30 s to start; 10 s sessions start
    in ~5 s and still tolerate GC pauses. ``emit_outcomes`` writes a
    ``delivery.outcome/v1`` "routed"/"held" record per statement (a second produce).
    """

    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    rebalance_timeout: float = 20.0
    max_batch: int = 2_000
    linger_ms: int | None = None  # None: the settings' kafka_linger_ms
    producer_batch_bytes: int = 262_144
    emit_outcomes: bool = True


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


async def _acked(futures: list[Any]) -> None:
    """Wait for every ack (raising the first failure); no suspension if all are in."""
    if all(future.done() for future in futures):
        for future in futures:
            future.result()
    else:
        await asyncio.gather(*futures)


def _record(message: Any) -> InRecord:
    return Record(message.topic, message.partition, message.offset, message.key, message.value)


class RouterApp:
    """One router worker: the faust app, its core, its sink and (batch mode) the pump.

    Build it with :func:`create_router_app`. ``start``/``stop`` run it in the current
    loop; ``run_step`` is the one place where records are routed and sent.
    """

    def __init__(
        self,
        *,
        app: faust.App,
        topics: Topics,
        core: RouterCore,
        tables: FaustTables,
        mode: RouterMode,
        sink_factory: Callable[[], Sink] | None,
        sink: Sink | None,
        consumer_factory: Callable[[], AIOKafkaConsumer] | None,
        tuning: RouterTuning,
        bootstrap_servers: str,
    ) -> None:
        self.app = app
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.core = core
        self.tables = tables
        self.mode = mode
        self.tuning = tuning
        self._sink_factory = sink_factory
        self._sink = sink
        self._consumer_factory = consumer_factory
        self.pump: BatchPump | None = None
        self.state_agent: Any = None
        self.statements_agent: Any = None
        self.lock = asyncio.Lock()
        self.fatal_error: BaseException | None = None
        self._fatal = asyncio.Event()
        self._started = False

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError("the router's sink exists once start() ran")
        return self._sink

    # --- the routing step ----------------------------------------------------------------

    async def run_step(self, step: Callable[[str], list[Out]]) -> None:
        """Route under the lock, make the outputs durable, then the Table writes.

        The lock makes "read/update the Tables, decide, issue the sends" atomic with respect
        to the other agent or the pump, which keeps per-IBAN order across a release.

        The routed outputs and the Tables' changelog records go through our sink's batched
        producer (faust's per-record send path cost more than the routing itself), in two
        rounds when it matters, because nothing orders deliveries across partitions. A
        changelog *tombstone* may state that outputs exist: a release deletes the held
        entries it routed. Were the tombstone durable before the released statements, a
        crash in between would lose them for good: after a restart the held entry is gone,
        the replayed ``iban.state`` record is a stale version with nothing held, and the
        sweep finds nothing. So when a step deletes from a Table, its outputs are
        acknowledged first (under the lock, so no later step's changelog record can
        overtake this one's), and only then are the changelog records issued. A crash in
        between leaves the Tables as before the step, and the input, not yet acknowledged,
        is processed again: duplicates, never a loss.

        A step that only *writes* values (a statement held, a state applied) sends outputs
        and changelog together, in one round: whichever becomes durable first, the replay
        of the unacknowledged input finds either nothing (and does it all again) or the
        statement already held (and re-emits only its audit event, ``_hold``) or the state
        already applied (a stale version, and the statements after it in the batch are
        routed by it, as the first time). Once a step failed, no other one runs: the
        in-memory Tables may be ahead of their changelogs.

        Every ack is awaited before returning: only then may the input be acknowledged
        (faust's agent commit) or committed (the pump).
        """
        async with self.lock:
            if self.fatal_error is not None:
                raise RouterCrashed(f"router stopping: {self.fatal_error!r}")
            outs = step(utc_now())
            changelog = self.tables.take_changelog()
            if any(record.value is None for record in changelog):  # a tombstone: ordered
                pending: list[Any] = await self.sink.send_many(outs) if outs else []
                await _acked(pending)
                changelog_acks = await self.sink.send_many(changelog)
            else:
                records = [*outs, *changelog]
                pending = changelog_acks = await self.sink.send_many(records) if records else []
        if changelog:
            await _acked(changelog_acks)
            # The acks of whole record batches; those of routed topics are ignored there.
            self.tables.changelog_persisted([ack.result() for ack in changelog_acks])
            self.tables.count_changelog(changelog)
        await _acked(pending)

    async def handle(self, handler: Handler, record: InRecord) -> None:
        """Process one faust event; on a produce failure, never let faust ack it."""
        try:
            await self.run_step(lambda now: handler(record, now))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.fatal(exc, "agent")
            # Returning would let faust ack (and later commit) the event whose outputs
            # were not all written. Wait for the runner to stop the worker instead.
            await asyncio.Future()

    async def fatal(self, exc: BaseException, where: str) -> None:
        """Record an error that must stop the worker; the runner stops it."""
        if self.fatal_error is None:
            self.fatal_error = exc
        log.critical("router_fatal", where=where, error=type(exc).__name__, detail=str(exc))
        self._fatal.set()

    async def wait_fatal(self) -> None:
        await self._fatal.wait()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sink, the pump (idle until faust's first assignment), then faust."""
        # faust creates its data directory without parents (and needs one even for
        # memory:// tables).
        await asyncio.to_thread(Path(self.app.conf.datadir).mkdir, parents=True, exist_ok=True)
        if self._sink is None:
            assert self._sink_factory is not None
            self._sink = self._sink_factory()
        await self._sink.start()
        self._started = True
        # Here rather than at build time: the patch creates faust's consumer (and its
        # thread's event loop), which an app that never starts must not leave behind.
        use_true_highwaters(self.app, self.bootstrap_servers)
        if self.mode == "batch":
            assert self._consumer_factory is not None
            self.pump = BatchPump(
                self, self._consumer_factory(), max_records=self.tuning.max_batch
            )
            signals: Any = self.app  # mode's signal types reject plain async methods
            signals.on_partitions_revoked.connect(self.pump.on_partitions_revoked)
            signals.on_rebalance_complete.connect(self.pump.on_rebalance_complete)
            await self.pump.start()
        await self.app.start()

    async def stop(self) -> None:
        """Stop reading statements (finishing the batch in flight), then faust, then the sink."""
        if self.pump is not None:
            signals: Any = self.app
            with contextlib.suppress(Exception):
                signals.on_partitions_revoked.disconnect(self.pump.on_partitions_revoked)
                signals.on_rebalance_complete.disconnect(self.pump.on_rebalance_complete)
            try:
                await self.pump.stop()
            finally:
                self.pump = None
        try:
            await self.app.stop()
        finally:
            if self._started and self._sink is not None:
                await self._sink.stop()
            self._started = False

    def stats(self) -> dict[str, int]:
        return dict(self.core.stats)


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
            tp: max(int(listed.get(tp) or 0), true[(tp.topic, tp.partition)])
            for tp in partitions
        }

    consumer.highwaters = highwaters


def _raw_topic(app: faust.App, name: str) -> Any:
    """An existing topic read as raw bytes: the core does its own (strict) parsing."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def _bootstrap(settings: Settings, bootstrap_servers: str | None) -> str:
    servers = bootstrap_servers or settings.kafka_bootstrap_servers
    if not servers:
        raise ValueError(
            "no Kafka bootstrap servers: kafka_bootstrap_servers is unset (embedded mode), "
            "so pass the embedded broker's bootstrap_servers"
        )
    return servers


def create_router_app(
    settings: Settings,
    topics: Topics,
    catalogue: Mapping[str, object],
    *,
    bootstrap_servers: str | None = None,
    mode: RouterMode = "batch",
    app_id: str | None = None,
    sink: Sink | None = None,
    tuning: RouterTuning | None = None,
) -> RouterApp:
    """Build (without connecting) one router worker.

    ``app_id`` names the faust app, hence its consumer group and changelog topics
    (``<app_id>-iban-state-changelog``, ``<app_id>-held-changelog``); it defaults to
    ``<prefix>.router``, so every router of one topic set shares the work. ``sink``
    replaces the Kafka producer (unit tests). ``catalogue`` is the configured connector
    catalogue: a bound IBAN whose connector is not in it is held, never dropped.
    """
    tuning = tuning or RouterTuning()
    servers = _bootstrap(settings, bootstrap_servers)
    app_id = app_id or f"{topics.prefix}.router"
    guarantee = "exactly_once" if settings.kafka_exactly_once else "at_least_once"
    app = faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in servers.split(",")],
        store=settings.table_store,
        datadir=str(settings.data_dir / "router"),
        topic_partitions=topics.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        processing_guarantee=guarantee,
        producer_acks=-1,
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=tuning.session_timeout,
        broker_heartbeat_interval=tuning.heartbeat_interval,
        broker_rebalance_timeout=tuning.rebalance_timeout,
    )
    attach_faust_sensor(app)
    state_table = app.Table(
        "iban-state",
        key_type=str,
        partitions=topics.partitions,
        help="iban.state/v1 snapshots by IBAN (newest version wins)",
    )
    held_table = app.Table(
        "held",
        key_type=str,
        partitions=topics.partitions,
        help="held statements, one record each keyed iban|partition|offset",
    )
    tables = FaustTables(state_table, held_table)
    core = RouterCore(
        topics=topics,
        catalogue=catalogue,
        tables=tables,
        emit_outcomes=tuning.emit_outcomes,
        max_statement_bytes=settings.max_statement_bytes,
    )

    def sink_factory() -> Sink:
        params = ProducerParams(
            bootstrap_servers=servers,
            client_id=f"{app_id}-sink",
            exactly_once=False,
            linger_ms=settings.kafka_linger_ms if tuning.linger_ms is None else tuning.linger_ms,
            max_batch_size=tuning.producer_batch_bytes,
        )
        return KafkaSink(make_producer(params))

    def consumer_factory() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=servers,
            client_id=f"{app_id}-input",
            group_id=f"{app_id}-input",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # Tansu answers an idle fetch only when the wait runs out (docs/performance.md).
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            fetch_max_bytes=16 * 1024 * 1024,
        )

    router = RouterApp(
        app=app,
        topics=topics,
        core=core,
        tables=tables,
        mode=mode,
        sink_factory=None if sink is not None else sink_factory,
        sink=sink,
        consumer_factory=consumer_factory,
        tuning=tuning,
        bootstrap_servers=servers,
    )

    if mode == "agent":
        state_topic = _raw_topic(app, topics.iban_state)

        async def iban_state(stream: Any) -> None:
            async for event in stream.events():
                await router.handle(core.on_state, _record(event.message))

        router.state_agent = app.agent(state_topic, name="iban-state", concurrency=1)(
            iban_state
        )
        received_topic = _raw_topic(app, topics.received)

        async def statements(stream: Any) -> None:
            async for event in stream.events():
                await router.handle(core.on_statement, _record(event.message))

        router.statements_agent = app.agent(
            received_topic, name="statements", concurrency=1
        )(statements)
    return router


async def run_router(
    settings: Settings,
    topics: Topics,
    catalogue: Mapping[str, object],
    stop_event: asyncio.Event,
    *,
    bootstrap_servers: str | None = None,
    mode: RouterMode | None = None,
    app_id: str | None = None,
    tuning: RouterTuning | None = None,
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run one router worker in the current loop until ``stop_event`` is set.

    For the CLI (``statement-router router``) and ``up``. Returns the counters. Raises
    :class:`RouterCrashed` if the worker had to stop on an error (a failed send or
    commit); nothing was committed past it, so a restart resumes safely.
    ``started`` is set once the worker runs (faust started; statements flow once the
    group's first assignment and table recovery are done).
    """
    router = create_router_app(
        settings,
        topics,
        catalogue,
        bootstrap_servers=bootstrap_servers,
        mode=mode or settings.router_mode,
        app_id=app_id,
        tuning=tuning,
    )
    try:
        await router.start()
        if started is not None:
            started.set()
        waits = {
            asyncio.ensure_future(stop_event.wait()),
            asyncio.ensure_future(router.wait_fatal()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    finally:
        await router.stop()
    if router.fatal_error is not None:
        raise RouterCrashed(f"router stopped: {router.fatal_error!r}") from router.fatal_error
    return router.stats()
