"""The connectors file's catalogue part as pydantic models (``config.catalogue`` uses them).

A module of its own so that importing ``config.catalogue`` (every CLI command does) costs
no pydantic model building until a file is actually read.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from config.catalogue import AdapterKind


class ConnectorDeclaration(BaseModel):
    """One ``[connectors.<id>]`` table as the catalogue sees it; endpoint fields pass."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=80)
    adapter: AdapterKind | None = None
    kind: AdapterKind | None = None  # the old, informative spelling of ``adapter``

    def declared_adapter(self) -> AdapterKind | None:
        return self.adapter or self.kind


class ConnectorsDocument(BaseModel):
    """The whole connectors file: only ``[connectors.<id>]`` tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connectors: dict[str, ConnectorDeclaration] = Field(default_factory=dict)
