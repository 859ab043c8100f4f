"""The metric catalogue: names, labels, and what the dashboard, the scrape config and the
docs say about it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import yaml

from routing.observability.metrics import (
    FORBIDDEN_LABELS,
    METRICS,
    PREFIX,
    REGISTRY,
    faust_metrics,
)
from routing.observability.monitor.collector import ConsumerLagCollector
from routing.observability.monitor.service import MonitorService

from .series import exposed_series_names, label_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "statement-router.json"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
NAME = re.compile(r"\bstatement_router_\w+")


def lag_collector() -> ConsumerLagCollector:
    # describe() declares the families without touching the service (no broker here).
    return ConsumerLagCollector(cast(MonitorService, None))


def strings(node: Any) -> list[str]:
    """Every string in a JSON document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [s for v in doc["templating"]["list"] for s in strings(v.get("query"))]
    return exprs


def described(metric: Any) -> Any:
    """A metric's one family as ``describe()`` declares it (name, help, type)."""
    [found] = metric.describe()
    return found


def family(name: str) -> str:
    """The family a series name belongs to (``x_total`` -> ``x``, ``h_bucket`` -> ``h``)."""
    return re.sub(r"_(total|created|bucket|count|sum)$", "", name)


def test_no_metric_is_labelled_by_personal_or_unbounded_ids() -> None:
    found = label_names()
    assert {described(m).name for m in METRICS} <= set(found)
    offenders = {name: labels for name, labels in found.items()
                 if FORBIDDEN_LABELS & set(labels)}
    assert offenders == {}


def test_every_metric_is_ours_and_explained() -> None:
    for metric in (*METRICS, *faust_metrics()):
        declared = described(metric)
        assert declared.name.startswith(PREFIX), declared.name
        assert len(declared.documentation) > 10, declared.name


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    exprs = dashboard_expressions()
    used = {name for expr in exprs for name in NAME.findall(expr)}
    missing = used - exposed_series_names(lag_collector())
    assert missing == set()
    # And it shows every metric this project defines, plus the monitor's lag.
    shown = {family(name) for name in used}
    ours = {described(m).name for m in METRICS}
    assert ours - shown == set()
    assert "statement_router_consumer_lag" in shown


def test_the_dashboard_is_a_grafana_dashboard_on_the_provisioned_datasource() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert doc["schemaVersion"] >= 36 and doc["uid"] == "statement-router"
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    latency = [e for e in dashboard_expressions()
               if "statement_router_delivery_latency_seconds_bucket" in e]
    assert {q for e in latency for q in re.findall(r"histogram_quantile\((0\.\d+)", e)} == {
        "0.5", "0.95", "0.99"}


def test_prometheus_scrapes_every_role_by_dns_so_replicas_are_all_seen() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {"api": 8080, "relay": 9100, "router": 9100, "adapters": 9100,
                "global-file": 9100, "ledger": 9100}
    for role, port in expected.items():
        job = jobs[role]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        [sd] = job["dns_sd_configs"]
        assert sd == {**sd, "names": [role], "type": "A", "port": port}, role


def test_operations_doc_names_only_real_metrics_and_all_of_ours() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    named = set(NAME.findall(text))
    exposed = exposed_series_names(lag_collector())

    def real(name: str) -> bool:
        if name.endswith("_"):  # a family of metrics: `statement_router_faust_*`
            return any(e.startswith(name) for e in exposed)
        return name in exposed or f"{name}_bucket" in exposed  # a series or a histogram

    assert {name for name in named if not real(name)} == set()
    documented = {family(name) for name in named}
    assert {described(m).name for m in METRICS} - documented == set()


def test_the_registry_is_our_own_with_process_metrics() -> None:
    names = exposed_series_names()
    assert "process_resident_memory_bytes" in names
    assert "statement_router_routed_total" in names
    # Not prometheus_client's global default registry: what a library registers there
    # at import is not exported by us.
    from prometheus_client import REGISTRY as DEFAULT

    assert REGISTRY is not DEFAULT
