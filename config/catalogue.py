"""The default connector catalogue: the partners a cabinet may add (DESIGN §1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from routing.domain.ids import id_problem

AdapterKind = Literal["webhook", "sftp", "directory"]


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """A partner connector: its id (used in topic names), display name and adapter kind."""

    connector_id: str
    name: str
    adapter: AdapterKind

    def __post_init__(self) -> None:
        problem = id_problem("connector", self.connector_id)
        if problem is not None:
            raise ValueError(problem)


_DEFAULT: tuple[ConnectorSpec, ...] = (
    ConnectorSpec("acd", "ACD", "webhook"),
    ConnectorSpec("cegid", "Cegid", "sftp"),
    ConnectorSpec("quadra", "Quadra", "directory"),
    ConnectorSpec("pennylane", "Pennylane", "webhook"),
)


def default_catalogue() -> dict[str, ConnectorSpec]:
    """The connectors known to the system, by id, in display order."""
    return {spec.connector_id: spec for spec in _DEFAULT}
