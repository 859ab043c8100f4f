"""The production deployment, checked without Docker (there is no engine on this machine).

Two layers:

* **syntax**: ``docker-compose.yml`` is validated against the Compose Specification's own
  JSON Schema, vendored as ``deploy/compose-spec.json`` (origin in ``deploy/README.md``),
  with the validator the schema declares. The file is loaded with PyYAML's ``SafeLoader``,
  which resolves the ``<<:`` merge keys as Compose does, so the schema sees each service
  as Compose will;
* **meaning**, which no schema knows: each role has the environment it needs and every
  variable is a real setting (accepted by ``config.settings.Settings``), the router can
  be scaled, ``migrate`` completes before the roles start, ports bind loopback, commands
  exist in the CLI, and the files Prometheus and Grafana mount exist and agree.

Each semantic check is a function returning the problems it found, so the negative
controls below can show that every one of them fails on a broken copy of the file.

``tests/e2e/test_process_topology.py`` imports the loaders here to start the same roles,
with the same environment, as OS processes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from jsonschema import ValidationError
from jsonschema.validators import validator_for

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
DEPLOY_README = ROOT / "deploy" / "README.md"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus.yml"
DATASOURCES_FILE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_FILE = (
    ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "statement-router.yml"
)

IMAGE = "statement-router"
SCRIPT = "statement-router"  # [project.scripts] in pyproject.toml
ONE_SHOT = "migrate"
API = "api"
# The long-running roles the issue asks for, by compose service name.
ROLES = ("api", "relay", "router", "adapters", "global-file", "ledger")
METRICS_PORT = "9100"  # the contract with deploy/prometheus.yml
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - containers must listen beyond loopback
# Values the check of the environment gives to the secrets that compose interpolates.
FAKE_INTERPOLATION = {"POSTGRES_PASSWORD": "not-a-real-password"}

Doc = dict[str, Any]


# --- loading ---------------------------------------------------------------------------
def load_compose(path: Path = COMPOSE_FILE) -> Doc:
    """The compose file as Compose sees it: YAML with anchors and merge keys resolved."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def load_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def setting_names() -> set[str]:
    """The environment variable of every field of ``Settings`` (its alias, if it has one)."""
    names = set()
    for name, field in Settings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else name
        names.add(env.upper())
    return names


_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation of ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``.

    Enough for this file (no nesting); a missing required variable raises, as Compose
    refuses to start.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = variables.get(name)
        empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if empty else str(current)
        if op in ("?", ":?"):
            if empty:
                raise KeyError(f"{name}: {arg}")
            return str(current)
        return "" if current is None else str(current)

    return _INTERPOLATION.sub(replace, value)


def services(doc: Doc) -> dict[str, Doc]:
    found = doc.get("services", {})
    assert isinstance(found, dict)
    return found


def app_services(doc: Doc) -> dict[str, Doc]:
    """The services that run our image (the one-shot and the roles)."""
    return {
        name: svc
        for name, svc in services(doc).items()
        if str(svc.get("image", "")).split(":")[0] == IMAGE
    }


def raw_environment(service: Doc) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the list form: "KEY=value" or "KEY" (passed through)
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) == 2 else None) for p in pairs}
    assert isinstance(env, dict)
    return dict(env)


def role_environment(
    doc: Doc, name: str, variables: Mapping[str, str] = FAKE_INTERPOLATION
) -> dict[str, str]:
    """The variables compose sets in the service's container, interpolated.

    A key without a value is passed through from the operator's environment by Compose;
    the operator here sets none, so it is left out.
    """
    env = {}
    for key, value in raw_environment(services(doc)[name]).items():
        if value is None:
            continue
        env[key] = interpolate(str(value), variables)
    return env


def env_files(doc: Doc, name: str) -> list[tuple[str, bool]]:
    """The service's ``env_file`` entries: (path relative to the project, required)."""
    entries = services(doc)[name].get("env_file", [])
    if isinstance(entries, str):
        entries = [entries]
    return [(e, True) if isinstance(e, str) else (e["path"], bool(e.get("required", True)))
            for e in entries]


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as Compose reads them (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def role_command(doc: Doc, name: str) -> list[str]:
    command = services(doc)[name].get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list)
    return [str(part) for part in command]


def cli_invocations(command: list[str]) -> list[list[str]]:
    """The ``statement-router ...`` invocations a command runs (``sh -c "a && b"`` too)."""
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command]


def replicas(doc: Doc, name: str) -> int:
    deploy = services(doc)[name].get("deploy") or {}
    return int(deploy.get("replicas", 1))


def _depends_on(service: Doc) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _port_strings(service: Doc) -> list[str]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(f"{port.get('host_ip', '')}:{port.get('published', '')}:"
                         f"{port.get('target', '')}")
        else:
            ports.append(str(port))
    return ports


def _volumes(service: Doc) -> list[dict[str, Any]]:
    """Volumes in the long syntax, short strings converted."""
    found: list[dict[str, Any]] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append(volume)
            continue
        parts = str(volume).split(":")
        if len(parts) == 1:
            found.append({"type": "volume", "target": parts[0]})
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        found.append({"type": kind, "source": source, "target": target,
                      "read_only": len(parts) > 2 and "ro" in parts[2].split(",")})
    return found


def _healthcheck_urls(service: Doc) -> list[str]:
    check = service.get("healthcheck") or {}
    test = check.get("test", [])
    text = " ".join(test) if isinstance(test, list) else str(test)
    return re.findall(r"https?://[^'\"\s]+", text)


# --- the semantic checks: each returns its problems --------------------------------------
def check_roles_present(doc: Doc) -> list[str]:
    missing = [r for r in (ONE_SHOT, *ROLES) if r not in app_services(doc)]
    return [f"service {r} is missing or does not run the {IMAGE} image" for r in missing]


def check_settings_exist(doc: Doc) -> list[str]:
    known = setting_names()
    return [
        f"{name}: {key} is not a setting of config.settings.Settings"
        for name, svc in app_services(doc).items()
        for key in raw_environment(svc)
        if key.upper() not in known
    ]


def check_settings_accepted(doc: Doc, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every role's environment, interpolated, is accepted by ``Settings`` (types, ranges,
    patterns), exactly as the process would read it at start-up."""
    problems = []
    for name in app_services(doc):
        with monkeypatch.context() as patch:
            for key in setting_names():
                patch.delenv(key, raising=False)
            for key, value in role_environment(doc, name).items():
                patch.setenv(key, value)
            try:
                Settings()
            except ValueError as exc:
                problems.append(f"{name}: Settings refuses its environment: {exc}")
    return problems


def check_role_environment(doc: Doc) -> list[str]:
    """What each role needs to run against the compose Kafka and PostgreSQL."""
    problems = []
    svcs = services(doc)
    kafka_env = raw_environment(svcs.get("kafka", {}))
    advertised = str(kafka_env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    listeners = dict(item.split("://", 1) for item in advertised.split(",") if "://" in item)
    internal = listeners.get(str(kafka_env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")))
    shared: dict[str, set[str]] = {}
    for name in app_services(doc):
        env = role_environment(doc, name)
        for key in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "TOPIC_PREFIX",
                    "TOPIC_PARTITIONS"):
            if not env.get(key):
                problems.append(f"{name}: {key} is not set")
            else:
                shared.setdefault(key, set()).add(env[key])
        url = env.get("DATABASE_URL", "")
        if not re.match(r"^postgres(ql)?(\+asyncpg)?://[^@/]+@postgres:5432/", url):
            problems.append(f"{name}: DATABASE_URL does not point at the postgres service")
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap or bootstrap != internal:
            problems.append(f"{name}: KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} is not the "
                            f"listener the kafka service advertises inside the network "
                            f"({internal})")
        if env.get("LOG_FORMAT") != "json":
            problems.append(f"{name}: LOG_FORMAT is not json (logs go to a log shipper)")
        if name in ROLES and name != API and (
            env.get("METRICS_HOST") != ALL_INTERFACES or env.get("METRICS_PORT") != METRICS_PORT
        ):
            problems.append(f"{name}: metrics must be served on 0.0.0.0:{METRICS_PORT}")
    for key, values in shared.items():
        if len(values) > 1:
            problems.append(f"{key} differs between the roles: {sorted(values)}")
    partitions = shared.get("TOPIC_PARTITIONS", {"0"})
    if min(int(p) for p in partitions) < 3:
        problems.append("TOPIC_PARTITIONS < 3: `--scale router=3` would leave routers idle")
    return problems


def check_api(doc: Doc) -> list[str]:
    svc = services(doc).get(API, {})
    env = role_environment(doc, API)
    problems = []
    if env.get("API_HOST") != ALL_INTERFACES:
        problems.append("api: API_HOST must be 0.0.0.0 in a container (the port is published)")
    port = env.get("API_PORT", "8080")
    if not any(p.endswith(f":{port}") for p in _port_strings(svc)):
        problems.append(f"api: no published port targets API_PORT {port}")
    if not any(f"127.0.0.1:{port}/healthz" in url for url in _healthcheck_urls(svc)):
        problems.append(f"api: its healthcheck does not ask 127.0.0.1:{port}/healthz")
    return problems


def check_router_scalable(doc: Doc) -> list[str]:
    """``docker compose up --scale router=3``: replicas need distinct names, no shared host
    port, and RocksDB directories of their own."""
    router = services(doc).get("router", {})
    env = role_environment(doc, "router")
    problems = []
    if "container_name" in router:
        problems.append("router: container_name prevents --scale")
    if router.get("ports"):
        problems.append("router: published ports prevent --scale")
    if env.get("TABLE_STORE") != "rocksdb://":
        problems.append("router: TABLE_STORE is not rocksdb://")
    data_dir = env.get("DATA_DIR")
    per_container = [
        v for v in _volumes(router)
        if v.get("type") == "volume" and not v.get("source") and v.get("target") == data_dir
    ]
    if not per_container:
        problems.append(f"router: DATA_DIR ({data_dir}) is not on a per-container "
                        "(anonymous) volume")
    shared = [v for v in _volumes(router) if v.get("source")
              and str(data_dir).startswith(str(v.get("target")))]
    if shared:
        problems.append(f"router: DATA_DIR is on a volume every replica shares: {shared}")
    return problems


def check_no_fixed_names(doc: Doc) -> list[str]:
    """No role of ours is pinned to one container (all can be scaled or replaced)."""
    return [f"{name}: container_name" for name, svc in app_services(doc).items()
            if "container_name" in svc]


def check_ports_loopback(doc: Doc) -> list[str]:
    problems = []
    for name, svc in services(doc).items():
        for port in _port_strings(svc):
            if not port.startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
        if name in app_services(doc) and name != API and svc.get("ports"):
            problems.append(f"{name}: only the api publishes a port")
    return problems


def check_startup_order(doc: Doc) -> list[str]:
    svcs = services(doc)
    problems = []
    migrate = svcs.get(ONE_SHOT, {})
    if str(migrate.get("restart", "no")) != "no":
        problems.append("migrate: a one-shot must not restart")
    steps = [inv[1:] for inv in cli_invocations(role_command(doc, ONE_SHOT))]
    if steps != [["db", "upgrade"], ["topics", "create"]]:
        problems.append(f"migrate: runs {steps}, not db upgrade then topics create")
    if "&&" not in " ".join(role_command(doc, ONE_SHOT)):
        problems.append("migrate: topics create must run only if db upgrade succeeded")
    for dep in ("postgres", "kafka"):
        if _depends_on(migrate).get(dep) != "service_healthy":
            problems.append(f"migrate: does not wait for {dep} to be healthy")
        if not (svcs.get(dep, {}).get("healthcheck") or {}).get("test"):
            problems.append(f"{dep}: no healthcheck to wait for")
    for name, svc in app_services(doc).items():
        if name == ONE_SHOT:
            continue
        if _depends_on(svc).get(ONE_SHOT) != "service_completed_successfully":
            problems.append(f"{name}: does not wait for migrate to complete successfully")
    return problems


def check_long_running(doc: Doc) -> list[str]:
    """Restart policies, and healthchecks that ask the role's own port."""
    problems = []
    for name in ROLES:
        svc = services(doc).get(name, {})
        if svc.get("restart") not in ("unless-stopped", "always", "on-failure"):
            problems.append(f"{name}: restart policy {svc.get('restart')!r}")
        if name == API:
            continue
        if not any(f"127.0.0.1:{METRICS_PORT}/healthz" in u for u in _healthcheck_urls(svc)):
            problems.append(f"{name}: its healthcheck does not ask its metrics port")
    return problems


def _cli_root() -> Any:
    """The CLI's click command tree (typer vendors its own click, so it is duck-typed)."""
    from routing.entrypoints.cli.main import app

    return typer.main.get_command(app)


def check_commands_exist(doc: Doc) -> list[str]:
    """Every command compose runs is a command of the CLI, with arguments it accepts."""
    problems = []
    for name in app_services(doc):
        for invocation in cli_invocations(role_command(doc, name)):
            if invocation[:1] != [SCRIPT]:
                problems.append(f"{name}: runs {invocation[:1]}, not {SCRIPT}")
                continue
            command = _cli_root()
            args = invocation[1:]
            while hasattr(command, "commands") and args and args[0] in command.commands:
                command, args = command.commands[args[0]], args[1:]
            # A group runs only if it runs without a subcommand (``adapters``, which has one).
            if hasattr(command, "commands") and not getattr(command, "invoke_without_command",
                                                            False):
                problems.append(f"{name}: {' '.join(invocation)} is not a command")
                continue
            try:
                command.make_context(command.name or "", list(args))
            except Exception as exc:  # click's UsageError, from typer's vendored click
                if not hasattr(exc, "format_message"):
                    raise
                problems.append(f"{name}: {' '.join(invocation)}: {exc.format_message()}")
    return problems


def check_adapters_connectors_file(doc: Doc) -> list[str]:
    svc = services(doc).get("adapters", {})
    path = role_environment(doc, "adapters").get("CONNECTORS_FILE")
    if not path:
        return ["adapters: CONNECTORS_FILE is not set"]
    mounted = [c for c in svc.get("configs", []) if isinstance(c, dict)
               and c.get("target") == path and c.get("source") in doc.get("configs", {})]
    mounted += [v for v in _volumes(svc) if v.get("target") == path and v.get("read_only")]
    if not mounted:
        return [f"adapters: CONNECTORS_FILE {path} is not mounted read-only (config or "
                "read-only volume)"]
    return []


def check_mounted_files_exist(doc: Doc) -> list[str]:
    """The repository files that Prometheus and Grafana mount (and the build) exist."""
    problems = []
    for name, svc in services(doc).items():
        for volume in _volumes(svc):
            source = str(volume.get("source", ""))
            is_repo_file = volume.get("type") == "bind" and source.startswith("./")
            if is_repo_file and not (ROOT / source).exists():
                problems.append(f"{name}: mounts {source}, which is not in the repository")
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            if not (ROOT / context / "Dockerfile").is_file():
                problems.append(f"{name}: no Dockerfile in its build context {context}")
    return problems


def _bind_target(doc: Doc, service: str, source: str) -> str | None:
    for volume in _volumes(services(doc).get(service, {})):
        if volume.get("source") == source:
            return str(volume.get("target"))
    return None


def check_monitoring(doc: Doc) -> list[str]:
    """Prometheus scrapes every role where it serves metrics; Grafana gets the datasource
    the dashboard refers to, and loads the dashboard from where it is mounted."""
    problems = []
    if _bind_target(doc, "prometheus", "./deploy/prometheus.yml") != (
        "/etc/prometheus/prometheus.yml"
    ):
        problems.append("prometheus: deploy/prometheus.yml is not its configuration")
    if _bind_target(doc, "grafana", "./deploy/grafana/provisioning") != (
        "/etc/grafana/provisioning"
    ):
        problems.append("grafana: deploy/grafana/provisioning is not mounted as provisioning")
    prometheus = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    scraped: dict[str, set[str]] = {}
    for job in prometheus.get("scrape_configs", []):
        for sd in job.get("dns_sd_configs", []):
            for target in sd.get("names", []):
                scraped.setdefault(target, set()).add(str(sd.get("port")))
    for name in ROLES:
        env = role_environment(doc, name)
        port = env.get("API_PORT", "8080") if name == API else env.get("METRICS_PORT")
        if port not in scraped.get(name, set()):
            problems.append(f"prometheus does not scrape {name} on port {port}")
    for target in scraped:
        if target not in services(doc):
            problems.append(f"prometheus scrapes {target}, which is no compose service")

    datasources = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))
    uids = {d.get("uid") for d in datasources.get("datasources", [])}
    prom_urls = [d.get("url") for d in datasources.get("datasources", [])
                 if d.get("type") == "prometheus"]
    if "prometheus" not in uids:
        problems.append("grafana: no datasource with uid prometheus")
    if "http://prometheus:9090" not in prom_urls:
        problems.append("grafana: the Prometheus datasource does not point at prometheus:9090")
    dashboard_target = _bind_target(doc, "grafana", "./deploy/grafana/statement-router.json")
    providers = yaml.safe_load(DASHBOARDS_FILE.read_text(encoding="utf-8"))
    paths = {p.get("options", {}).get("path") for p in providers.get("providers", [])}
    if dashboard_target is None or str(Path(dashboard_target).parent) not in paths:
        problems.append(f"grafana: the dashboard is mounted at {dashboard_target}, which no "
                        f"dashboard provider reads ({sorted(map(str, paths))})")
    dashboard = (ROOT / "deploy" / "grafana" / "statement-router.json").read_text("utf-8")
    used = set(re.findall(r'"datasource"\s*:\s*\{[^{}]*"uid"\s*:\s*"([^"]+)"', dashboard))
    unknown = used - uids - {"grafana", "-- Grafana --", "${datasource}", "$datasource"}
    if unknown:
        problems.append(f"grafana: the dashboard uses datasources {sorted(unknown)} that are "
                        "not provisioned")
    return problems


SEMANTIC_CHECKS: dict[str, Callable[[Doc], list[str]]] = {
    "roles present": check_roles_present,
    "settings exist": check_settings_exist,
    "role environment": check_role_environment,
    "api": check_api,
    "router scalable": check_router_scalable,
    "no fixed names": check_no_fixed_names,
    "ports loopback": check_ports_loopback,
    "startup order": check_startup_order,
    "long running": check_long_running,
    "commands exist": check_commands_exist,
    "connectors file": check_adapters_connectors_file,
    "mounted files": check_mounted_files_exist,
    "monitoring": check_monitoring,
}


# --- the tests ---------------------------------------------------------------------------
def validation_errors(doc: Doc) -> list[ValidationError]:
    schema = load_schema()
    validator = validator_for(schema)(schema)
    return sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))


def test_the_vendored_schema_is_the_recorded_upstream_copy() -> None:
    """deploy/README.md records where the schema comes from and its hash: a local edit of
    the schema (which could make a broken compose file pass) shows up here."""
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest in DEPLOY_README.read_text(encoding="utf-8")
    schema = load_schema()
    assert schema["title"] == "Compose Specification"
    validator_for(schema).check_schema(schema)


def test_the_compose_file_follows_the_compose_specification() -> None:
    errors = validation_errors(load_compose())
    assert errors == [], "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def _set(doc: Doc, path: str, value: Any) -> None:
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("servics", {}, id="unknown-top-level-key"),
        pytest.param("services/router/enviroment", {"A": "b"}, id="misspelt-service-key"),
        pytest.param("services/api/depends_on/migrate/condition", "service_done",
                     id="unknown-depends-on-condition"),
        pytest.param("services/postgres/healthcheck/interval", 5, id="interval-not-a-duration"),
        pytest.param("services/router/command", {"run": "router"}, id="command-is-a-mapping"),
        pytest.param("services/router/volumes", [{"target": "/data"}], id="volume-without-type"),
        pytest.param("volumes/kafka-data", {"drivr": "local"}, id="unknown-volume-key"),
    ],
)
def test_the_schema_check_fails_on_a_broken_file(path: str, value: Any) -> None:
    """Negative controls: the same validation rejects a broken copy of the real file."""
    doc = copy.deepcopy(load_compose())
    _set(doc, path, value)
    errors = validation_errors(doc)
    assert errors, f"the schema accepted {path} = {value!r}"
    with pytest.raises(ValidationError):
        schema = load_schema()
        validator_for(schema)(schema).validate(doc)


def test_merge_keys_are_resolved_as_compose_resolves_them() -> None:
    """Every role got the shared anchor's settings, and no ``<<`` key is left for the
    schema (which would reject it) or for Compose to see."""
    doc = load_compose()
    assert "<<" not in json.dumps(doc)
    for name in app_services(doc):
        env = role_environment(doc, name)
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert env["DATABASE_URL"].endswith("@postgres:5432/statement_router"), name


@pytest.mark.parametrize("check", list(SEMANTIC_CHECKS))
def test_the_compose_file_means_what_the_deployment_needs(check: str) -> None:
    assert SEMANTIC_CHECKS[check](load_compose()) == []


def test_every_role_environment_is_accepted_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert check_settings_accepted(load_compose(), monkeypatch) == []


def test_required_secrets_are_interpolated_not_written() -> None:
    """The database password comes from the operator's environment or .env: Compose
    refuses to start without it, and the file holds no value for it."""
    doc = load_compose()
    raw = raw_environment(services(doc)["router"])["DATABASE_URL"]
    assert "${POSTGRES_PASSWORD:?" in raw
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        role_environment(doc, "router", variables={})
    assert role_environment(doc, "router", {"POSTGRES_PASSWORD": "s3cr3t"})[
        "DATABASE_URL"
    ] == "postgresql://statement_router:s3cr3t@postgres:5432/statement_router"
    # The operator token hash is passed through (unset: /ops refuses everyone).
    assert raw_environment(services(doc)[API])["OPERATOR_TOKEN_SHA256"] is None


def _mutations() -> list[Any]:
    """(check, mutation, expected problem): each semantic check fails on a broken copy."""

    def drop_env(service: str, key: str) -> Callable[[Doc], object]:
        return lambda d: services(d)[service]["environment"].pop(key)

    def set_env(service: str, key: str, value: Any) -> Callable[[Doc], object]:
        return lambda d: services(d)[service]["environment"].__setitem__(key, value)

    def set_key(service: str, key: str, value: Any) -> Callable[[Doc], object]:
        return lambda d: services(d)[service].__setitem__(key, value)

    cases: list[tuple[str, str, Callable[[Doc], object], str]] = [
        ("roles present", "no-ledger", lambda d: services(d).pop("ledger"), "ledger"),
        ("settings exist", "typo-in-a-setting", set_env("router", "TOPIC_PARTITION", "6"),
         "TOPIC_PARTITION is not a setting"),
        ("role environment", "no-database", drop_env("relay", "DATABASE_URL"),
         "relay: DATABASE_URL is not set"),
        ("role environment", "partitions-disagree", set_env("router", "TOPIC_PARTITIONS", "12"),
         "TOPIC_PARTITIONS differs"),
        ("role environment", "too-few-partitions",
         lambda d: [svc["environment"].__setitem__("TOPIC_PARTITIONS", "2")
                    for svc in app_services(d).values()],
         "TOPIC_PARTITIONS < 3"),
        ("role environment", "wrong-bootstrap", set_env("ledger", "KAFKA_BOOTSTRAP_SERVERS",
                                                        "localhost:9092"),
         "ledger: KAFKA_BOOTSTRAP_SERVERS"),
        ("role environment", "metrics-on-loopback", set_env("adapters", "METRICS_HOST",
                                                           "127.0.0.1"),
         "adapters: metrics"),
        ("api", "api-on-loopback", set_env("api", "API_HOST", "127.0.0.1"), "API_HOST"),
        ("router scalable", "container-name", set_key("router", "container_name", "router"),
         "container_name"),
        ("router scalable", "host-port", set_key("router", "ports", ["127.0.0.1:9100:9100"]),
         "published ports"),
        ("router scalable", "shared-rocksdb",
         set_key("router", "volumes", ["router-data:/var/lib/statement-router"]),
         "every replica shares"),
        ("router scalable", "memory-tables", set_env("router", "TABLE_STORE", "memory://"),
         "TABLE_STORE"),
        ("no fixed names", "pinned-relay", set_key("relay", "container_name", "relay"),
         "relay: container_name"),
        ("ports loopback", "public-port", set_key("grafana", "ports", ["3000:3000"]),
         "not bound to 127.0.0.1"),
        ("startup order", "no-wait", lambda d: services(d)["router"].pop("depends_on"),
         "router: does not wait for migrate"),
        ("startup order", "started-not-completed",
         set_key("ledger", "depends_on", {"migrate": {"condition": "service_started"}}),
         "ledger: does not wait for migrate"),
        ("startup order", "topics-first",
         set_key("migrate", "command", ["sh", "-c",
                                        "statement-router topics create; "
                                        "statement-router db upgrade"]),
         "migrate: runs"),
        ("startup order", "restarting-one-shot", set_key("migrate", "restart", "always"),
         "must not restart"),
        ("long running", "no-restart", set_key("global-file", "restart", "no"),
         "global-file: restart policy"),
        ("long running", "health-elsewhere",
         lambda d: services(d)["relay"].__setitem__("healthcheck", {"test": ["CMD", "true"]}),
         "relay: its healthcheck"),
        ("commands exist", "unknown-command", set_key("ledger", "command",
                                                      ["statement-router", "ledgers"]),
         "is not a command"),
        ("commands exist", "unknown-option", set_key("router", "command",
                                                     ["statement-router", "router", "--fast"]),
         "No such option"),
        ("connectors file", "not-mounted", lambda d: services(d)["adapters"].pop("configs"),
         "not mounted read-only"),
        ("mounted files", "missing-file",
         set_key("prometheus", "volumes", ["./deploy/prometheus-missing.yml:/etc/p.yml:ro"]),
         "not in the repository"),
        ("monitoring", "dashboard-elsewhere",
         set_key("grafana", "volumes", [
             "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
             "./deploy/grafana/statement-router.json:/var/lib/grafana/x/statement-router.json",
         ]),
         "no dashboard provider reads"),
        ("monitoring", "metrics-port-moved", set_env("router", "METRICS_PORT", "9200"),
         "does not scrape router on port 9200"),
    ]
    return [pytest.param(check, mutate, expected, id=ident)
            for check, ident, mutate, expected in cases]


@pytest.mark.parametrize(("check", "mutate", "expected"), _mutations())
def test_each_semantic_check_fails_on_a_broken_file(
    check: str, mutate: Callable[[Doc], object], expected: str
) -> None:
    doc = copy.deepcopy(load_compose())
    mutate(doc)
    problems = SEMANTIC_CHECKS[check](doc)
    assert any(expected in p for p in problems), problems


def test_a_bad_setting_value_is_refused_like_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = copy.deepcopy(load_compose())
    services(doc)["router"]["environment"]["LOG_FORMAT"] = "fancy"
    problems = check_settings_accepted(doc, monkeypatch)
    assert len(problems) == 1 and problems[0].startswith("router:"), problems


def test_the_dockerfile_installs_the_project_as_pyproject_describes() -> None:
    """Not built here (no Docker engine): check it is consistent with pyproject.toml."""
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    dockerfile = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["requires-python"] == ">=3.11"
    assert "python:3.11-slim" in dockerfile
    assert project["project"]["scripts"][SCRIPT]
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"][
        "include"]]
    readme = project["project"]["readme"]
    for path in (*packages, "pyproject.toml", readme):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", dockerfile, re.M), path
        assert f"!{path}" in ignore or f"!{path}/" in ignore, path
    assert "pip wheel --wheel-dir /wheels ." in dockerfile
    assert re.search(rf"pip install --no-index --find-links /wheels {SCRIPT}$", dockerfile, re.M)
    assert not re.search(r"pip (install|wheel)[^\n]*\[", dockerfile)  # no extras: no dev deps
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    for secret in ("**/.env", "**/*.env", "**/secrets/"):
        assert secret in ignore, secret
    assert "*" in ignore, "the build context is deny-by-default"


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    """One version: the tests' local broker (KAFKA_VERSION, resolved from Maven Central) is
    the one production runs, so the production path is the tested path."""
    from routing.broker.kafka_local import KAFKA_VERSION

    image = load_compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{KAFKA_VERSION}"
