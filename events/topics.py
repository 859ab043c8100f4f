"""The topic catalogue (DESIGN §4): names, keys, partition counts and cleanup policies."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Cleanup = Literal["delete", "compact"]
GroupRole = Literal["router", "adapter", "global-file", "ledger"]
"""The pipeline roles that read in a consumer group of their own."""
RouterTable = Literal["iban-state", "held"]
"""The router's two Tables, each backed by a compacted changelog topic."""


def changelog(app_id: str, table: RouterTable) -> str:
    """The changelog topic of one of the router's Tables: ``<app id>-<table>-changelog``.

    Faust names it so from the router's app id (its consumer group, :meth:`Topics.group`
    by default); the monitor reads it, and the in-memory Tables of the tests write to it.
    """
    return f"{app_id}-{table}-changelog"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup: Cleanup
    key: str
    schema: str
    description: str


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix.

    Every topic shares one partition count: ``statements.received`` and ``iban.state`` must
    (the router's Table is co-partitioned with the statements), and a single figure keeps
    the router's scale-out unit the same across the whole pipeline.
    """

    prefix: str = "sobank"
    partitions: int = 6

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def received(self) -> str:
        return self._name("statements.received")

    @property
    def iban_state(self) -> str:
        return self._name("iban.state")

    @property
    def global_file(self) -> str:
        return self._name("statements.global-file")

    @property
    def held(self) -> str:
        return self._name("statements.held")

    @property
    def invalid(self) -> str:
        return self._name("statements.invalid")

    @property
    def outcomes(self) -> str:
        return self._name("deliveries.outcomes")

    @property
    def adapters_control(self) -> str:
        return self._name("adapters.control")

    def partner(self, connector_id: str) -> str:
        return self._name(f"statements.partner.{connector_id}")

    @property
    def ledger_reads(self) -> tuple[str, str, str]:
        """The fixed topics the delivery ledger reads, besides every partner topic: the
        outcomes, and the held and global-file topics it derives "held" and "routed" from
        (``routing.services.ledger``)."""
        return (self.outcomes, self.held, self.global_file)

    def partner_dlq(self, connector_id: str) -> str:
        return self._name(f"statements.partner.{connector_id}.dlq")

    def group(self, role: GroupRole, connector_id: str | None = None) -> str:
        """The consumer group of a pipeline role: ``<prefix>.<role>``.

        An adapter worker reads in a group per connector, ``<prefix>.adapter.<connector
        id>``, so one connector's backlog never holds another's back. The router's group is
        also its faust app id, which names its Tables' changelogs (:func:`changelog`).
        """
        if (role == "adapter") != (connector_id is not None):
            raise ValueError("a connector id names the adapter group, and only it")
        return self._name(role if connector_id is None else f"{role}.{connector_id}")

    def specs(self, connector_ids: Iterable[str]) -> list[TopicSpec]:
        """Every topic the pipeline needs, for the given connectors."""
        n = self.partitions
        specs = [
            TopicSpec(self.received, n, "delete", "IBAN", "statement.received/v1",
                      "bank feeds, ingest → router"),
            TopicSpec(self.iban_state, n, "compact", "IBAN", "iban.state/v1",
                      "outbox relay, other systems → router"),
            TopicSpec(self.global_file, n, "delete", "cabinet id", "statement.global-file/v1",
                      "router → global-file builder, ledger"),
            TopicSpec(self.held, n, "delete", "IBAN", "statement.held/v1",
                      "router → operators (audit of parking), ledger"),
            TopicSpec(self.invalid, n, "delete", "original key or empty",
                      "statement.invalid/v1",
                      "router, global-file builder, ledger, adapters → operators"),
            TopicSpec(self.outcomes, n, "delete", "statement id", "delivery.outcome/v1",
                      "adapters, global-file builder, operators' replays → ledger, monitor"),
            TopicSpec(self.adapters_control, n, "compact", "kind/connector id[/partition]",
                      "adapter.control/v1",
                      "CLI, API → adapters (enable); adapters → monitor, /ops (worker state, "
                      "crash counts)"),
        ]
        for connector_id in connector_ids:
            specs.append(TopicSpec(self.partner(connector_id), n, "delete", "IBAN",
                                   "statement.partner-delivery/v1",
                                   f"router → adapter worker for {connector_id}, ledger"))
            specs.append(TopicSpec(self.partner_dlq(connector_id), n, "delete", "IBAN",
                                   "statement.dead-letter/v1",
                                   f"adapter for {connector_id} → operators, replay"))
        return specs
