"""Deterministic names and contents of the files the file-drop adapters (SFTP, directory) write.

**One name per statement.** The final name is ``<statement id>.<statement key>.<ext>``:
the id, for people looking for it, and the statement key
(``routing.domain.identity``: 16 hex digits of the IBAN, the id and the content), because
an id is only unique per account. Two feeds sending ``stmt-2`` for two accounts bound to
one connector, or a feed re-using ``stmt-2`` for other content, get two files; the same
statement delivered again (at-least-once, a replay from the dead-letter topic) gets the
same name, which the adapters then leave alone: the file system is the idempotency key.
The extension follows the format, because that is what production tools match on:
``.txt`` for CFONB 120, ``.xml`` for camt.053, ``.sta`` for MT940.

**Sanitising must stay injective.** Statement ids may hold ``:``, which Windows shares and
many SFTP servers refuse, and a leading ``.`` or ``-`` would hide the file or read as an
option. Replacing characters alone would let ``a:b`` and ``a_b`` overwrite each other, so an
id that needs any change also gets a short SHA-256 of the original id. Ids that are already
safe, by far the common case, keep their name as is, which keeps them easy to find.

**What is written.** The raw statement file, byte for byte as the bank sent it: that is what
an accounting tool imports, and it keeps its own integrity (compare with
``content_sha256``). A ``<file>.json`` sidecar with the delivery's metadata (IBAN, period,
cabinet, routing trace, SHA-256; not the content) is optional per endpoint, for partners
that want the routing facts without parsing the file. When enabled, it is written *before*
the statement, so a tool that reacts to the statement file finds its sidecar already there.

**Temporary names** are ``.<final>.<random>.part``: hidden and suffixed so watchers ignore
them, in the same directory so the final rename is atomic, and unique per attempt so two
workers briefly delivering the same statement (a rebalance) never write into one file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from events.schemas import StatementFormat, StatementPartnerDelivery
from routing.domain.identity import statement_key

EXTENSIONS: dict[StatementFormat, str] = {"cfonb120": "txt", "camt053": "xml", "mt940": "sta"}
SIDECAR_SUFFIX = ".json"
PART_SUFFIX = ".part"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 120  # leaves room for the hash, extension, sidecar and temp affixes in 255 bytes
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)


def _is_safe(statement_id: str) -> bool:
    return (
        _SAFE_ID.fullmatch(statement_id) is not None
        and len(statement_id) <= _MAX_STEM
        and statement_id.split(".")[0].upper() not in _WINDOWS_RESERVED
    )


def file_stem(statement_id: str) -> str:
    """The statement id itself when safe as a file name, else a sanitised, hashed variant."""
    if _is_safe(statement_id):
        return statement_id
    cleaned = _UNSAFE_RUN.sub("_", statement_id).lstrip("._-")[:_MAX_STEM] or "statement"
    digest = hashlib.sha256(statement_id.encode()).hexdigest()[:16]
    return f"{cleaned}-{digest}"


def statement_file_name(statement_id: str, key: str, fmt: StatementFormat) -> str:
    """The final, deterministic file name of a statement, e.g.
    ``stmt-1.3f9a0c1d2e4b5a69.txt`` (``key``: its statement key)."""
    return f"{file_stem(statement_id)}.{key}.{EXTENSIONS[fmt]}"


def delivery_file_name(delivery: StatementPartnerDelivery) -> str:
    """The final file name of a delivery's statement."""
    key = statement_key(delivery.iban, delivery.statement_id, delivery.content_sha256)
    return statement_file_name(delivery.statement_id, key, delivery.format)


def sidecar_file_name(final_name: str) -> str:
    """The metadata sidecar of a statement file, e.g. ``stmt-1.txt.json``."""
    return final_name + SIDECAR_SUFFIX


def temporary_name(final_name: str) -> str:
    """A fresh temporary name for one upload of ``final_name``, in the same directory."""
    return f".{final_name}.{secrets.token_hex(6)}{PART_SUFFIX}"


def is_temporary_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(PART_SUFFIX)


@dataclass(frozen=True, slots=True)
class FileToWrite:
    name: str
    content: bytes


def sidecar_content(delivery: StatementPartnerDelivery, final_name: str) -> bytes:
    """The delivery's metadata as JSON: everything but the statement bytes."""
    doc = delivery.model_dump(mode="json", by_alias=True, exclude={"content_b64"})
    doc["file_name"] = final_name
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True).encode() + b"\n"


def files_for(delivery: StatementPartnerDelivery, *, sidecar: bool) -> list[FileToWrite]:
    """What one delivery writes, in the order to write it (the statement file last)."""
    final = delivery_file_name(delivery)
    files: list[FileToWrite] = []
    if sidecar:
        files.append(FileToWrite(sidecar_file_name(final), sidecar_content(delivery, final)))
    files.append(FileToWrite(final, delivery_content(delivery)))
    return files


def delivery_content(delivery: StatementPartnerDelivery) -> bytes:
    """The statement file's bytes (the event validated the base64 and the SHA-256)."""
    return base64.b64decode(delivery.content_b64)
