"""Partner delivery adapters behind one port (DESIGN §3, adapter workers).

An adapter worker builds one deliverer per connector with ``make_deliverer`` and calls
``deliver(event)`` for each ``statement.partner-delivery/v1`` event; the returned
``DeliveryResult`` tells it to commit, back off, dead-letter or stop the connector. The
worker owns retries, backoff and the dead-letter topic; the adapters own only the partner
protocol and the classification of its failures. See ``adapters.delivery.port``.
"""

from __future__ import annotations

from adapters.delivery.directory import DirectoryDeliverer
from adapters.delivery.errors import DeliveryConfigError
from adapters.delivery.port import (
    Deliverer,
    DeliveryResult,
    DirectoryEndpoint,
    PartnerEndpoint,
    ResultKind,
    SftpEndpoint,
    WebhookEndpoint,
    parse_endpoint,
)
from adapters.delivery.sftp import SftpDeliverer
from adapters.delivery.webhook import WebhookDeliverer
from config.catalogue import ConnectorSpec

__all__ = [
    "Deliverer",
    "DeliveryConfigError",
    "DeliveryResult",
    "DirectoryDeliverer",
    "DirectoryEndpoint",
    "PartnerEndpoint",
    "ResultKind",
    "SftpDeliverer",
    "SftpEndpoint",
    "WebhookDeliverer",
    "WebhookEndpoint",
    "make_deliverer",
    "parse_endpoint",
]


def make_deliverer(spec: ConnectorSpec, endpoint: PartnerEndpoint) -> Deliverer:
    """The deliverer for a connector; its endpoint must be of the connector's adapter kind.

    A mismatch (an SFTP endpoint for a webhook connector) is a deployment error, refused
    here with ``DeliveryConfigError`` rather than discovered statement by statement.
    """
    if endpoint.kind != spec.adapter:
        raise DeliveryConfigError(
            f"connector {spec.connector_id!r} uses the {spec.adapter} adapter but was given "
            f"a {endpoint.kind} endpoint"
        )
    if isinstance(endpoint, WebhookEndpoint):
        return WebhookDeliverer(endpoint)
    if isinstance(endpoint, SftpEndpoint):
        return SftpDeliverer(endpoint)
    return DirectoryDeliverer(endpoint)
