"""The connectors file: where each connector's partner endpoint is, with secrets by reference.

A deployment describes its partners in one TOML file (``CONNECTORS_FILE``), one table per
connector: its catalogue entry (``name``, ``adapter``: ``config.catalogue``) and its
endpoint fields::

    [connectors.acd]                       # a webhook connector
    name = "ACD"
    adapter = "webhook"
    url = "https://hooks.acd.example/sobank"
    secret_file = "/run/secrets/acd_whsec" # or secret_env = "ACD_WHSEC"
    # secrets = [{ file = "/run/secrets/acd_whsec_new" }, { env = "ACD_WHSEC_OLD" }]

    [connectors.cegid]                     # an SFTP connector
    adapter = "sftp"
    host = "sftp.cegid.example"
    username = "sobank"
    private_key_path = "/run/secrets/cegid_ed25519"
    known_hosts_path = "known_hosts"       # relative paths: from this file's directory
    remote_directory = "inbox"
    passphrase_env = "CEGID_KEY_PASSPHRASE"

    [connectors.quadra]                    # a directory drop
    adapter = "directory"
    path = "/mnt/quadra/inbox"

Why references and never inline secrets: the file is configuration, reviewed and often
versioned, while the secrets belong to the platform's secret store (mounted files,
injected variables). An inline ``secrets = ["whsec_…"]`` or ``passphrase = "…"`` is
refused, so a secret cannot slip into a repository by accident.

This module lives in ``config/`` because resolving ``secret_env`` reads the environment,
which only ``config/`` may do. It returns plain mappings with the secrets resolved; the
adapters turn them into validated endpoint objects (``adapters.endpoints``). Errors name
the connector and the field, never a secret's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.catalogue import CATALOGUE_KEYS, CatalogueError, read_document
from routing.domain.ids import id_problem

_PATH_FIELDS = ("private_key_path", "known_hosts_path", "path")
_INLINE_SECRET_FIELDS = ("secret", "passphrase")


class ConnectorsFileError(CatalogueError):
    """The connectors file cannot be read or uses a form this loader refuses."""


def _read_secret_file(connector_id: str, path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConnectorsFileError(
            f"connector {connector_id}: cannot read secret file {path}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    if not value:
        raise ConnectorsFileError(f"connector {connector_id}: secret file {path} is empty")
    return value


def _read_secret_env(connector_id: str, name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConnectorsFileError(
            f"connector {connector_id}: environment variable {name} (a secret reference) "
            "is unset or empty"
        )
    return value


def _resolve_ref(
    connector_id: str, ref: Any, base: Path, environ: Mapping[str, str], field: str
) -> str:
    """One ``{file = …}`` or ``{env = …}`` reference to its secret value."""
    if not isinstance(ref, Mapping) or set(ref) not in ({"file"}, {"env"}):
        raise ConnectorsFileError(
            f"connector {connector_id}: each entry of {field} must be {{ file = \"…\" }} or "
            "{ env = \"…\" } (secrets are given by reference, never inline)"
        )
    if "file" in ref:
        return _read_secret_file(connector_id, base / str(ref["file"]))
    return _read_secret_env(connector_id, str(ref["env"]), environ)


def resolve_connector(
    connector_id: str, table: Mapping[str, Any], base: Path, environ: Mapping[str, str]
) -> dict[str, Any]:
    """One connector's table with secret references replaced by their values."""
    data = {k: v for k, v in table.items() if k not in CATALOGUE_KEYS}
    for name in _INLINE_SECRET_FIELDS:
        if name in data:
            raise ConnectorsFileError(
                f"connector {connector_id}: inline `{name}` is refused; use {name}_file or "
                f"{name}_env"
            )
    secrets: list[str] = []
    if "secrets" in data:
        refs = data.pop("secrets")
        if not isinstance(refs, list):
            raise ConnectorsFileError(f"connector {connector_id}: secrets must be a list")
        secrets.extend(_resolve_ref(connector_id, r, base, environ, "secrets") for r in refs)
    if "secret_file" in data:
        secrets.append(_read_secret_file(connector_id, base / str(data.pop("secret_file"))))
    if "secret_env" in data:
        secrets.append(_read_secret_env(connector_id, str(data.pop("secret_env")), environ))
    if secrets:
        data["secrets"] = secrets
    if "passphrase_file" in data:
        data["passphrase"] = _read_secret_file(
            connector_id, base / str(data.pop("passphrase_file"))
        )
    if "passphrase_env" in data:
        data["passphrase"] = _read_secret_env(
            connector_id, str(data.pop("passphrase_env")), environ
        )
    for name in _PATH_FIELDS:
        if name in data:
            data[name] = str(base / str(data[name]))
    return data


def load_connectors_file(
    path: Path, environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Each connector's endpoint fields, by connector id, with secrets resolved.

    A table with no endpoint field (only ``name`` and ``adapter``) declares a connector
    without an endpoint here: it is in the catalogue but has no entry in the result.

    Relative paths (secret files, keys, known_hosts, drop directories) are taken from the
    file's own directory, so a deployment can ship the file next to what it names.
    """
    try:
        document = read_document(path)
    except CatalogueError as exc:
        raise ConnectorsFileError(str(exc)) from None
    return resolve_document(document, path, environ)


def resolve_document(
    document: Mapping[str, Any], path: Path, environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """``load_connectors_file`` on a document already read (one read for catalogue and
    endpoints, so both describe the same version of the file)."""
    unknown = sorted(set(document) - {"connectors"})
    if unknown:
        raise ConnectorsFileError(
            f"the connectors file {path} has unknown top-level keys: {', '.join(unknown)} "
            "(expected [connectors.<id>] tables)"
        )
    tables = document.get("connectors", {})
    if not isinstance(tables, dict):
        raise ConnectorsFileError(f"the connectors file {path}: `connectors` must be a table")
    env = os.environ if environ is None else environ
    base = path.resolve().parent
    resolved: dict[str, dict[str, Any]] = {}
    for connector_id, table in tables.items():
        problem = id_problem("connector", connector_id)
        if problem is not None:
            raise ConnectorsFileError(f"the connectors file {path}: {problem}")
        if not isinstance(table, dict):
            raise ConnectorsFileError(f"connector {connector_id}: expected a table")
        if set(table) <= CATALOGUE_KEYS:
            continue
        resolved[connector_id] = resolve_connector(connector_id, table, base, env)
    return resolved
