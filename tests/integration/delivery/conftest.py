"""Real partners on loopback for the delivery adapters: an HTTP receiver and an SFTP server.

Nothing here is a mock. The webhook receiver is an aiohttp server that verifies every
request with the ``standardwebhooks`` package (an implementation independent of ours)
and answers from a script. The SFTP server is asyncssh's, with its own host key, an
authorised client key and a chroot in the test's temporary directory; it can be stopped
and restarted on the same port to play a partner outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.delivery import SftpEndpoint
from tests.eventually import eventually
from tests.unit.delivery.factories import make_webhook_secret

# ------------------------------------------------------------------------ webhook receiver


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``delay`` holds it back (until the test ends at the latest)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes
    verified: bool
    verification_error: str | None


class WebhookReceiver:
    """A partner's webhook endpoint: verifies signatures, records requests, answers a script.

    A request whose signature does not verify with any of ``secrets`` is answered 401, as a
    real receiver would, whatever the script says.
    """

    def __init__(self) -> None:
        self.secrets: list[str] = [make_webhook_secret()]
        self.received: list[Received] = []
        self._replies: deque[Reply] = deque()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    def _verify(self, body: bytes, headers: dict[str, str]) -> str | None:
        errors = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
            except WebhookVerificationError as exc:
                errors.append(str(exc))
            else:
                return None
        return "; ".join(errors) or "no secret"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        error = self._verify(body, headers)
        self.received.append(Received(headers, body, error is None, error))
        if error is not None:
            return web.Response(status=401, text=f"signature rejected: {error}")
        reply = self._replies.popleft() if self._replies else Reply()
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), reply.delay)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/statements", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hooks/statements"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def unused_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ----------------------------------------------------------------------------- SFTP server


class _TrackingServer(asyncssh.SSHServer):
    def __init__(self, owner: SftpServer) -> None:
        self._owner = owner

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._owner.connections.append(conn)
        self._owner.accepted += 1


class SftpServer:
    """asyncssh SFTP server chrooted in ``root``; ``stop``/``start`` keep the port."""

    def __init__(self, base: Path) -> None:
        self.root = base / "sftp-root"
        self.inbox = self.root / "inbox"
        self.inbox.mkdir(parents=True)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_path = base / "client_ed25519"
        self.client_key.write_private_key(str(self.client_key_path))
        self.known_hosts_path = base / "known_hosts"
        self.port = 0
        self.accepted = 0
        self.connections: list[asyncssh.SSHServerConnection] = []
        self._acceptor: asyncssh.SSHAcceptor | None = None

    def _sftp(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=os.fsencode(self.root))

    async def start(self) -> None:
        self._acceptor = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_factory=lambda: _TrackingServer(self),
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key.export_public_key().decode()
            ),
            sftp_factory=self._sftp,
            allow_scp=False,
            reuse_address=True,
        )
        self.port = self._acceptor.get_port()
        if not self.known_hosts_path.exists():
            self.trust(self.host_key)

    def trust(self, key: asyncssh.SSHKey | None) -> None:
        """Write known_hosts trusting ``key`` for this server (None: trust nothing)."""
        line = "" if key is None else self.known_hosts_line(key)
        self.known_hosts_path.write_text(line)

    def known_hosts_line(self, key: asyncssh.SSHKey) -> str:
        return f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n"

    async def stop(self) -> None:
        """Stop listening and drop every connection, as a restarting server would."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        connections, self.connections = self.connections, []
        for conn in connections:
            conn.close()
        for conn in connections:
            await conn.wait_closed()

    def endpoint(self, **overrides: Any) -> SftpEndpoint:
        base = SftpEndpoint(
            host="127.0.0.1",
            port=self.port,
            username="partner",
            private_key_path=self.client_key_path,
            known_hosts_path=self.known_hosts_path,
            remote_directory="inbox",
            timeout=10.0,
        )
        return dataclasses.replace(base, **overrides)

    def inbox_files(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted(self.inbox.iterdir())}


@pytest.fixture
async def sftp_server(tmp_path: Path) -> AsyncIterator[SftpServer]:
    server = SftpServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class SilentServer:
    """Accepts TCP connections and never says a word: an SSH peer that hangs."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# ------------------------------------------------------------------------- leak detection


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves a task running once its servers and deliverers are closed.

    Autouse fixtures are set up first and so torn down last: by then every other fixture
    has stopped its server and closed its deliverers.
    """
    yield
    current = asyncio.current_task()
    # Callbacks already scheduled may still finish their tasks: give them a moment.
    await eventually(
        lambda: [t for t in asyncio.all_tasks() if t is not current and not t.done()],
        "no task still running after the test",
        within=0.5,
        interval=0.01,
        done=lambda leaked: not leaked,
    )
