"""The adapters process following its connectors file: hot add, change and removal.

``statement-router adapters`` runs ``ReloadingAdapters``, a thin wrapper over the
supervisor (``adapters.supervisor.supervise``): one supervised worker per connector that
has an endpoint in ``CONNECTORS_FILE`` (``statement-router up`` runs it too, and gives a
connector without one the embedded directory drop), and every ``RELOAD_INTERVAL`` seconds a look at
the file's modification time, size and inode. When the file changed, it is read and
validated whole (catalogue and endpoints, secrets resolved, one read):

* a file that does not validate is **refused**: ``connectors_file_refused`` is logged at
  error level with the one-line reason, and the running workers stay as they are;
* otherwise only the difference is applied: a connector that appeared gets its two
  topics (``statements.partner.<id>`` and its ``.dlq``, created if missing) and a worker;
  one that disappeared has its worker stopped (what it finished is committed, the rest
  stays on its topic); one whose adapter or endpoint changed (a new URL, a rotated secret,
  another adapter kind) has its worker stopped and started afresh (a stopped or disabled
  one included). **Every other worker is left as it is**: a running one keeps its
  consumer and group membership, no pause in its deliveries; a stopped or disabled one
  waits for ``adapters enable``.

Why polling and not SIGHUP: a Compose config or a Kubernetes ConfigMap is replaced in
place without anyone to send a signal, and a stat every two seconds costs nothing. A
secret *file* changed without the connectors file changing is not noticed: touch the
connectors file after a rotation.

Why a module of its own, in pieces: the supervision of the workers (isolation, crash
counts, ``adapters enable``) is ``adapters.supervisor``'s business; this module only
decides which workers should run. The supervisor's main loop uses its pieces:
``ConnectorsFileWatch`` (has the file changed, its validated new version, the refusal
logged), ``plan_reload`` (pure: what to add, remove, restart, leave alone) and
``ensure_connector_topics``. A worker the file adds is supervised like the others: a
fatal error stops it alone, and ``adapters enable`` resumes it. A file that leaves no
connector leaves the process idle, not stopped.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from adapters.delivery import DeliveryConfigError, PartnerEndpoint
from adapters.endpoints import ConnectorsConfig, read_connectors
from adapters.worker import (
    AdapterCrashed,
    ConnectorStats,
    DelivererFactory,
    default_deliverer,
)
from config.catalogue import ConnectorSpec
from config.settings import Settings
from events.topics import Topics
from routing.broker import ensure_topics
from routing.services.backoff import RetrySchedule

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = structlog.get_logger("adapters.catalogue_reload")

#: Seconds between two looks at the connectors file.
RELOAD_INTERVAL = 2.0


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class ReloadReport:
    """What one reload did (also logged as ``connectors_reloaded``)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


Wanted = Mapping[str, tuple[ConnectorSpec, PartnerEndpoint]]


async def ensure_connector_topics(
    bootstrap_servers: str, topics: Topics, connector_ids: Sequence[str],
    replication_factor: int,
) -> None:
    """Create the partner topic and dead-letter topic of new connectors (``BrokerError``,
    e.g. ``TopicMismatch`` for an existing topic with another partition count)."""
    names = {n for cid in connector_ids
             for n in (topics.partner(cid), topics.partner_dlq(cid))}
    await ensure_topics(bootstrap_servers,
                        [spec for spec in topics.specs(connector_ids) if spec.name in names],
                        replication_factor)


def plan_reload(running: Wanted, wanted: Wanted) -> ReloadReport:
    """Which workers to stop, start and restart to go from ``running`` to ``wanted``.

    Pure, so any supervisor can apply it: a connector whose adapter and endpoint are
    unchanged is ``unchanged`` (a new display name included), never restarted.
    """
    report = ReloadReport()
    for cid, (spec, endpoint) in running.items():
        if cid not in wanted:
            report.removed.append(cid)
        elif (spec.adapter, endpoint) != (wanted[cid][0].adapter, wanted[cid][1]):
            report.restarted.append(cid)
        else:
            report.unchanged.append(cid)
    report.added = [cid for cid in wanted if cid not in running]
    return report


class ConnectorsFileWatch:
    """The connectors file as a process follows it: has it changed, and its new version.

    ``changed()`` compares modification time, size and inode with the last read;
    ``read()`` validates the whole file (``DeliveryConfigError``); ``refresh()`` reads a
    changed file and logs a refusal (``connectors_file_refused``), returning None then.
    """

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.environ = environ
        self.refused: str | None = None
        self._seen: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        return _fingerprint(self.path) != self._seen

    def retry(self) -> None:
        """Make the next ``changed()`` true, to apply the same file again."""
        self._seen = None

    def read(self) -> ConnectorsConfig:
        self._seen = _fingerprint(self.path)
        return read_connectors(self.path, self.environ)

    def refresh(self, running: Sequence[str] = ()) -> ConnectorsConfig | None:
        try:
            config = self.read()
        except DeliveryConfigError as exc:
            self.refused = str(exc)
            log.error("connectors_file_refused", path=str(self.path), reason=str(exc),
                      running=sorted(running))
            return None
        self.refused = None
        return config


class ReloadingAdapters:
    """``statement-router adapters``: the supervisor (``adapters.supervisor.supervise``)
    following a connectors file. A thin wrapper: the supervisor runs the slots and applies
    each reload; this class only reads the file first and exposes what tests and the CLI
    look at.

    ``connector_ids`` restricts the process to some connectors (``--connector``): changes
    to others are ignored. ``workers`` is the live set of slots (``_Slot``: ``worker``,
    ``task``, ``spec``; tests check that a slot left alone is the same object, its task
    still running); ``stats`` each one's ``ConnectorStats``. ``refused`` holds the last
    refusal's reason until a valid file.

    ``default_endpoint`` and ``on_reload`` are ``FileFollow``'s ``default`` and
    ``on_reload``: ``statement-router up`` runs this class too, with the embedded
    directory drop for a connector the file gives no endpoint.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        path: Path,
        *,
        bootstrap_servers: str,
        connector_ids: Sequence[str] | None = None,
        schedule: RetrySchedule | None = None,
        deliverer_factory: DelivererFactory = default_deliverer,
        stats: MutableMapping[str, ConnectorStats] | None = None,
        session_timeout_ms: int = 10_000,
        reload_interval: float = RELOAD_INTERVAL,
        environ: Mapping[str, str] | None = None,
        default_endpoint: Callable[[str], PartnerEndpoint] | None = None,
        on_reload: Callable[[ReloadReport, dict[str, PartnerEndpoint]], None] | None = None,
    ) -> None:
        from adapters.supervisor import FileFollow  # the supervisor builds on this module

        self.settings = settings
        self.path = path
        self.topics = topics
        self.bootstrap_servers = bootstrap_servers
        self.schedule = schedule
        self.deliverer_factory = deliverer_factory
        self.session_timeout_ms = session_timeout_ms
        self.stats: MutableMapping[str, ConnectorStats] = stats if stats is not None else {}
        self.started = asyncio.Event()
        self.follow = FileFollow(
            ConnectorsFileWatch(path, environ),
            only=None if connector_ids is None else frozenset(connector_ids),
            interval=reload_interval,
            replication_factor=settings.topic_replication_factor,
            default=default_endpoint,
            on_reload=on_reload,
        )

    @property
    def watch(self) -> ConnectorsFileWatch:
        return self.follow.watch

    @property
    def workers(self) -> Mapping[str, Any]:
        return self.follow.slots

    @property
    def reloads(self) -> int:
        return self.follow.reloads

    @property
    def refused(self) -> str | None:
        """Why the last version of the file was refused, until a valid one."""
        return self.follow.watch.refused

    async def run(
        self, stop_event: asyncio.Event, producer: AIOKafkaProducer
    ) -> dict[str, ConnectorStats]:
        """Run until ``stop_event``; ``AdapterCrashed`` once every worker has stopped.

        ``producer``: the process's started producer, which the caller owns
        (``routing.entrypoints.bootstrap.run_adapters_role``).
        """
        from adapters.supervisor import supervise

        config = self.watch.read()  # DeliveryConfigError: the caller refuses to start
        wanted = self.follow.wanted(config)
        if not wanted:
            raise AdapterCrashed("no connector to run: configure at least one partner endpoint")
        return await supervise(
            self.settings, self.topics, {cid: ep for cid, (_, ep) in wanted.items()},
            stop_event, producer=producer, bootstrap_servers=self.bootstrap_servers,
            schedule=self.schedule,
            deliverer_factory=self.deliverer_factory, stats=self.stats, started=self.started,
            session_timeout_ms=self.session_timeout_ms, follow=self.follow,
            specs={cid: spec for cid, (spec, _) in wanted.items()})
