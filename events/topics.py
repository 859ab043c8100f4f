"""The topic catalogue (DESIGN §4): names, keys, partition counts and cleanup policies."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Cleanup = Literal["delete", "compact"]


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

    def partner(self, connector_id: str) -> str:
        return self._name(f"statements.partner.{connector_id}")

    def partner_dlq(self, connector_id: str) -> str:
        return self._name(f"statements.partner.{connector_id}.dlq")

    def specs(self, connector_ids: Iterable[str]) -> list[TopicSpec]:
        """Every topic the pipeline needs, for the given connectors."""
        n = self.partitions
        specs = [
            TopicSpec(self.received, n, "delete", "IBAN", "statement.received/v1",
                      "bank feeds, ingest → router"),
            TopicSpec(self.iban_state, n, "compact", "IBAN", "iban.state/v1",
                      "outbox relay, other systems → router"),
            TopicSpec(self.global_file, n, "delete", "cabinet id", "statement.global-file/v1",
                      "router → global-file builder"),
            TopicSpec(self.held, n, "delete", "IBAN", "statement.held/v1",
                      "router → operators (audit of parking)"),
            TopicSpec(self.invalid, n, "delete", "original key or empty",
                      "statement.invalid/v1", "router, consumers → operators"),
            TopicSpec(self.outcomes, n, "delete", "statement id", "delivery.outcome/v1",
                      "router, adapters, global-file builder → ledger, monitor"),
        ]
        for connector_id in connector_ids:
            specs.append(TopicSpec(self.partner(connector_id), n, "delete", "IBAN",
                                   "statement.partner-delivery/v1",
                                   f"router → adapter worker for {connector_id}"))
            specs.append(TopicSpec(self.partner_dlq(connector_id), n, "delete", "IBAN",
                                   "statement.dead-letter/v1",
                                   f"adapter for {connector_id} → operators, replay"))
        return specs
