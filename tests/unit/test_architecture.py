"""Layering rules that code review alone would let slip."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("routing", "events", "adapters", "config")
FORBIDDEN_IN_DOMAIN = ("faust", "aiokafka", "sqlalchemy", "pydantic", "fastapi", "asyncpg")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_domain_imports_no_infrastructure() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "routing" / "domain").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN_IN_DOMAIN
    }
    assert offenders == set()


def test_only_config_reads_the_environment() -> None:
    offenders = []
    for package in PACKAGES:
        if package == "config":
            continue
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "os.environ" in text or "getenv(" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
