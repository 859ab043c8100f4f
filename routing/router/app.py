"""The router worker: a faust app built by a factory, and a runner for the CLI and ``up``.

Nothing connects at import time and there is no module-level faust App: every test, the
CLI and the benchmark build their own with :func:`create_router_app`, which binds the app
to its topics and settings, and :func:`serve_router` runs one in the current event loop
until a stop event is set.

faust keeps what it does well: group membership, partition assignment, the two Tables
with their changelogs, recovery and standbys. Both input topics are read in batches by
:class:`~routing.router.pump.BatchPump` (its docstring and docs/performance.md say why and
how it keeps the guarantees), and every batch is routed by
:class:`~routing.router.core.RouterCore` and made durable by
:class:`~routing.router.step.Stepper`. Everything the router needs of faust beyond its
public API goes through one module, :mod:`routing.router.faust_glue`.

There is no per-event faust agent mode any more: it was slower and could lose statements
after a SIGKILL (an exception inside a faust agent skips the message, and with
``concurrency>1`` an offset can be committed past unprocessed messages). The pump is
at-least-once by default (the sinks absorb duplicates), and exactly-once on a Kafka
with transactions when ``KAFKA_EXACTLY_ONCE`` is set (``routing.router.transactions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config.catalogue import Catalogue
from config.settings import Settings
from events.limits import BROKER_MESSAGE_BYTES, TOPIC_CONFIGS
from events.topics import Topics
from routing.broker.producer import ProducerParams, make_producer
from routing.broker.transactions import broker_has_transactions
from routing.observability.metrics import faust_monitor
from routing.router import faust_glue
from routing.router.catalogue_follow import follow_catalogue
from routing.router.core import RouterCore
from routing.router.emit import Out
from routing.router.pump import BatchPump
from routing.router.sink import KafkaSink, Sink
from routing.router.step import Issued, RouterCrashed, Stepper
from routing.router.tables import FaustTables
from routing.router.transactions import PartitionProducers

log = structlog.get_logger("routing.router")

__all__ = ["RouterApp", "RouterCrashed", "RouterTuning", "create_router_app", "serve_router"]


@dataclass(frozen=True, slots=True)
class RouterTuning:
    """Knobs that are not business settings: group timing and batch sizes.

    faust's defaults (60 s session) make Tansu hold the first join of a group for about
    half the session timeout, so a worker would need ~30 s to start. The session is also
    how long the group waits before it gives a killed router's partitions to the others:
    6 s is Apache Kafka's smallest allowed (``group.min.session.timeout.ms``). With the
    RocksDB store, a standby replica of the Tables on the survivor (``standby_replicas``,
    faust's default, kept explicit) makes the takeover itself about a second; faust's
    memory store re-reads the changelog instead (docs/performance.md, "Failover"). The
    heartbeat (a third of the session or less, as Kafka advises) is sent from faust's
    consumer thread, not from the router's event loop.
    """

    session_timeout: float = 6.0
    heartbeat_interval: float = 0.5
    standby_replicas: int = 1
    rebalance_timeout: float = 20.0
    max_batch: int = 2_000
    linger_ms: int | None = None  # None: the settings' kafka_linger_ms
    producer_batch_bytes: int = 262_144


class RouterApp:
    """One router worker: the faust app, its core, its stepper, its sink and the pump.

    Build it with :func:`create_router_app`. ``start``/``stop`` run it in the current
    loop; ``run_step`` (the :class:`~routing.router.step.Stepper`'s) is the one place
    where records are routed and sent.
    """

    def __init__(
        self,
        *,
        app: faust.App,
        topics: Topics,
        core: RouterCore,
        tables: FaustTables,
        sink_factory: Callable[[], Sink] | None,
        sink: Sink | None,
        consumer_factory: Callable[[bool], AIOKafkaConsumer],
        tuning: RouterTuning,
        bootstrap_servers: str,
        transactions: PartitionProducers | None = None,
    ) -> None:
        self.app = app
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.core = core
        self.tables = tables
        self.tuning = tuning
        self._sink_factory = sink_factory
        self._sink = sink
        self._consumer_factory = consumer_factory
        self.stepper = Stepper(tables, lambda: self.sink)
        self._transactions = transactions
        self.exactly_once = False
        self.pump: BatchPump | None = None
        self._fatal = asyncio.Event()
        self._started = False

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError("the router's sink exists once start() ran")
        return self._sink

    @property
    def fatal_error(self) -> BaseException | None:
        return self.stepper.fatal_error

    async def run_step(self, step: Callable[[str], list[Out]]) -> None:
        await self.stepper.run_step(step)

    async def issue_step(self, step: Callable[[str], list[Out]]) -> Issued:
        return await self.stepper.issue(step)

    async def settle_step(self, issued: Issued) -> None:
        await self.stepper.settle(issued)

    async def run_transaction(
        self,
        step: Callable[[str], list[Out]],
        partition: int,
        offsets: dict[TopicPartition, int] | None,
    ) -> None:
        await self.stepper.run_transaction(step, partition, offsets, str(self.app.conf.id))

    async def _fence(self, partitions: frozenset[int]) -> None:
        if self.stepper.transactions is not None:
            await self.stepper.transactions.fence(partitions)

    async def _on_partitions_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Finish the pump's batch, then give up the partitions' transactional ids."""
        if self.pump is not None:
            await self.pump.on_partitions_revoked(sender, *args, **kwargs)
        if self.stepper.transactions is not None:
            await self.stepper.transactions.release()

    async def _choose_guarantee(self) -> None:
        """Exactly-once if asked for and the broker has transactions; say which at start."""
        if self._transactions is not None:
            if await broker_has_transactions(self.bootstrap_servers):
                self.exactly_once = True
                self.stepper.transactions = self._transactions
            else:
                log.warning(
                    "router_exactly_once_not_available",
                    detail="KAFKA_EXACTLY_ONCE is set, but the broker has no transactions "
                    "(the embedded Tansu broker): the router runs at-least-once",
                )
        log.info(
            "router_delivery_guarantee",
            guarantee="exactly_once" if self.exactly_once else "at_least_once",
            detail=(
                "one transaction per input partition and step; read_committed readers see "
                "each statement once"
                if self.exactly_once
                else "a crash can route a statement twice (identical copies); the sinks "
                "are idempotent on statement_id"
            ),
        )

    def active_partitions(self) -> frozenset[int]:
        """The partition numbers whose Tables faust made active on this worker."""
        return faust_glue.active_partitions(self.app, self.tables.state_changelog_topic)

    def membership(self) -> faust_glue.Membership:
        """faust's group membership, which the pump commits input offsets as."""
        member = faust_glue.membership(self.app)
        if member is None:
            raise RuntimeError("faust's consumer has no group membership to commit as")
        return member

    async def fatal(self, exc: BaseException, where: str) -> None:
        """Record an error that must stop the worker; the runner stops it."""
        if self.stepper.fatal_error is None:
            self.stepper.fatal_error = exc
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
        await self._choose_guarantee()
        # Here rather than at build time: the patch creates faust's consumer (and its
        # thread's event loop), which an app that never starts must not leave behind.
        if self.exactly_once:
            await asyncio.to_thread(_forget_tables_after_crash, Path(self.app.conf.tabledir))
            faust_glue.recover_committed_only(self.app, self.bootstrap_servers, self._fence)
        else:
            faust_glue.use_true_highwaters(self.app, self.bootstrap_servers)
        self.pump = BatchPump(
            self, self._consumer_factory(self.exactly_once), max_records=self.tuning.max_batch
        )
        signals: Any = self.app  # mode's signal types reject plain async methods
        signals.on_partitions_revoked.connect(self._on_partitions_revoked)
        signals.on_rebalance_complete.connect(self.pump.on_rebalance_complete)
        await self.pump.start()
        await self.app.start()

    async def stop(self) -> None:
        """Stop reading statements (finishing the batch in flight), then faust, then the sink."""
        if self.pump is not None:
            signals: Any = self.app
            with contextlib.suppress(Exception):
                signals.on_partitions_revoked.disconnect(self._on_partitions_revoked)
                signals.on_rebalance_complete.disconnect(self.pump.on_rebalance_complete)
            try:
                await self.pump.stop()
            finally:
                self.pump = None
        try:
            await self.app.stop()
        finally:
            if self.stepper.transactions is not None:
                await self.stepper.transactions.release()
                if self.fatal_error is None and self._started:
                    await asyncio.to_thread(_mark_clean, Path(self.app.conf.tabledir))
            if self._started and self._sink is not None:
                await self._sink.stop()
            self._started = False

    def stats(self) -> dict[str, int]:
        return dict(self.core.stats)


def _clean_marker(tabledir: Path) -> Path:
    return tabledir.parent / "tables-clean-shutdown"


def _mark_clean(tabledir: Path) -> None:
    marker = _clean_marker(tabledir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _forget_tables_after_crash(tabledir: Path) -> None:
    """With exactly-once, delete the local Table stores unless the last stop was clean.

    A RocksDB store is written as a step runs, before its transaction commits; after a
    crash it may hold writes of an aborted transaction that its changelog never got (a
    held entry, a state). Kept, they would make the replayed step believe the work done
    ("already held") and never write it to the changelog again, so the next owner of the
    partition would miss it. Kafka Streams wipes its stores after an unclean exit under
    exactly-once for the same reason: they are rebuilt from the committed changelog.
    """
    marker = _clean_marker(tabledir)
    if marker.exists():
        marker.unlink()
    elif tabledir.exists():
        shutil.rmtree(tabledir)
        log.warning("router_tables_wiped", reason="last stop was not clean", path=str(tabledir))


def create_router_app(
    settings: Settings,
    topics: Topics,
    catalogue: Mapping[str, object],
    *,
    bootstrap_servers: str,
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
    faust_glue.check_faust()
    tuning = tuning or RouterTuning()
    servers = bootstrap_servers
    app_id = app_id or topics.group("router")
    app = faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in servers.split(",")],
        store=settings.table_store,
        datadir=str(settings.data_dir / "router"),
        topic_partitions=topics.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=tuning.session_timeout,
        broker_heartbeat_interval=tuning.heartbeat_interval,
        broker_rebalance_timeout=tuning.rebalance_timeout,
        table_standby_replicas=tuning.standby_replicas,
        # The size rule (events.limits): a held entry carries a statement at the limit.
        consumer_max_fetch_size=BROKER_MESSAGE_BYTES,
        producer_max_request_size=BROKER_MESSAGE_BYTES,
    )
    faust_glue.attach_monitor(app, faust_monitor())
    state_table = app.Table(
        "iban-state",
        key_type=str,
        partitions=topics.partitions,
        help="iban.state/v1 snapshots by IBAN (newest version wins)",
        extra_topic_configs=TOPIC_CONFIGS,
    )
    held_table = app.Table(
        "held",
        key_type=str,
        partitions=topics.partitions,
        help="held statements, one record each keyed iban|partition|offset",
        extra_topic_configs=TOPIC_CONFIGS,
    )
    tables = FaustTables(state_table, held_table)
    core = RouterCore(
        topics=topics,
        catalogue=catalogue,
        tables=tables,
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

    def transactional_producer(transactional_id: str) -> AIOKafkaProducer:
        params = ProducerParams(
            bootstrap_servers=servers,
            client_id=transactional_id,
            linger_ms=settings.kafka_linger_ms if tuning.linger_ms is None else tuning.linger_ms,
            max_batch_size=tuning.producer_batch_bytes,
            transactional_id=transactional_id,
        )
        return make_producer(params)

    def consumer_factory(read_committed: bool) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            # Exactly-once: a forwarded statement of an aborted transaction is not read.
            isolation_level="read_committed" if read_committed else "read_uncommitted",
            bootstrap_servers=servers,
            client_id=f"{app_id}-input",
            # faust's group: the committed input offsets are read from it at each
            # assignment, and committed to it as faust's member (routing.router.fencing).
            group_id=app_id,
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
        sink_factory=None if sink is not None else sink_factory,
        sink=sink,
        consumer_factory=consumer_factory,
        tuning=tuning,
        bootstrap_servers=servers,
        transactions=(
            PartitionProducers(app_id, transactional_producer)
            if settings.kafka_exactly_once and sink is None
            else None
        ),
    )

    return router


async def serve_router(
    router: RouterApp,
    catalogue: Mapping[str, object],
    topics: Topics,
    stop_event: asyncio.Event,
    *,
    bootstrap_servers: str,
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run a built router worker in the current loop until ``stop_event`` is set.

    For the CLI (``statement-router router``) and ``up``, through
    ``routing.entrypoints.bootstrap.run_router``. Returns the counters. Raises
    :class:`RouterCrashed` if the worker had to stop on an error (a failed send or
    commit); nothing was committed past it, so a restart resumes safely.
    ``started`` is set once the worker runs (faust started; statements flow once the
    group's first assignment and table recovery are done). A live ``catalogue`` is
    followed: a partner added to ``CONNECTORS_FILE`` is routed to without a restart.
    """
    follower: asyncio.Task[None] | None = None
    try:
        await router.start()
        if isinstance(catalogue, Catalogue) and catalogue.source is not None:
            # A partner added to CONNECTORS_FILE is routed to without a restart.
            follower = asyncio.create_task(follow_catalogue(
                router.core, catalogue, topics, bootstrap_servers, stop_event))
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
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await router.stop()
    if router.fatal_error is not None:
        raise RouterCrashed(f"router stopped: {router.fatal_error!r}") from router.fatal_error
    return router.stats()
