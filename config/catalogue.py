"""The connector catalogue: the partners a cabinet may add, declared in the connectors file.

The catalogue is configuration, not code (issue 14): every connector is a table of the
connectors file (``CONNECTORS_FILE``, format in docs/delivery.md)::

    [connectors.sage]
    name = "Sage"            # display name (default: the id)
    adapter = "sftp"         # webhook, sftp or directory
    host = "sftp.sage.example"   # the endpoint fields of that adapter (adapters.delivery)
    ...

Without ``CONNECTORS_FILE`` the catalogue is the shipped ``connectors.default.toml`` next to
this module: four partners declared without endpoints. A file written before the catalogue
was configurable (no table says ``adapter``) still works: it is read as endpoints for that
shipped catalogue (``legacy``), so deployments need not migrate at once.

Why the catalogue reads the TOML itself and not ``config.connectors``: the API and the
router need the connector *set* (a binding names a connector id) but none of the partners'
secrets, which are mounted into the adapters process only. Endpoint fields are therefore
left for the adapters to validate; here only the catalogue part (id, name, adapter) is.

``Catalogue`` is a live, read-only mapping: it re-reads its file when the file changes
(checked at most every ``check_interval`` seconds, on access), so a connector added to
the file can be bound through the API without a restart (the router follows it too:
``routing.router.catalogue_follow``). A changed file that does not validate is refused
with a logged reason (``connectors_file_refused``) and the previous set stays in force.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from routing.domain.ids import id_problem

if TYPE_CHECKING:
    from pydantic import ValidationError

AdapterKind = Literal["webhook", "sftp", "directory"]
ADAPTER_KINDS: tuple[AdapterKind, ...] = ("webhook", "sftp", "directory")

#: The shipped catalogue, used when ``CONNECTORS_FILE`` is not set.
DEFAULT_FILE = Path(__file__).with_name("connectors.default.toml")

#: How often a live catalogue looks at its file's modification time (seconds).
CHECK_INTERVAL = 1.0

#: Keys of a connector table that belong to the catalogue; the rest is its endpoint.
CATALOGUE_KEYS = frozenset({"name", "adapter", "kind"})


def _log() -> Any:
    """structlog, imported when a reload has something to say: reading the catalogue is
    on every CLI command's path (docs/performance.md, CLI start-up)."""
    import structlog

    return structlog.get_logger("config.catalogue")


class CatalogueError(ValueError):
    """The connectors file does not declare a valid catalogue; the message is one line."""


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """A partner connector: its id (used in topic names), display name and adapter kind."""

    connector_id: str
    name: str
    adapter: AdapterKind

    def __post_init__(self) -> None:
        problem = id_problem("connector", self.connector_id)
        if problem is not None:
            raise ValueError(problem)


def _where(path: Path | None) -> str:
    return f"the connectors file {path}" if path is not None else "the connectors file"


def _one_line(exc: ValidationError, path: Path | None) -> str:
    """pydantic's report as one line per problem, naming the connector and the field."""
    problems: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            problems.append(
                f"{_where(path)} has an unknown top-level key {loc[0]} "
                "(expected [connectors.<id>] tables)")
        elif loc[:1] == ["connectors"] and len(loc) >= 3:
            field = ".".join(loc[2:])
            problems.append(f"connector {loc[1]}: {field}: {message}")
        elif loc[:1] == ["connectors"] and len(loc) == 2:
            problems.append(f"connector {loc[1]}: expected a table ({message})")
        else:
            problems.append(f"{_where(path)}: {'.'.join(loc) or 'document'}: {message}")
    return "; ".join(problems)


def read_document(path: Path) -> dict[str, Any]:
    """The TOML document of a connectors file, or ``CatalogueError`` in one line."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(
            f"cannot read the connectors file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"the connectors file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise CatalogueError(f"the connectors file {path} is not UTF-8 text") from None


def parse_catalogue(
    document: Mapping[str, Any],
    path: Path | None = None,
    *,
    builtin: Mapping[str, ConnectorSpec] | None = None,
) -> tuple[dict[str, ConnectorSpec], bool]:
    """The connectors a document declares, in file order, and whether it is a legacy file.

    A legacy file (no table names its ``adapter``) only gives endpoints to the ``builtin``
    catalogue's connectors, which it keeps whole. Otherwise every table must name its
    adapter and the file's tables are the catalogue.
    """
    from pydantic import ValidationError

    from config.catalogue_models import ConnectorsDocument

    try:
        model = ConnectorsDocument.model_validate(document)
    except ValidationError as exc:
        raise CatalogueError(_one_line(exc, path)) from None
    problems: list[str] = []
    for connector_id, table in model.connectors.items():
        problem = id_problem("connector", connector_id)
        if problem is not None:
            problems.append(f"{_where(path)}: {problem}")
        elif table.adapter and table.kind and table.adapter != table.kind:
            problems.append(
                f"connector {connector_id}: adapter: {table.adapter!r} contradicts "
                f"kind {table.kind!r} (keep adapter only)")
    if problems:
        raise CatalogueError("; ".join(problems))
    declared = {cid: t.declared_adapter() for cid, t in model.connectors.items()}
    if model.connectors and not any(declared.values()):
        base = dict(default_catalogue() if builtin is None else builtin)
        return base, True
    missing = [cid for cid, kind in declared.items() if kind is None]
    if missing:
        raise CatalogueError("; ".join(
            f"connector {cid}: adapter: missing (every connector names its adapter, one of "
            f"{', '.join(ADAPTER_KINDS)}, once any does)" for cid in missing))
    specs: dict[str, ConnectorSpec] = {}
    for connector_id, table in model.connectors.items():
        kind = table.declared_adapter()
        assert kind is not None
        specs[connector_id] = ConnectorSpec(connector_id, table.name or connector_id, kind)
    return specs, False


def load_catalogue(path: Path) -> dict[str, ConnectorSpec]:
    """The catalogue a connectors file declares (``CatalogueError`` when it is invalid)."""
    specs, _ = parse_catalogue(read_document(path), path)
    return specs


def default_catalogue() -> dict[str, ConnectorSpec]:
    """The shipped catalogue (``connectors.default.toml``), by id, in display order."""
    specs, legacy = parse_catalogue(read_document(DEFAULT_FILE), DEFAULT_FILE, builtin={})
    assert not legacy
    return specs


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Catalogue(Mapping[str, ConnectorSpec]):
    """The connector set of a file, kept current: a read-only mapping of id to spec.

    Every access may look at the file (at most every ``check_interval`` seconds); a
    changed file is re-read, and replaces the set only if it validates. ``use_adapters``
    overrides the adapter reported for some connectors: the embedded mode stands a
    directory drop in for every partner, and ``GET /connectors`` reports what is used.
    """

    def __init__(
        self,
        specs: Mapping[str, ConnectorSpec],
        *,
        source: Path | None = None,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.refused: str | None = None
        self._specs = dict(specs)
        self._interval = check_interval
        self._clock = clock
        self._overrides: dict[str, AdapterKind] = {}
        self._seen = None if source is None else _fingerprint(source)
        self._checked = clock()

    @classmethod
    def from_file(cls, path: Path | None, **kwargs: Any) -> Catalogue:
        """The live catalogue of ``path`` (the shipped one for None); the first read must
        succeed (``CatalogueError``), later ones may fail and are refused."""
        source = DEFAULT_FILE if path is None else path
        seen = _fingerprint(source)
        catalogue = cls(load_catalogue(source), source=source, **kwargs)
        catalogue._seen = seen
        return catalogue

    def use_adapters(self, adapters: Mapping[str, AdapterKind]) -> None:
        """Report these adapter kinds for these connectors (what the process really runs)."""
        self._overrides = dict(adapters)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed; True when the set was replaced."""
        if self.source is None:
            return False
        now = self._clock()
        if not force and now - self._checked < self._interval:
            return False
        self._checked = now
        seen = _fingerprint(self.source)
        if seen == self._seen and not force:
            return False
        self._seen = seen
        try:
            specs = load_catalogue(self.source)
        except CatalogueError as exc:
            self.refused = str(exc)
            _log().warning("connectors_file_refused", path=str(self.source), reason=str(exc),
                        kept=list(self._specs))
            return False
        self.refused = None
        if specs == self._specs:
            return False
        self._specs = specs
        _log().info("connector_catalogue_reloaded", path=str(self.source), connectors=list(specs))
        return True

    def _current(self) -> dict[str, ConnectorSpec]:
        self.refresh()
        return self._specs

    def __getitem__(self, connector_id: str) -> ConnectorSpec:
        spec = self._current()[connector_id]
        used = self._overrides.get(connector_id)
        if used is not None and used != spec.adapter:
            return ConnectorSpec(spec.connector_id, spec.name, used)
        return spec

    def __contains__(self, connector_id: object) -> bool:
        return connector_id in self._current()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._current()))

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"Catalogue({self.source}, {list(self._specs)})"
