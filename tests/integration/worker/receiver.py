"""A real partner-side webhook receiver for the adapter worker tests (and the crash test).

An aiohttp server on 127.0.0.1 serving any number of partners at ``/partners/<name>``.
Every request is verified with the ``standardwebhooks`` package (independent of our
signer); one that does not verify is answered 401. Each partner answers from its script
(``script``), then with its ``default`` reply, which a test may change mid-run to play an
outage and a recovery. Every request lands in one global, ordered log, which is what the
ordering assertions (isolation, per-IBAN order) read: no wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from routing.domain.identity import statement_key
from tests.unit.delivery.factories import make_webhook_secret

_DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: When set, the answer waits until the test sets it (a partner still thinking).
    gate: asyncio.Event | None = None


@dataclass(frozen=True)
class Hit:
    """One request as the partner saw it."""

    seq: int
    at: float  # time.monotonic()
    partner: str
    webhook_id: str
    statement_id: str
    iban: str
    status: int  # what was answered
    verified: bool
    #: ``webhook-id`` without its statement key when that key is the right one for the
    #: body's IBAN, id and content (``<statement id>.<statement key>``), else the raw
    #: header: tests compare it with a statement id, and a wrong key shows.
    webhook_statement: str = ""


def statement_of_webhook_id(msg_id: str, doc: dict[str, object]) -> str:
    """The statement id a ``webhook-id`` names, checked against the body's key."""
    sid, _, key = msg_id.rpartition(".")
    iban, content = doc.get("iban"), doc.get("content_sha256")
    valid = isinstance(iban, str) and isinstance(content, str) and sid
    if valid and key == statement_key(str(iban), sid, str(content)):
        return sid
    return msg_id


class Partner:
    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.url = f"{base_url}/partners/{name}"
        self.secret = make_webhook_secret()
        self.default = Reply()
        # Bodies over this many bytes are answered 413, as aiohttp's default limit (1 MiB)
        # answers them on a real partner; None accepts any size.
        self.max_body: int | None = _DEFAULT_MAX_BODY
        self._script: deque[Reply] = deque()
        self._scripts_by_iban: dict[str, deque[Reply]] = {}

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def script_for(self, iban: str, *replies: Reply) -> None:
        """Replies for one IBAN's requests, taken before the shared script."""
        self._scripts_by_iban.setdefault(iban, deque()).extend(replies)

    def next_reply(self, iban: str = "") -> Reply:
        own = self._scripts_by_iban.get(iban)
        if own:
            return own.popleft()
        return self._script.popleft() if self._script else self.default


class WebhookReceiver:
    def __init__(self) -> None:
        self.hits: list[Hit] = []
        #: The hits in the order they were answered (a gated or slow answer comes later).
        self.answered: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.partners: dict[str, Partner] = {}
        self._runner: web.AppRunner | None = None
        self._base = ""
        self.changed = asyncio.Event()

    def partner(self, name: str) -> Partner:
        if name not in self.partners:
            self.partners[name] = Partner(name, self._base)
        return self.partners[name]

    def of(self, partner: str) -> list[Hit]:
        return [h for h in self.hits if h.partner == partner]

    def delivered(self, partner: str) -> list[Hit]:
        return [h for h in self.hits if h.partner == partner and 200 <= h.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        partner = self.partners.get(name)
        if partner is None:
            return web.Response(status=404)
        body = await request.read()
        doc = json.loads(body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(partner.secret).verify(body, headers, json_parse=False)
            verified = True
        except WebhookVerificationError:
            verified = False
        if not verified:
            reply = Reply(401)
        elif partner.max_body is not None and len(body) > partner.max_body:
            reply = Reply(413)
        else:
            reply = partner.next_reply(str(doc.get("iban", "")))
        msg_id = headers.get("webhook-id", "")
        hit = Hit(
            seq=len(self.hits), at=time.monotonic(), partner=name,
            webhook_id=msg_id, statement_id=doc.get("statement_id", ""),
            iban=doc.get("iban", ""), status=reply.status, verified=verified,
            webhook_statement=statement_of_webhook_id(msg_id, doc),
        )
        self.hits.append(hit)
        self.changed.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.gate is not None:
                await reply.gate.wait()
        finally:
            self.in_flight -= 1
        self.answered.append(hit)
        return web.Response(status=reply.status, headers=reply.headers)

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/partners/{name}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        host, bound = self._runner.addresses[0][:2]
        self._base = f"http://{host}:{bound}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
