"""Statement ids that try to leave a drop (issue 13, item 5): through the directory and
the SFTP adapters, every statement lands inside the connector's directory, under a name
that neither hides it nor reads as an option, and no two ids share a file."""

from __future__ import annotations

import os
from pathlib import Path

from adapters.delivery import DirectoryDeliverer, DirectoryEndpoint, SftpDeliverer
from tests.unit.delivery.factories import make_delivery

from .conftest import SftpServer

TRAVERSING_STATEMENT_IDS = ("..", "...", "..:..", ".hidden", "a..b", "-rf", "CON", "x" * 200)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_statement_ids_cannot_leave_a_directory_drop(tmp_path: Path) -> None:
    inbox = tmp_path / "partners" / "quadra"
    inbox.mkdir(parents=True)
    deliverer = DirectoryDeliverer(DirectoryEndpoint(inbox, metadata_sidecar=True))
    try:
        for statement_id in TRAVERSING_STATEMENT_IDS:
            result = await deliverer.deliver(make_delivery(statement_id))
            assert result.kind == "delivered", result.detail
    finally:
        await deliverer.close()
    names = os.listdir(inbox)
    assert tree(tmp_path) == {"partners", "partners/quadra"} | {
        f"partners/quadra/{n}" for n in names
    }
    assert len(names) == 2 * len(TRAVERSING_STATEMENT_IDS)  # statement and sidecar, each apart
    assert all(not n.startswith((".", "-")) for n in names)


async def test_statement_ids_cannot_leave_an_sftp_drop(sftp_server: SftpServer) -> None:
    root = sftp_server.inbox.parent
    before = tree(root)
    deliverer = SftpDeliverer(sftp_server.endpoint())
    try:
        for statement_id in TRAVERSING_STATEMENT_IDS:
            result = await deliverer.deliver(make_delivery(statement_id))
            assert result.kind == "delivered", result.detail
    finally:
        await deliverer.close()
    names = list(sftp_server.inbox_files())
    assert tree(root) - before == {f"{sftp_server.inbox.name}/{n}" for n in names}
    assert len(names) == len(TRAVERSING_STATEMENT_IDS)
    assert all(not n.startswith((".", "-")) for n in names)
