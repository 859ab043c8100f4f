"""Each connector's partner endpoint, for the adapter workers (the composition side).

Two sources:

* **a deployment** lists its partners in the connectors file (``CONNECTORS_FILE``, TOML,
  secrets by reference; ``config.connectors`` reads it). The same file declares the
  catalogue (``config.catalogue``): each connector's name and adapter kind.
  ``load_connectors`` reads both from one read of the file and validates every endpoint
  against its connector's adapter kind: a connector the catalogue does not know and an
  endpoint of the wrong kind (an SFTP table for a webhook connector) are refused at
  start-up (and at a reload: ``adapters.catalogue_reload``), not discovered statement
  by statement;
* **the embedded mode** (``up``) has no partners: ``embedded_endpoints`` gives every
  connector a directory drop under ``<data_dir>/partners/<connector_id>``, whatever its
  real adapter kind, so the demo shows each statement landing somewhere visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.delivery import DirectoryEndpoint, PartnerEndpoint, parse_endpoint
from adapters.delivery.errors import DeliveryConfigError
from config.catalogue import (
    CatalogueError,
    ConnectorSpec,
    default_catalogue,
    parse_catalogue,
    read_document,
)
from config.connectors import ConnectorsFileError, load_connectors_file, resolve_document
from config.settings import Settings


def embedded_endpoints(data_dir: Path, catalogue: Iterable[str]) -> dict[str, PartnerEndpoint]:
    """A directory drop per connector under ``data_dir/partners/<connector_id>`` (created)."""
    endpoints: dict[str, PartnerEndpoint] = {}
    for connector_id in catalogue:
        path = data_dir / "partners" / connector_id
        path.mkdir(parents=True, exist_ok=True)
        endpoints[connector_id] = DirectoryEndpoint(path=path)
    return endpoints


def parse_endpoints(
    tables: Mapping[str, Mapping[str, object]], catalogue: Mapping[str, ConnectorSpec]
) -> dict[str, PartnerEndpoint]:
    """Validated endpoints from resolved tables; every problem in one ``DeliveryConfigError``."""
    endpoints: dict[str, PartnerEndpoint] = {}
    problems: list[str] = []
    for connector_id, table in tables.items():
        spec = catalogue.get(connector_id)
        if spec is None:
            problems.append(
                f"connector {connector_id} is not in the catalogue "
                f"({', '.join(catalogue) or 'empty'}); declare its adapter in its table"
            )
            continue
        try:
            endpoints[connector_id] = parse_endpoint(spec.adapter, table)
        except DeliveryConfigError as exc:
            problems.append(f"connector {connector_id} ({spec.adapter}): {exc}")
    if problems:
        raise DeliveryConfigError("; ".join(problems))
    return endpoints


def load_endpoints(
    settings: Settings, catalogue: Mapping[str, ConnectorSpec]
) -> dict[str, PartnerEndpoint]:
    """The endpoints of ``settings.connectors_file``; empty when no file is configured."""
    if settings.connectors_file is None:
        return {}
    try:
        tables = load_connectors_file(settings.connectors_file)
    except ConnectorsFileError as exc:
        raise DeliveryConfigError(str(exc)) from None
    return parse_endpoints(tables, catalogue)


@dataclass(frozen=True, slots=True)
class ConnectorsConfig:
    """One version of the connectors file: the catalogue and the endpoints it gives.

    A connector of ``catalogue`` without an entry in ``endpoints`` is declared (it can be
    bound, its topics exist) but has no partner endpoint in this file: no worker runs it.
    ``legacy``: the file names no adapter, so the catalogue is the shipped one.
    """

    catalogue: dict[str, ConnectorSpec]
    endpoints: dict[str, PartnerEndpoint]
    legacy: bool = False


def read_connectors(path: Path, environ: Mapping[str, str] | None = None) -> ConnectorsConfig:
    """Catalogue and endpoints of a connectors file, validated, or ``DeliveryConfigError``
    with every problem in one line naming the connector and the field."""
    try:
        document = read_document(path)
        catalogue, legacy = parse_catalogue(document, path)
        tables = resolve_document(document, path, environ)
    except CatalogueError as exc:
        raise DeliveryConfigError(str(exc)) from None
    return ConnectorsConfig(catalogue, parse_endpoints(tables, catalogue), legacy)


def load_connectors(settings: Settings) -> ConnectorsConfig:
    """The deployment's connectors: ``settings.connectors_file``, or the shipped catalogue
    without endpoints when no file is configured."""
    if settings.connectors_file is None:
        return ConnectorsConfig(default_catalogue(), {})
    return read_connectors(settings.connectors_file)
