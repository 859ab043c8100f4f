"""``up --demo`` with a connectors file that lacks the demo's connectors is refused before
anything starts, with one line saying what to add (issue 14 item 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.delivery import DeliveryConfigError
from config.settings import Settings
from routing.entrypoints.up import run_up


async def test_the_demo_needs_its_connectors_in_the_file(tmp_path: Path) -> None:
    connectors = tmp_path / "connectors.toml"
    connectors.write_text('[connectors.acd]\nadapter = "webhook"\n')
    settings = Settings(connectors_file=connectors, data_dir=tmp_path / "var")
    with pytest.raises(DeliveryConfigError) as info:
        await run_up(settings, demo=True)
    assert str(info.value) == (
        f"the demo binds IBANs to acd and quadra, but the connectors file {connectors} does "
        "not declare quadra; add their tables (config/connectors.default.toml has them) or "
        "unset CONNECTORS_FILE")
    assert not (tmp_path / "var").exists()  # nothing started, nothing written
