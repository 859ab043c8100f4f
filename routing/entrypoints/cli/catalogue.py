"""The connector catalogue as the CLI reports it: the same as the API serving its data.

Outside the embedded mode the adapter of each connector is the one ``CONNECTORS_FILE``
declares (``adapters`` refuses an endpoint of another kind). When a ``statement-router
up`` runs on ``DATA_DIR`` (the demo's included), it stands embedded directory drops in for
the partners the file does not configure, and its API reports those: ``up`` writes them
into its lock file, and ``connectors`` / ``cabinet connectors list`` read them there, so
the CLI and its API twin agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from config.catalogue import ADAPTER_KINDS, AdapterKind, Catalogue
from routing.entrypoints.bootstrap import catalogue

if TYPE_CHECKING:
    from config.settings import Settings


def _up_adapters(data_dir: Path) -> dict[str, AdapterKind] | None:
    from routing.entrypoints.up_lock import lock_path, running_up

    target = str(data_dir.resolve())
    for path in (lock_path(data_dir, demo=False), lock_path(data_dir.parent, demo=True)):
        running = running_up(path)
        if not running or running.get("data_dir") != target:
            continue
        used = running.get("adapters")
        if isinstance(used, dict):
            return {str(c): k for c, k in used.items() if k in ADAPTER_KINDS}
    return None


def catalogue_in_use(cfg: Settings) -> Catalogue:
    """The deployment's catalogue, with the adapters a running ``up`` really uses."""
    live = catalogue(cfg)
    if used := _up_adapters(cfg.data_dir):
        live.use_adapters(used)
    return live
