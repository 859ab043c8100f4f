"""SFTP drop: statements uploaded into a partner's SFTP directory (asyncssh).

**Trust.** The client authenticates with its private key only (no agent, no password, no
``~/.ssh/config``) and checks the server's host key against the endpoint's known_hosts
file. There is no trust-on-first-use: a missing known_hosts file, an unknown host key or a
changed one is a permanent failure with a reason that says what to fix, because sending
bank statements to an unverified host is the one thing worse than not sending them.

**Atomic, idempotent upload.** Each file is written under a hidden temporary name in the
remote directory, ``fsync``-ed when the server offers ``fsync@openssh.com``, then renamed
over the final, deterministic name (``adapters.delivery.naming``) with
``posix-rename@openssh.com``, or SFTPv5+ overwrite, where the server has one, else
remove-then-rename. A partner tool therefore never picks up a half-written file. The
final name is the statement's own (its id and its statement key), so a redelivery finds
it there already and leaves it alone rather than uploading it again; only a file of that
name with another size, which no delivery of ours wrote, is replaced.

**One connection per deliverer**, opened on first use and kept across deliveries. A
connection found dead (the server restarted, a NAT dropped it) is replaced at once, and a
delivery that fails on a reused connection is tried once more on a fresh one within the
same call; the upload is idempotent, so that repeat is safe.

**Classification.** Permanent: rejected login, unknown or changed host key, no common
algorithms, unreadable key files, permission denied or an invalid name in the remote
directory. Retry: refused or dropped connections, DNS failures, timeouts, a missing remote
directory (partners recreate them), a full disk or quota, and any other server-side error.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from pathlib import Path

import asyncssh
import structlog

from adapters.delivery.errors import DeliveryFailed
from adapters.delivery.naming import FileToWrite, files_for, temporary_name
from adapters.delivery.port import DeliveryResult, SftpEndpoint
from events.schemas import StatementPartnerDelivery

_log = structlog.get_logger(__name__)

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
)
_PERMANENT_SFTP_ERRORS: tuple[type[asyncssh.SFTPError], ...] = (
    asyncssh.SFTPPermissionDenied,
    asyncssh.SFTPWriteProtect,
    asyncssh.SFTPInvalidFilename,
    asyncssh.SFTPFileIsADirectory,
    asyncssh.SFTPNotADirectory,
)
_CLEANUP_TIMEOUT = 5.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _load_credentials(
    endpoint: SftpEndpoint,
) -> tuple[asyncssh.SSHKnownHosts, asyncssh.SSHKey]:
    """Read known_hosts and the client key; any problem is a permanent, explained failure."""
    known_hosts_path = endpoint.known_hosts_path
    if not known_hosts_path.is_file():
        raise DeliveryFailed(
            DeliveryResult.permanent(
                f"known_hosts file {known_hosts_path} does not exist: host keys are always "
                "checked, add the partner's host key there"
            )
        )
    try:
        known_hosts = asyncssh.read_known_hosts(str(known_hosts_path))
    except (OSError, ValueError) as exc:
        raise DeliveryFailed(
            DeliveryResult.permanent(f"cannot read known_hosts {known_hosts_path}: {_reason(exc)}")
        ) from None
    passphrase = endpoint.passphrase.get_secret_value() if endpoint.passphrase else None
    key_path: Path = endpoint.private_key_path
    try:
        key = asyncssh.read_private_key(str(key_path), passphrase)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise DeliveryFailed(
            DeliveryResult.permanent(f"cannot load the SFTP client key {key_path}: {_reason(exc)}")
        ) from None
    return known_hosts, key


class SftpDeliverer:
    """Delivers to one partner's SFTP directory over one kept-alive connection."""

    def __init__(self, endpoint: SftpEndpoint) -> None:
        self._endpoint = endpoint
        self._target = f"{endpoint.username}@{endpoint.host}:{endpoint.port}"
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SftpDeliverer({self._target}, {self._endpoint.remote_directory!r})"

    @property
    def connected(self) -> bool:
        """Whether a live connection is held (for health checks and tests)."""
        return self._conn is not None and not self._conn.is_closed()

    async def deliver(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        files = files_for(delivery, sidecar=self._endpoint.metadata_sidecar)
        async with self._lock:
            if self._closed:
                raise RuntimeError("SftpDeliverer.deliver() called after close()")
            try:
                async with asyncio.timeout(self._endpoint.timeout):
                    return await self._deliver(files)
            except TimeoutError:
                await self._disconnect()
                return DeliveryResult.retry(
                    f"SFTP delivery to {self._target} did not finish within "
                    f"{self._endpoint.timeout:g} s"
                )

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._disconnect()

    async def _deliver(self, files: list[FileToWrite]) -> DeliveryResult:
        reused = self.connected
        while True:
            try:
                sftp = await self._session()
                if await self._already_delivered(sftp, files[-1]):
                    return DeliveryResult.delivered(
                        f"{files[-1].name} is on {self._target} in "
                        f"{self._endpoint.remote_directory} already (a redelivery): left as it is"
                    )
                await self._upload(sftp, files)
            except DeliveryFailed as failure:
                await self._disconnect()
                return failure.result
            except _CONNECTION_ERRORS as exc:
                await self._disconnect()
                if reused:
                    # The connection we kept may have died while idle: one fresh try.
                    _log.info("sftp connection lost, reconnecting", target=self._target)
                    reused = False
                    continue
                return self._classify_connection_error(exc)
            except asyncssh.SFTPError as exc:
                return self._classify_sftp_error(exc, files[-1].name)
            return DeliveryResult.delivered(
                f"uploaded {files[-1].name} to {self._target} in {self._endpoint.remote_directory}"
            )

    async def _session(self) -> asyncssh.SFTPClient:
        if self._sftp is not None and self.connected:
            return self._sftp
        await self._disconnect()
        known_hosts, key = await asyncio.to_thread(_load_credentials, self._endpoint)
        try:
            conn = await self._connect(known_hosts, key)
        except ValueError as exc:
            # asyncssh refuses its options with ValueError, e.g. when the process has no
            # local user name (a container UID without a passwd entry): a set-up problem.
            raise DeliveryFailed(
                DeliveryResult.permanent(f"cannot set up the SSH client: {exc}")
            ) from None
        try:
            sftp = await conn.start_sftp_client()
        except BaseException:
            conn.abort()
            raise
        self._conn, self._sftp = conn, sftp
        return sftp

    async def _connect(
        self, known_hosts: asyncssh.SSHKnownHosts, key: asyncssh.SSHKey
    ) -> asyncssh.SSHClientConnection:
        """Key authentication only; no agent, no ssh config, no GSS, no X.509 trust."""
        return await asyncssh.connect(
            self._endpoint.host,
            self._endpoint.port,
            username=self._endpoint.username,
            client_keys=[key],
            known_hosts=known_hosts,
            config=None,
            agent_path=None,
            preferred_auth="publickey",
            gss_auth=False,
            gss_kex=False,
            x509_trusted_certs=None,
            login_timeout=self._endpoint.timeout,
            keepalive_interval=30,
        )

    async def _already_delivered(self, sftp: asyncssh.SFTPClient, file: FileToWrite) -> bool:
        final = posixpath.join(self._endpoint.remote_directory, file.name)
        try:
            attrs = await sftp.stat(final)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            return False
        return attrs.type == asyncssh.FILEXFER_TYPE_REGULAR and attrs.size == len(file.content)

    async def _upload(self, sftp: asyncssh.SFTPClient, files: list[FileToWrite]) -> None:
        directory = self._endpoint.remote_directory
        for file in files:
            final = posixpath.join(directory, file.name)
            tmp = posixpath.join(directory, temporary_name(file.name))
            try:
                async with sftp.open(tmp, "wb") as handle:
                    await handle.write(file.content)
                    with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                        await handle.fsync()
                await self._replace(sftp, tmp, final)
            except asyncssh.SFTPError as exc:
                if not isinstance(exc, _CONNECTION_ERRORS):
                    await self._remove_quietly(sftp, tmp)
                raise

    @staticmethod
    async def _replace(sftp: asyncssh.SFTPClient, tmp: str, final: str) -> None:
        """Rename ``tmp`` over ``final``, atomically where the server allows it."""
        try:
            await sftp.posix_rename(tmp, final)
        except asyncssh.SFTPOpUnsupported:
            # Plain SFTPv3 rename refuses to overwrite: make room first. The final name is
            # briefly absent, never half-written.
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(final)
            await sftp.rename(tmp, final)

    @staticmethod
    async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            await asyncio.wait_for(sftp.remove(path), _CLEANUP_TIMEOUT)

    async def _disconnect(self) -> None:
        sftp, conn = self._sftp, self._conn
        self._sftp = self._conn = None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), _CLEANUP_TIMEOUT)

    def _classify_connection_error(self, exc: BaseException) -> DeliveryResult:
        target = self._target
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return DeliveryResult.permanent(
                f"the host key of {self._endpoint.host}:{self._endpoint.port} is not trusted by "
                f"{self._endpoint.known_hosts_path} (unknown or changed; never accepted "
                f"blindly): {_reason(exc)}"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            return DeliveryResult.permanent(
                f"SFTP login as {target} rejected: is the client key authorised on the partner "
                f"side? ({_reason(exc)})"
            )
        if isinstance(exc, asyncssh.KeyExchangeFailed):
            return DeliveryResult.permanent(
                f"no common SSH algorithms with {target}: {_reason(exc)}"
            )
        return DeliveryResult.retry(f"SFTP connection to {target} failed: {_reason(exc)}")

    def _classify_sftp_error(self, exc: asyncssh.SFTPError, name: str) -> DeliveryResult:
        where = f"{self._endpoint.remote_directory} on {self._target}"
        if isinstance(exc, _PERMANENT_SFTP_ERRORS):
            return DeliveryResult.permanent(f"cannot write {name} in {where}: {_reason(exc)}")
        if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
            return DeliveryResult.retry(f"remote directory {where} does not exist: {_reason(exc)}")
        return DeliveryResult.retry(f"writing {name} in {where} failed: {_reason(exc)}")
