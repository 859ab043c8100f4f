"""Each connector's partner endpoint, for the adapter workers (the composition side).

Two sources:

* **a deployment** lists its partners in the connectors file (``CONNECTORS_FILE``, TOML,
  secrets by reference; ``config.connectors`` reads it). ``load_endpoints`` validates
  every entry against the connector catalogue: a connector the catalogue does not know
  and an endpoint of the wrong kind (an SFTP table for a webhook connector) are refused
  at start-up, not discovered statement by statement;
* **the embedded mode** (``up``) has no partners: ``embedded_endpoints`` gives every
  connector a directory drop under ``<data_dir>/partners/<connector_id>``, whatever its
  real adapter kind, so the demo shows each statement landing somewhere visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from adapters.delivery import DirectoryEndpoint, PartnerEndpoint, parse_endpoint
from adapters.delivery.errors import DeliveryConfigError
from config.catalogue import ConnectorSpec
from config.connectors import ConnectorsFileError, load_connectors_file
from config.settings import Settings


def embedded_endpoints(
    data_dir: Path, catalogue: Mapping[str, ConnectorSpec]
) -> dict[str, PartnerEndpoint]:
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
                f"({', '.join(catalogue) or 'empty'})"
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
