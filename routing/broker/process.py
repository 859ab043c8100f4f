"""A Kafka-protocol broker run as our child process: start, wait until ready, stop, no leak.

Two brokers run this way: the embedded Tansu broker (``embedded.py``, the default for
``make run``) and Apache Kafka itself (``kafka_local.py``, for the tests and
``up --broker kafka``). What they share lives here, once:

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

The broker's output goes to a log file under ``log_dir`` and never to our stdout, which
belongs to the CLI. A failed start raises :class:`BrokerStartupError` with the tail of that
log, because the reason (a port in use, a bad setting) is only ever written there.

Each start expects one cluster id and readiness is only accepted from a broker reporting
it: on a fixed port, a broker left over from another run would otherwise answer the probe
while our own child is dying of "address in use".
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import contextlib
import ctypes
import os
import re
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
from typing import Self

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from routing.broker.errors import BrokerError, BrokerStartupError

__all__ = ["BrokerProcess", "free_port", "port_in_use"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PORT_ATTEMPTS = 3  # a free port we picked can be taken before the broker binds it; retry
_PROBE_INTERVAL_S = 0.05
_PROBE_REQUEST_TIMEOUT_MS = 2_000
_LOG_TAIL_CHARS = 2_000
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def free_port(host: str) -> int:
    """A port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails, as it will for the broker.

    ``SO_REUSEADDR`` mirrors what the brokers' listeners do, so sockets in TIME_WAIT from an
    earlier run do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def parent_death_signal(
    parent_pid: int, sig: signal.Signals = signal.SIGKILL
) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send ``sig`` to the child when its parent dies.

    SIGKILL for a broker; the test session's PostgreSQL asks for SIGINT (a fast shutdown).
    Set in the child after ``subprocess`` switched to its ``user``, which would clear it.

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
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal


class BrokerProcess(abc.ABC):
    """One broker child process on loopback. Subclasses say how to run and recognise it.

    Use it as a context manager (``with Broker() as broker:`` or ``async with``) or call
    ``start()``/``astart()`` and ``stop()``/``astop()``. ``bootstrap_servers`` is valid
    while it runs.

    Args:
        port: the Kafka port to listen on; None picks a free one.
        host: the address to bind and advertise; keep it on loopback, the brokers run
            without authentication.
        log_dir: where the log file (and the subclass's data, if it keeps any) goes; None
            means a private temporary directory that ``stop()`` removes again.
        startup_timeout: seconds to wait for the broker to answer a metadata request.
        stop_timeout: seconds between SIGTERM and SIGKILL.
        env: the child's whole environment. It gets no copy of ours: a broker reads
            settings from the environment, and an operator's shell must not silently change
            it.
    """

    #: What the broker is called in messages ("the embedded broker").
    name: str = "the broker"
    #: The log file's name under ``log_dir``.
    log_name: str = "broker.log"
    #: Texts in the log that mean "the port was taken before we bound it".
    address_in_use_markers: tuple[str, ...] = ("Address already in use",)

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {port}")
        self._requested_port = port
        self._host = host
        self._log_dir = log_dir
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._owned_dir: Path | None = None
        self._log_path: Path | None = None
        self._last_pid: int | None = None
        self._startup_seconds: float | None = None

    # -- what subclasses provide ---------------------------------------------------------

    @abc.abstractmethod
    def _command(self, port: int, work_dir: Path) -> list[str]:
        """The argv that runs the broker on ``port``; may prepare files in ``work_dir``."""

    @property
    @abc.abstractmethod
    def cluster_id(self) -> str:
        """The cluster id the started broker must report."""

    # -- what callers read ---------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients; only while the broker runs."""
        if not self.running or self._port is None:
            raise BrokerError(f"{self.name} is not running; start it first")
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
    def startup_seconds(self) -> float | None:
        """Seconds from spawning the process to its first good metadata answer."""
        return self._startup_seconds

    def __repr__(self) -> str:
        state = f"running on {self._host}:{self._port}" if self.running else "stopped"
        return f"<{type(self).__name__} pid={self._last_pid} {state}>"

    # -- starting ------------------------------------------------------------------------

    def start(self) -> Self:
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
                f"{type(self).__name__}.start() blocks; inside an event loop use "
                f"`await broker.astart()` or `async with {type(self).__name__}()`"
            )
        return asyncio.run(self.astart())

    async def astart(self) -> Self:
        """Start the broker and wait until it answers Kafka metadata requests.

        Idempotent while running. On failure the child is stopped and reaped before the
        BrokerStartupError propagates.
        """
        if self.running:
            return self
        work_dir = self._prepare_log_dir()
        try:
            await self._start_attempts(work_dir)
        except BaseException:
            self._cleanup_owned_dir()
            raise
        return self

    async def _start_attempts(self, work_dir: Path) -> None:
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._choose_port()
            log_offset = self._log_size()
            started = time.monotonic()
            argv = await asyncio.to_thread(self._command, port, work_dir)
            self._spawn(argv, port)
            try:
                await self._wait_ready(started)
            except BrokerStartupError:
                await self._terminate_async()
                tail = self._log_tail(log_offset)
                if attempt < attempts and any(m in tail for m in self.address_in_use_markers):
                    continue  # someone took the port we picked before the broker bound it
                raise
            except BaseException:
                await self._terminate_async()
                raise
            self._startup_seconds = time.monotonic() - started
            atexit.register(self.stop)
            return
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _prepare_log_dir(self) -> Path:
        if self._log_dir is None:
            if self._owned_dir is None:
                self._owned_dir = Path(tempfile.mkdtemp(prefix="statement-router-broker-"))
            directory = self._owned_dir
        else:
            directory = self._log_dir
            directory.mkdir(parents=True, exist_ok=True)
        self._log_path = directory / self.log_name
        return directory

    def _choose_port(self) -> int:
        if self._requested_port is None:
            return free_port(self._host)
        if port_in_use(self._host, self._requested_port):
            raise BrokerStartupError(
                f"cannot start {self.name} on {self._host}:{self._requested_port}: "
                "the port is already in use (another broker or an earlier run?)"
            )
        return self._requested_port

    def _spawn(self, argv: list[str], port: int) -> None:
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
                    preexec_fn=parent_death_signal(os.getpid()),
                    close_fds=True,
                )
            except OSError as exc:
                raise BrokerStartupError(f"cannot run {self.name} ({argv[0]}): {exc}") from exc
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
                    f"{self.name} did not answer within {self._startup_timeout:g}s "
                    f"(last problem: {last_problem}); {self._log_excerpt()}"
                )
            try:
                cluster_id = await asyncio.wait_for(self._probe(), timeout=min(remaining, 5.0))
            except (OSError, TimeoutError, KafkaError) as exc:  # not ready yet: retry
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                await asyncio.sleep(_PROBE_INTERVAL_S)
                continue
            self._raise_if_exited()
            if cluster_id != self.cluster_id:
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
            client_id="statement-router-broker-probe",
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
                f"{self.name} exited during startup (status {status}); {self._log_excerpt()}"
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()
