"""The published contract (docs/schemas/) is exactly what the models say."""

from __future__ import annotations

import json
from pathlib import Path

from events.schemas import SCHEMAS
from routing.entrypoints.cli.pipeline import export_schemas

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_exported_json_schemas_are_up_to_date(tmp_path: Path) -> None:
    for fresh in export_schemas(tmp_path):
        published = DOCS / "schemas" / fresh.name
        assert published.exists(), f"run: statement-router schemas export ({fresh.name})"
        assert json.loads(published.read_text()) == json.loads(fresh.read_text()), (
            f"docs/schemas/{fresh.name} is stale: run `statement-router schemas export`"
        )


def test_every_schema_is_documented_in_events_md() -> None:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    for name in SCHEMAS:
        assert f"`{name}`" in text, name


def test_the_schema_field_is_required_for_producers(tmp_path: Path) -> None:
    for path in export_schemas(tmp_path):
        assert json.loads(path.read_text())["required"][0] == "schema"
