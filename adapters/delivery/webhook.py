"""Webhook delivery: a signed HTTP POST of the delivery event, per Standard Webhooks.

Why Standard Webhooks: partners verify us with an off-the-shelf library in their own
language instead of a bespoke scheme. The request carries:

* ``webhook-id``: ``<statement id>.<statement key>`` (``webhook_id``). It is the
  idempotency key the partner de-duplicates on, so it is the same on every retry and every
  replay (DESIGN §5); the statement key (16 hex digits of the IBAN, the id and the
  content, ``routing.domain.identity``) makes it differ for two statements that share an
  id, which the id alone did not: two feeds may both send ``stmt-1``, and a partner
  de-duplicating on it would have dropped the second account's statement;
* ``webhook-timestamp``: Unix seconds at sending, which receivers check (±5 min) against
  replay;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` for each
  configured secret, space-separated, so a partner rotating its secret verifies with
  either the old or the new one.

The body is the ``statement.partner-delivery/v1`` JSON exactly as it is on the topic, so
partners get one documented schema (docs/schemas) whatever the transport.

Classification (see ``classify``): 2xx delivered; 408, 429 and 5xx retry, honouring
``Retry-After``; 410 Gone disables the connector; 3xx and other 4xx are permanent;
timeouts and transport errors retry. Redirects are not followed: replaying a signed
statement to another location is the partner's configuration to fix, not ours to guess.

Why aiohttp and not httpx: at 1,000 statements/s half of them are webhooks, all in one
process next to the router. Measured on this machine (loopback, ~2 KB bodies), an httpx
request costs ~2 ms of CPU (httpcore's pool and anyio layers), an aiohttp request and its
answer ~0.4 ms together; with httpx the adapter alone saturated a core before 500
requests/s and the backlog, not the network, made the end-to-end latency
(docs/performance.md). One ``ClientSession`` per deliverer keeps its connections alive.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus

import aiohttp

from adapters.delivery.errors import DeliveryConfigError
from adapters.delivery.port import DeliveryResult, WebhookEndpoint, decode_webhook_secret
from events.schemas import StatementPartnerDelivery
from routing.domain.identity import statement_key

USER_AGENT = "statement-router-webhook/1"
_SNIPPET_BYTES = 300


def webhook_id(delivery: StatementPartnerDelivery) -> str:
    """``<statement id>.<statement key>``: stable for one statement, distinct for two."""
    key = statement_key(delivery.iban, delivery.statement_id, delivery.content_sha256)
    return f"{delivery.statement_id}.{key}"


def sign(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<base64>`` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date; RFC 9110).

    A date in the past means "now" (0); anything unparsable means the partner gave no hint
    (None), so the worker falls back to its own backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" / obsolete forms: HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def classify(
    status: int, retry_after: str | None = None, snippet: str = "", *, now: datetime | None = None
) -> DeliveryResult:
    """Map a partner's HTTP answer onto the worker's four actions."""
    said = f": {snippet}" if snippet else ""
    text = _status_text(status)
    if 200 <= status < 300:
        return DeliveryResult.delivered(f"partner accepted ({text})", status)
    if status == 410:
        return DeliveryResult.disabled(
            f"partner answered {text}: the endpoint was removed; stop this connector's "
            f"deliveries until its endpoint is reconfigured{said}",
            status,
        )
    if status in (408, 429) or status >= 500 or status < 200:
        return DeliveryResult.retry(
            f"partner answered {text}{said}", status, parse_retry_after(retry_after, now=now)
        )
    if 300 <= status < 400:
        return DeliveryResult.permanent(
            f"partner answered {text} (redirects are not followed: update the endpoint URL)",
            status,
        )
    hint = " (check the signing secrets shared with the partner)" if status in (401, 403) else ""
    return DeliveryResult.permanent(f"partner refused the statement: {text}{hint}{said}", status)


async def _read_snippet(response: aiohttp.ClientResponse) -> str:
    """The start of the partner's answer, for the detail; never the whole (unbounded) body."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < _SNIPPET_BYTES:
            chunk = await response.content.read(_SNIPPET_BYTES - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except aiohttp.ClientPayloadError:  # a body that does not decode (bad gzip, …)
        return ""
    text = b"".join(chunks)[:_SNIPPET_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())


class WebhookDeliverer:
    """Delivers to one partner's webhook endpoint over a pooled ``aiohttp.ClientSession``.

    ``unchecked_timeout`` replaces the endpoint's (validated, 15–30 s) timeout without the
    bound check; it exists so tests can exercise a timeout in well under a second, and
    production code never passes it.

    The session ignores proxy and netrc environment variables (``trust_env=False``): the
    process's configuration lives in ``config.settings`` only, and a stray netrc entry
    must never attach credentials to a partner request. It is opened on the first
    delivery, because an aiohttp session belongs to the running event loop and a
    deliverer may be built before one runs.
    """

    def __init__(
        self,
        endpoint: WebhookEndpoint,
        *,
        unchecked_timeout: float | None = None,
    ) -> None:
        timeout = endpoint.timeout if unchecked_timeout is None else unchecked_timeout
        if timeout <= 0:
            raise DeliveryConfigError("webhook timeout must be positive")
        self._endpoint = endpoint
        self._timeout = timeout
        self._keys = tuple(decode_webhook_secret(s.get_secret_value()) for s in endpoint.secrets)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,
                headers={"user-agent": USER_AGENT},
            )
        return self._session

    def __repr__(self) -> str:
        return f"WebhookDeliverer({self._endpoint.display_url}, timeout={self._timeout:g})"

    async def deliver(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        body = delivery.to_json()
        msg_id = webhook_id(delivery)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._keys, msg_id, timestamp, body),
        }
        try:
            # httpx bounds each phase; this bounds the whole attempt (a partner dripping
            # its answer byte by byte must not hold the connector's queue).
            async with asyncio.timeout(self._timeout):
                async with self._client().post(
                    self._endpoint.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    snippet = await _read_snippet(response)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            return DeliveryResult.retry(f"no answer from the partner within {self._timeout:g} s")
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return DeliveryResult.retry(f"could not reach the partner: {reason}")
        return classify(response.status, response.headers.get("retry-after"), snippet)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
