"""The port every partner delivery adapter implements, and the endpoint configurations.

An adapter worker (DESIGN §3) holds one ``Deliverer`` per connector and hands it
``statement.partner-delivery/v1`` events, several at once (one per IBAN in each
partition's lane, ``adapters.worker``), so a deliverer is safe to call concurrently. The
deliverer answers with a
``DeliveryResult`` instead of raising, because every partner failure is an outcome the
worker must act on, and the four kinds map one to one onto its actions:

* ``delivered``: commit the offset, record the outcome;
* ``retry``: transient (timeouts, refused connections, 408/429/5xx, a mount hiccup): back
  off with jitter, at least ``retry_after`` seconds when the partner said so;
* ``permanent``: retrying cannot help (4xx, rejected login, unknown host key): dead-letter;
* ``disabled``: the partner removed the endpoint (HTTP 410 Gone): stop this connector's
  deliveries and alert; neither retry nor dead-letter statement after statement.

Endpoint configurations are frozen dataclasses, one per adapter kind; ``PartnerEndpoint``
is their union. They are validated when built, so a deployment with an endpoint that
cannot work fails at start-up (``DeliveryConfigError``) rather than dead-lettering
everything. Secrets are ``SecretStr`` and kept out of ``repr`` so they never reach a log
line; so is the webhook URL, which partners sometimes use to carry a token.
``parse_endpoint`` builds them from plain mappings (TOML, JSON) for the composition root.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import SecretStr, TypeAdapter, ValidationError

from adapters.delivery.errors import DeliveryConfigError
from config.catalogue import AdapterKind
from events.schemas import StatementPartnerDelivery

ResultKind = Literal["delivered", "retry", "permanent", "disabled"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What happened to one delivery attempt, classified for the worker.

    ``detail`` is for people (operators, the dead-letter reason); it never holds a secret.
    ``status_code`` is the partner's HTTP status when there was one. ``retry_after`` is the
    partner's requested delay in seconds (from ``Retry-After``), only on ``retry``.
    """

    kind: ResultKind
    detail: str
    status_code: int | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")

    @property
    def ok(self) -> bool:
        return self.kind == "delivered"

    @classmethod
    def delivered(cls, detail: str, status_code: int | None = None) -> DeliveryResult:
        return cls("delivered", detail, status_code)

    @classmethod
    def retry(
        cls, detail: str, status_code: int | None = None, retry_after: float | None = None
    ) -> DeliveryResult:
        return cls("retry", detail, status_code, retry_after)

    @classmethod
    def permanent(cls, detail: str, status_code: int | None = None) -> DeliveryResult:
        return cls("permanent", detail, status_code)

    @classmethod
    def disabled(cls, detail: str, status_code: int | None = None) -> DeliveryResult:
        return cls("disabled", detail, status_code)


@runtime_checkable
class Deliverer(Protocol):
    """Delivers statements to one connector's partner.

    ``deliver`` is at-least-once friendly: delivering the same statement twice leaves the
    partner with one copy (a webhook carries the same ``webhook-id``; a file drop finds its
    deterministic name taken and leaves it), and two statements that share an id get two
    (their statement keys differ, ``routing.domain.identity``). It never raises for
    partner failures.
    ``close`` releases connections; call it once, when the worker stops.
    """

    async def deliver(self, delivery: StatementPartnerDelivery) -> DeliveryResult: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- endpoints

WEBHOOK_TIMEOUT_MIN = 15.0
WEBHOOK_TIMEOUT_MAX = 30.0
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
# Standard Webhooks: secrets should be between 24 and 64 bytes (before base64).
WEBHOOK_SECRET_MIN_BYTES = 24
WEBHOOK_SECRET_MAX_BYTES = 64


def decode_webhook_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret, or ``DeliveryConfigError``.

    Missing padding is tolerated, as the reference libraries do; the error message never
    echoes the secret.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise DeliveryConfigError("webhook secrets must look like whsec_<base64>")
    encoded = secret[len(WEBHOOK_SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DeliveryConfigError("a webhook secret is not valid base64 after whsec_") from None
    if not WEBHOOK_SECRET_MIN_BYTES <= len(key) <= WEBHOOK_SECRET_MAX_BYTES:
        raise DeliveryConfigError(
            f"a webhook secret decodes to {len(key)} bytes; Standard Webhooks asks for "
            f"{WEBHOOK_SECRET_MIN_BYTES} to {WEBHOOK_SECRET_MAX_BYTES}"
        )
    return key


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """An HTTPS endpoint receiving Standard Webhooks signed POSTs.

    ``secrets`` holds every secret currently valid, newest first: each request is signed
    with all of them, so a partner can rotate (add the new secret here, switch the
    receiver, then drop the old one) without a single rejected delivery. ``timeout`` bounds
    one whole attempt and must lie within 15–30 s: shorter gives up on partners that are
    merely slow, longer holds the connector's queue for a dead peer.
    """

    kind: ClassVar[AdapterKind] = "webhook"

    url: str = field(repr=False)
    secrets: tuple[SecretStr, ...] = field(repr=False)
    timeout: float = 20.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryConfigError("webhook url must be an absolute http(s) URL")
        if not self.secrets:
            raise DeliveryConfigError("a webhook endpoint needs at least one signing secret")
        for secret in self.secrets:
            decode_webhook_secret(secret.get_secret_value())
        if not WEBHOOK_TIMEOUT_MIN <= self.timeout <= WEBHOOK_TIMEOUT_MAX:
            raise DeliveryConfigError(
                f"webhook timeout must be within {WEBHOOK_TIMEOUT_MIN:g}–"
                f"{WEBHOOK_TIMEOUT_MAX:g} s, got {self.timeout:g}"
            )

    @property
    def display_url(self) -> str:
        """Scheme, host and port only: safe to log even when the path carries a token."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}/…"


@dataclass(frozen=True, slots=True)
class SftpEndpoint:
    """An SFTP drop: key authentication and a checked host key, never blind trust.

    ``known_hosts_path`` is an OpenSSH known_hosts file holding the partner's host key
    (``[host]:port`` form for a port other than 22). ``timeout`` bounds one whole attempt
    (connect, upload, rename). ``metadata_sidecar`` adds ``<file>.json`` next to each
    statement (see ``adapters.delivery.naming``).
    """

    kind: ClassVar[AdapterKind] = "sftp"

    host: str
    username: str
    private_key_path: Path
    known_hosts_path: Path
    remote_directory: str = "."
    port: int = 22
    passphrase: SecretStr | None = field(default=None, repr=False)
    timeout: float = 30.0
    metadata_sidecar: bool = False

    def __post_init__(self) -> None:
        if not self.host:
            raise DeliveryConfigError("sftp host is empty")
        if not self.username:
            raise DeliveryConfigError("sftp username is empty")
        if not 1 <= self.port <= 65535:
            raise DeliveryConfigError(f"sftp port {self.port} is out of range")
        if not self.remote_directory:
            raise DeliveryConfigError("sftp remote_directory is empty (use '.' for the home)")
        if not 0 < self.timeout <= 600:
            raise DeliveryConfigError(f"sftp timeout must be within (0, 600] s, got {self.timeout}")


@dataclass(frozen=True, slots=True)
class DirectoryEndpoint:
    """A local or mounted directory the partner's tool watches."""

    kind: ClassVar[AdapterKind] = "directory"

    path: Path
    metadata_sidecar: bool = False


PartnerEndpoint = WebhookEndpoint | SftpEndpoint | DirectoryEndpoint
"""The per-connector endpoint configuration; its type must match the connector's adapter."""

_ENDPOINT_TYPES: dict[AdapterKind, type[WebhookEndpoint | SftpEndpoint | DirectoryEndpoint]] = {
    "webhook": WebhookEndpoint,
    "sftp": SftpEndpoint,
    "directory": DirectoryEndpoint,
}


def parse_endpoint(kind: AdapterKind, data: Mapping[str, Any]) -> PartnerEndpoint:
    """Build the endpoint of an adapter kind from plain values (strings, lists, numbers).

    Meant for the composition root, which reads them from settings or a TOML file. Unknown
    keys are refused (a typo must not silently fall back to a default) and every error
    becomes one ``DeliveryConfigError`` naming the field, never its value.
    """
    try:
        cls = _ENDPOINT_TYPES[kind]
    except KeyError:
        raise DeliveryConfigError(f"unknown adapter kind {kind!r}") from None
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise DeliveryConfigError(f"unknown {kind} endpoint field(s): {', '.join(unknown)}")
    try:
        endpoint: PartnerEndpoint = TypeAdapter(cls).validate_python(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or kind}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_input=False)
        )
        raise DeliveryConfigError(f"invalid {kind} endpoint: {problems}") from None
    return endpoint
