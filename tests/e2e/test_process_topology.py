"""The docker-compose topology, run here without Docker: one OS process per role.

There is no Docker engine on this machine, so this test does what ``docker compose up``
would do, with the compose file itself as the script (``tests/unit/test_compose.py`` loads
it): for each service it takes the **command** and the **environment** from
``docker-compose.yml`` and runs the installed console script (``.venv/bin/statement-router``)
as its own process. Only what a container gets from its network is replaced, because on
one host every process needs its own: the broker (the session's embedded broker instead
of ``kafka:9092``), the database (a fresh PostgreSQL database instead of
``postgres:5432``), a unique topic prefix, free ports for the API and for each process's
``/metrics``, a data directory per process (as the router's per-container volume), and the
connectors file. The operator's ``partners.env`` is read as the adapters' ``env_file``.
Every other variable, ``TABLE_STORE=rocksdb://`` and ``LOG_FORMAT=json``
included, is the compose file's. The processes start with a minimal environment (no
inherited settings) and in an empty working directory, as in a container.

The order is compose's: ``migrate`` (``db upgrade && topics create``) must exit 0, then
the long-running roles start (the relay with its two replicas). The back office seeds a
cabinet, an admin user and two IBANs through one-shot CLI processes (``docker compose run
api statement-router …``); the cabinet's connector and the binding go through the HTTP
API; then one statement for the bound IBAN and one for the unbound IBAN go to
``statements.received``. End to end:

* the bound one reaches the partner, a real local HTTP webhook receiver that verifies the
  Standard Webhooks signature, under its statement id;
* the unbound one is in the cabinet's global file, downloaded through the API, and the
  bound one is not (rule 5);
* ``GET /statements/{id}`` (the ledger) shows the first delivered to ``acd`` and the
  second in the global file;
* every process serves ``/metrics``.

Every process is stopped with SIGTERM and must exit 0 (SIGKILL after a timeout, which
fails the test); on failure each process's output is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from tests.eventually import eventually
from tests.fixtures.broker import unique_prefix
from tests.integration.worker.receiver import WebhookReceiver
from tests.unit.router.factories import make_iban, statement
from tests.unit.test_compose import (
    env_files,
    load_compose,
    read_env_file,
    replicas,
    role_command,
    role_environment,
)

pytestmark = pytest.mark.timeout(900)

BIN = Path(sys.executable).parent
SCRIPT = BIN / "statement-router"
CABINET = "cab-topology"
BOUND, UNBOUND = make_iban(7_001), make_iban(7_002)
BOUND_ID, UNBOUND_ID = "st-topology-bound", "st-topology-unbound"
DAY = "2026-01-01"
LONG_RUNNING = ("api", "relay", "router", "adapters", "global-file", "ledger")
WITHIN = 240.0  # seconds, for each end-to-end wait: generous on a shared 2-core machine
STOP_TIMEOUT = 60.0

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def content(statement_id: str) -> bytes:
    """A 120-column CFONB-like line naming the statement, so the download can be read."""
    return f"01 {statement_id}".ljust(120, "-").encode()


@dataclass
class Role:
    """One running process of a compose service (one replica)."""

    service: str
    replica: int
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None
    api_port: int | None

    @property
    def label(self) -> str:
        return f"{self.service}#{self.replica}"


@dataclass
class Topology:
    """The compose services as processes on this host (see the module docstring)."""

    doc: dict[str, Any]
    work: Path
    host: dict[str, str]  # what the network gives a container: broker, database, prefix
    roles: list[Role] = field(default_factory=list)
    one_shots: list[tuple[str, subprocess.CompletedProcess[str]]] = field(default_factory=list)

    def environment(self, service: str, replica: int = 1) -> tuple[dict[str, str], int | None,
                                                                    int | None]:
        """The service's compose environment, with only the host-specific values replaced."""
        env: dict[str, str] = {}
        for path, required in env_files(self.doc, service):  # the project dir is `work`
            if (self.work / path).is_file():
                env.update(read_env_file(self.work / path))
            else:
                assert not required, f"{service}: env_file {path} is required"
        env.update(role_environment(self.doc, service))  # environment: wins over env_file
        for key, value in self.host.items():
            if key in env:
                env[key] = value
        metrics_port = api_port = None
        if "METRICS_PORT" in env:
            env["METRICS_HOST"] = "127.0.0.1"
            metrics_port = free_port()
            env["METRICS_PORT"] = str(metrics_port)
        if "API_PORT" in env:
            env["API_HOST"] = "127.0.0.1"
            api_port = free_port()
            env["API_PORT"] = str(api_port)
        if "DATA_DIR" in env:  # the per-container volume: one directory per process
            data_dir = self.work / "data" / f"{service}-{replica}"
            data_dir.mkdir(parents=True, exist_ok=True)
            env["DATA_DIR"] = str(data_dir)
        # What the image provides, nothing inherited from the test's environment.
        env.update(PATH=f"{BIN}:/usr/local/bin:/usr/bin:/bin", HOME=str(self.work),
                   LANG="C.UTF-8")
        return env, metrics_port, api_port

    async def run(self, service: str, argv: list[str] | None = None,
                  timeout: float = 180) -> subprocess.CompletedProcess[str]:  # noqa: ASYNC109
        """A one-shot with the service's environment: its compose command, or ``argv``
        (as ``docker compose run --rm <service> argv…``). It must exit 0."""
        env, _, _ = self.environment(service, replica=0)
        command = argv if argv is not None else role_command(self.doc, service)
        result = await asyncio.to_thread(
            subprocess.run, command, env=env, cwd=self.cwd(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        self.one_shots.append((f"{service}: {' '.join(command)}", result))
        assert result.returncode == 0, (
            f"{service} {command} exited {result.returncode}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
        return result

    def cwd(self) -> Path:
        path = self.work / "cwd"
        path.mkdir(exist_ok=True)
        return path

    def start(self, service: str) -> list[Role]:
        """Start the service's replicas (``deploy.replicas``), each its own process."""
        started = []
        for replica in range(1, replicas(self.doc, service) + 1):
            env, metrics_port, api_port = self.environment(service, replica)
            log = self.work / "logs" / f"{service}-{replica}.log"
            log.parent.mkdir(exist_ok=True)
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    role_command(self.doc, service), env=env, cwd=self.cwd(),
                    stdout=out, stderr=subprocess.STDOUT,
                )
            role = Role(service, replica, proc, log, metrics_port, api_port)
            self.roles.append(role)
            started.append(role)
        return started

    def of(self, service: str) -> list[Role]:
        return [r for r in self.roles if r.service == service]

    def assert_running(self) -> None:
        dead = [r for r in self.roles if r.proc.poll() is not None]
        assert not dead, "processes exited early: " + ", ".join(
            f"{r.label} (exit {r.proc.returncode})" for r in dead) + "\n" + self.report()

    def stop(self) -> dict[str, int]:
        """SIGTERM every process, as ``docker compose down`` does; SIGKILL the ones still
        running after ``STOP_TIMEOUT`` (their exit code is then negative)."""
        for role in self.roles:
            if role.proc.poll() is None:
                role.proc.send_signal(signal.SIGTERM)
        codes = {}
        for role in self.roles:
            try:
                role.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                role.proc.kill()
                role.proc.wait(timeout=30)
            codes[role.label] = role.proc.returncode
        return codes

    def report(self) -> str:
        parts = []
        for name, result in self.one_shots:
            if result.returncode != 0:
                parts.append(f"--- {name} (exit {result.returncode})\n{result.stderr[-3000:]}")
        for role in self.roles:
            text = role.log.read_text(errors="replace") if role.log.exists() else ""
            parts.append(f"--- {role.label} (exit {role.proc.poll()})\n{text[-4000:]}")
        return "\n".join(parts)


async def found(check: Callable[[], Awaitable[T | None]], what: str,
                topology: Topology, within: float = WITHIN) -> T:
    """``check``'s first non-None value; fail at once if a process of the topology dies."""
    result = await eventually(check, what, within=within, interval=0.5,
                              guard=topology.assert_running, done=lambda r: r is not None)
    assert result is not None
    return result


@contextlib.contextmanager
def stopped_at_exit(topology: Topology) -> Iterator[dict[str, int]]:
    """Stop every process at the end; on failure, print their output first."""
    codes: dict[str, int] = {}
    try:
        yield codes
    except BaseException:
        print(topology.report())
        raise
    finally:
        codes.update(topology.stop())


async def latest_states(bootstrap: str, topics: Topics) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    for record in await read_topic(bootstrap, topics.iban_state, timeout=60):
        if record.key is not None and record.value is not None:
            states[record.key.decode()] = json.loads(record.value)
    return states


async def test_the_compose_topology_routes_statements_end_to_end(
    kafka_broker: EmbeddedBroker, postgres_url: str, tmp_path: Path
) -> None:
    assert SCRIPT.is_file(), f"the console script is not installed at {SCRIPT}"
    doc = load_compose()
    bootstrap = kafka_broker.bootstrap_servers
    prefix = unique_prefix()
    partitions = int(role_environment(doc, "router")["TOPIC_PARTITIONS"])
    topics = Topics(prefix=prefix, partitions=partitions)

    receiver = WebhookReceiver()
    await receiver.start()
    acd = receiver.partner("acd")
    # The operator's files beside the compose file: the connectors file, whose secret is
    # a reference to a variable of partners.env (the adapters' env_file).
    connectors_file = tmp_path / "connectors.toml"
    connectors_file.write_text(f'[connectors.acd]\nurl = "{acd.url}"\nsecret_env = "ACD_WHSEC"\n')
    (tmp_path / "partners.env").write_text(f"# partner signing secrets\nACD_WHSEC={acd.secret}\n")
    topology = Topology(
        doc=doc,
        work=tmp_path,
        host={
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": postgres_url,
            "TOPIC_PREFIX": prefix,
            "CONNECTORS_FILE": str(connectors_file),
        },
    )
    try:
        with stopped_at_exit(topology) as exit_codes:
            # 1. migrate, a one-shot that must succeed before anything else starts.
            migrated = await topology.run("migrate")
            assert "latest schema" in migrated.stdout
            assert f"{topics.received}  partitions={partitions}" in migrated.stdout

            # 2. the long-running roles, each its own process (relay: two replicas).
            for service in LONG_RUNNING:
                topology.start(service)
            assert len(topology.of("relay")) == replicas(doc, "relay") == 2
            api_port = topology.of("api")[0].api_port
            assert api_port is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}",
                                         timeout=30) as api:
                await run_the_scenario(topology, api, receiver, bootstrap, topics)
        assert exit_codes, "the processes were not stopped"
        assert all(code == 0 for code in exit_codes.values()), (
            f"not every process stopped cleanly on SIGTERM: {exit_codes}\n{topology.report()}"
        )
    finally:
        await receiver.stop()


async def run_the_scenario(topology: Topology, api: httpx.AsyncClient,
                           receiver: WebhookReceiver, bootstrap: str, topics: Topics) -> None:
    async def api_up() -> bool | None:
        try:
            return (await api.get("/healthz")).status_code == 200 or None
        except httpx.TransportError:
            return None

    await found(api_up, "the API to answer /healthz", topology)

    # 3. the back office (one-shot CLI processes with the api's environment), then the
    # FAQ operations over HTTP. Every intermediate IBAN state is unroutable (pending
    # mandate), so however late the router sees the last one, nothing can go astray.
    await topology.run("api", [str(SCRIPT), "cabinet", "create", CABINET, "--name", "Topo"])
    created = await topology.run("api", [str(SCRIPT), "user", "create", "--cabinet", CABINET,
                                         "--profile", "administrateur"])
    token = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    for iban in (BOUND, UNBOUND):
        await topology.run("api", [str(SCRIPT), "iban", "add", iban, "--cabinet", CABINET])
    added = await api.post(f"/cabinets/{CABINET}/connectors", json={"connector_id": "acd"},
                           headers=headers)
    assert added.status_code == 201, added.text
    bound = await api.put(f"/ibans/{BOUND}/connector", json={"connector_id": "acd"},
                          headers=headers)
    assert bound.status_code == 200, bound.text
    for iban in (BOUND, UNBOUND):
        await topology.run("api", [str(SCRIPT), "mandate", "set", iban, "approved"])

    # 4. the relays publish the final states (from PostgreSQL's outbox) to iban.state.
    async def states_published() -> dict[str, dict[str, Any]] | None:
        states = await latest_states(bootstrap, topics)
        done = (states.get(BOUND, {}).get("connector_id") == "acd"
                and all(states.get(i, {}).get("mandate_status") == "approved"
                        for i in (BOUND, UNBOUND)))
        return states if done else None

    states = await found(states_published, "the relay to publish the IBAN states",
                              topology)
    assert states[UNBOUND]["connector_id"] is None

    # 5. one statement per IBAN, as a bank feed would publish them.
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        for sid, iban in ((BOUND_ID, BOUND), (UNBOUND_ID, UNBOUND)):
            sent = await producer.send(topics.received, statement(sid, iban,
                                                                  content=content(sid)),
                                       key=iban.encode())
            await sent
    finally:
        await producer.stop()

    # 6a. the bound statement reaches the partner, signed, under its statement id.
    async def delivered() -> list[Any] | None:
        hits = [h for h in receiver.delivered("acd") if h.statement_id == BOUND_ID]
        return hits or None

    hits = await found(delivered, "the partner to receive the bound statement", topology)
    assert all(h.verified and h.webhook_statement == BOUND_ID and h.iban == BOUND for h in hits)
    assert {h.statement_id for h in receiver.of("acd")} == {BOUND_ID}

    # 6b. the unbound statement is in the cabinet's global file; the bound one is not.
    async def global_file() -> httpx.Response | None:
        answer = await api.get(f"/cabinets/{CABINET}/global-file",
                               params={"from": DAY, "to": DAY}, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer if answer.headers.get("X-Statement-Count") == "1" else None

    download = await found(global_file, "the global file to hold the unbound statement",
                                topology)
    assert content(UNBOUND_ID) in download.content
    assert BOUND_ID.encode() not in download.content

    # 6c. the ledger's trace of each statement.
    async def trace(sid: str, status: str) -> dict[str, Any] | None:
        answer = await api.get(f"/statements/{sid}", headers=headers)
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["status"] == status else None

    bound_trace = await found(lambda: trace(BOUND_ID, "delivered"),
                                   "the ledger to show the bound statement delivered", topology)
    assert bound_trace["routing"]["destination"] == "partner"
    assert bound_trace["routing"]["connector_id"] == "acd"
    assert "delivered" in [o["outcome"] for o in bound_trace["outcomes"]]
    unbound_trace = await found(lambda: trace(UNBOUND_ID, "in_global_file"),
                                     "the ledger to show the unbound statement filed", topology)
    assert unbound_trace["routing"]["destination"] == "global-file"
    assert unbound_trace["global_file"]["cabinet_id"] == CABINET

    # 7. every process serves its metrics where Prometheus would scrape it.
    async with httpx.AsyncClient(timeout=10) as scraper:
        for role in topology.roles:
            port = role.api_port or role.metrics_port
            assert port is not None, role.label
            answer = await scraper.get(f"http://127.0.0.1:{port}/metrics")
            assert answer.status_code == 200, f"{role.label}: {answer.status_code}"
            assert "# TYPE " in answer.text, role.label
    topology.assert_running()
