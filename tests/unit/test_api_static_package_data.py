"""The explorers' vendored assets (``routing/entrypoints/api/static``) ship in the package: without
them an installed ``/docs`` is blank again (issue 14 item 14)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "routing" / "entrypoints" / "api" / "static"


def test_every_vendored_asset_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["routing.entrypoints.api"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {
        "static/swagger-ui/swagger-ui-bundle.js",
        "static/swagger-ui/swagger-ui.css",
        "static/swagger-ui/LICENSE",
        "static/redoc/redoc.standalone.js",
        "static/redoc/LICENSE",
    } <= set(files)
    missing = [f for f in files if not any(fnmatch(f, p) for p in patterns)]
    assert missing == []
