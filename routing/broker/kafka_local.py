"""Apache Kafka itself, run on loopback as our child process: the production broker locally.

Production runs Apache Kafka (``docker-compose.yml``); the embedded default is Tansu, which
differs where it matters most (no transactions, no compaction, memory only). This module
runs the real broker, from Apache's own artifacts, with the same interface as
:class:`~routing.broker.embedded.EmbeddedBroker`: the tests' session fixture and
``statement-router up --broker kafka`` use it.

* **Class path.** ``kafka-broker.pom.xml`` (beside this file) names
  ``org.apache.kafka:kafka_2.13`` at :data:`KAFKA_VERSION` and a Log4j 2 binding. The first
  use runs Maven once (``dependency:copy-dependencies``) into a cache directory; every later
  run reuses the jars with no network and no Maven. A file lock makes concurrent first uses
  (two test processes) resolve once.
* **One node, KRaft.** Broker and controller in one JVM, on two free loopback ports, with
  the settings a single node needs: replication factor 1 for the offsets and
  transaction-state topics, ``min.insync.replicas=1``, no initial rebalance delay. Topic
  auto-creation is off, as in ``docker-compose.yml``: the pipeline creates its topics.
* **Data.** With a ``log_dir``, the data lives in ``<log_dir>/data`` and survives a restart
  (the formatted cluster id is read back); without one, a temporary directory is removed
  on ``stop()``.

:data:`KAFKA_VERSION` is the one place that states the version: the pom takes it as a
property and a test checks that ``docker-compose.yml`` runs the same image tag.
"""

from __future__ import annotations

import base64
import fcntl
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from routing.broker.errors import BrokerStartupError
from routing.broker.process import BrokerProcess, free_port

__all__ = ["KAFKA_VERSION", "LocalKafka", "find_java", "resolve_kafka_classpath"]

KAFKA_VERSION = "4.1.1"

_POM = Path(__file__).with_name("kafka-broker.pom.xml")
_COMPLETE_MARKER = ".complete"
_RESOLVE_TIMEOUT_S = 600
_FORMAT_TIMEOUT_S = 120
_JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def default_cache_dir() -> Path:
    """Where resolved broker jars are kept between runs (per user, per version)."""
    return Path.home() / ".cache" / "statement-router" / "kafka" / KAFKA_VERSION


def find_java(java: str | Path | None = None) -> str:
    """The ``java`` executable to run the broker with, or a message saying what is missing."""
    found = str(java) if java is not None else shutil.which("java")
    if found is None or not Path(found).exists():
        raise BrokerStartupError(
            "Apache Kafka needs a Java runtime (17 or newer) and none was found: there is no "
            "`java` on PATH. Install a JDK (Debian: apt-get install openjdk-17-jre-headless) "
            "or run with the embedded broker (--broker tansu, the default)."
        )
    return found


def resolve_kafka_classpath(cache_dir: Path | None = None, *, mvn: str | None = None) -> Path:
    """The directory holding the broker's jars, resolving them with Maven on first use.

    Later calls find the completed cache and touch neither Maven nor the network. A failed
    resolution leaves no half-filled cache behind: jars are copied into a temporary sibling
    directory that is renamed only once Maven succeeded.
    """
    target = cache_dir or default_cache_dir()
    if (target / _COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _COMPLETE_MARKER).exists():
            return target  # another process resolved it while we waited
        maven = mvn or shutil.which("mvn")
        if maven is None:
            raise BrokerStartupError(
                f"the Apache Kafka {KAFKA_VERSION} jars are not cached in {target} yet, and "
                "resolving them needs Maven: there is no `mvn` on PATH (Debian: apt-get "
                "install maven)."
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            result = _run_maven(maven, staging)
            if result.returncode != 0:
                output = (result.stdout + result.stderr).strip()[-2_000:]
                raise BrokerStartupError(
                    f"Maven could not resolve Apache Kafka {KAFKA_VERSION} "
                    f"(exit {result.returncode}):\n{output}"
                )
            (staging / _COMPLETE_MARKER).write_text(KAFKA_VERSION + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _run_maven(maven: str, output_dir: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                maven,
                "--batch-mode",
                "--quiet",
                "--file",
                str(_POM),
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={output_dir}",
            ],
            capture_output=True,
            text=True,
            timeout=_RESOLVE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerStartupError(
            f"cannot run Maven ({maven}) to resolve Apache Kafka {KAFKA_VERSION}: {exc}"
        ) from exc


def _new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding, as Kafka's.

    Like Kafka's ``Uuid.randomUuid``, never one that starts with ``-``: the storage tool
    would read it as an option (``--cluster-id: expected one argument``).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _read_cluster_id(data_dir: Path) -> str | None:
    meta = data_dir / "meta.properties"
    if not meta.exists():
        return None
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


class LocalKafka(BrokerProcess):
    """One Apache Kafka node (KRaft, broker and controller) on loopback, as a child process.

    Args (besides :class:`BrokerProcess`'s port, host, log_dir and timeouts):
        java: the ``java`` executable; None means the one on PATH.
        cache_dir: where the broker's jars are cached; None means :func:`default_cache_dir`.
        properties: extra ``server.properties`` entries, overriding the single-node ones.
        heap: the JVM's ``-Xmx``.
    """

    name = "the local Apache Kafka broker"
    log_name = "kafka.log"
    address_in_use_markers = ("Address already in use",)

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        java: str | Path | None = None,
        cache_dir: Path | None = None,
        properties: Mapping[str, str] | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            port=port,
            host=host,
            log_dir=log_dir,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        )
        self._java = java
        self._cache_dir = cache_dir
        self._extra_properties = dict(properties or {})
        self._cluster_id: str | None = None

    @property
    def cluster_id(self) -> str:
        if self._cluster_id is None:
            raise BrokerStartupError(f"{self.name} has no cluster id before its first start")
        return self._cluster_id

    def server_properties(self, port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
        """The node's settings: one broker that is its own controller, fit for one machine."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self._host}:{controller_port}",
            "listeners": f"PLAINTEXT://{self._host}:{port},CONTROLLER://{self._host}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self._host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "1000",
            **self._extra_properties,
        }

    def _command(self, port: int, work_dir: Path) -> list[str]:
        java = find_java(self._java)
        classpath = f"{resolve_kafka_classpath(self._cache_dir)}/*"
        data_dir = work_dir / "data"
        controller_port = free_port(self._host)
        properties = self.server_properties(port, controller_port, data_dir)
        config = work_dir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        log4j = work_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        jvm = [java, *_JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        self._cluster_id = _read_cluster_id(data_dir)
        if self._cluster_id is None:
            self._cluster_id = _new_cluster_id()
            self._format(jvm, config)
        return [*jvm, "kafka.Kafka", str(config)]

    def _format(self, jvm: list[str], config: Path) -> None:
        """Format the log directory for KRaft once (``kafka-storage.sh format``)."""
        assert self._cluster_id is not None
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*jvm, "kafka.tools.StorageTool", "format", "-t", self._cluster_id, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=_FORMAT_TIMEOUT_S,
            env=self._env,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-2_000:]
            raise BrokerStartupError(
                f"formatting the Kafka log directory failed (exit {result.returncode}):\n{output}"
            )
