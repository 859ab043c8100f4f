"""Layering rules that code review alone would let slip."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("routing", "events", "adapters", "config")
ALLOWED_IN_DOMAIN = "schwifty"


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROOT).parent.parts
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            names.add(".".join([*base, *([node.module] if node.module else [])]))
    return names


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def import_names(distribution: str) -> set[str]:
    """The public top-level modules an installed distribution provides."""
    wanted = re.sub(r"[-_.]+", "-", distribution).lower()
    return {
        module
        for module, dists in packages_distributions().items()
        if not module.startswith("_") and module.isidentifier()
        and any(re.sub(r"[-_.]+", "-", d).lower() == wanted for d in dists)
    }


def domain_contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["id"] == "domain-stdlib-schwifty")


def test_the_domain_imports_only_the_standard_library_and_schwifty() -> None:
    """What ``lint-imports`` cannot say ("only"), checked here: every import of the domain is
    the standard library, schwifty or the domain itself (not even ``routing.ports``)."""
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "routing" / "domain").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] not in sys.stdlib_module_names
        and module.split(".")[0] != ALLOWED_IN_DOMAIN
        and module != "routing.domain" and not module.startswith("routing.domain.")
    }
    assert offenders == set()


def test_the_domain_contract_forbids_every_dependency_but_schwifty() -> None:
    """The ``domain-stdlib-schwifty`` contract lists every distribution pyproject.toml
    installs (runtime and dev), so a new dependency cannot slip into the domain unseen."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = config["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    modules = {m for r in requirements for m in import_names(requirement_name(r))}
    assert ALLOWED_IN_DOMAIN in modules  # the lookup found the installed distributions
    forbidden = set(domain_contract()["forbidden_modules"])
    assert modules - {ALLOWED_IN_DOMAIN} <= forbidden
    assert ALLOWED_IN_DOMAIN not in forbidden
    assert domain_contract()["source_modules"] == ["routing.domain"]


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
