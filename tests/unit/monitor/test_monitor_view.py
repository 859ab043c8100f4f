"""The monitor's watch view: a compact summary that fits a 40-row terminal, and filters."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from routing.observability.monitor.model import (
    ConnectorStatus,
    GroupPartition,
    GroupStatus,
    MonitorSnapshot,
    PartitionStatus,
    TopicStatus,
    held_status,
)
from routing.observability.monitor.view import compact, only, render

PARTITIONS = 6
CONNECTORS = ("acd", "cegid", "quadra", "pennylane")


def big_snapshot() -> MonitorSnapshot:
    """The embedded pipeline's shape: 14 topics of 6 partitions, 8 consumer groups."""
    names = [
        "statements.received",
        "iban.state",
        "statements.global-file",
        "statements.held",
        "statements.invalid",
        "deliveries.outcomes",
        *(f"statements.partner.{c}" for c in CONNECTORS),
        *(f"statements.partner.{c}.dlq" for c in CONNECTORS),
    ]
    topics = tuple(
        TopicStatus(f"p.{n}", tuple(PartitionStatus(i, 0, 10, 1.0) for i in range(PARTITIONS)))
        for n in names
    )

    def group(group_id: str, role: str, connector: str | None, topic: str) -> GroupStatus:
        return GroupStatus(
            group_id,
            role,
            connector,
            tuple(GroupPartition(f"p.{topic}", i, 8, 10, 2) for i in range(PARTITIONS)),
        )

    groups = (
        group("p.router-input", "router", None, "statements.received"),
        group("p.ledger", "ledger", None, "deliveries.outcomes"),
        group("p.global-file", "global-file", None, "statements.global-file"),
        *(group(f"p.adapter.{c}", "adapter", c, f"statements.partner.{c}") for c in CONNECTORS),
    )
    return MonitorSnapshot(
        taken_at=datetime(2026, 1, 1, tzinfo=UTC),
        topic_prefix="p",
        rate_window=2.0,
        topics=topics,
        missing_topics=(),
        groups=groups,
        held=held_status(
            "p.router-held-changelog",
            {"FR1": [{"reason": "unknown_iban"}, {"reason": "unknown_iban"}]},
            {},
            5,
        ),
        invalid=3,
        connectors=tuple(ConnectorStatus(c, 0, 1, 1) for c in CONNECTORS),
    )


def lines(renderable: object, width: int = 100) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_compact_view_fits_40_rows_with_lag_connectors_and_held() -> None:
    snap = big_snapshot()
    shown = lines(compact(snap))
    assert len(shown) <= 40, "\n".join(shown)
    text = "\n".join(shown)
    assert "router" in text and "adapter acd" in text and "ledger" in text
    assert "12" in text  # the router's lag: 6 partitions x 2
    assert "held now: 2 statement(s) on 1 IBAN(s) [unknown_iban 2]" in text
    assert all(c in text for c in CONNECTORS)
    assert len(lines(render(snap))) > 40  # what --full (and the old watch) shows


def test_the_column_names_stay_whole_in_80_columns() -> None:
    header = next(line for line in lines(compact(big_snapshot()), width=80) if "role" in line)
    for column in ("role", "reads", "lag", "in rate"):
        assert column in header


def test_filters_keep_the_named_topics_and_groups() -> None:
    snap = big_snapshot()
    by_topic = only(snap, topics=["statements.partner.acd"])
    assert [t.topic for t in by_topic.topics] == ["p.statements.partner.acd"]
    assert [g.group_id for g in by_topic.groups] == ["p.adapter.acd"]
    by_group = only(snap, groups=["router", "p.ledger"])
    assert [g.group_id for g in by_group.groups] == ["p.router-input", "p.ledger"]
    assert only(snap, groups=["adapter quadra"]).groups[0].connector_id == "quadra"
