"""Issue 13 item 2 at the partner: a statement id shared by two statements never makes one
of them disappear, and the same statement delivered again stays one copy.

Two feeds may both send ``stmt-2`` (for accounts of two cabinets bound to one connector),
and a feed may re-use an id for other content. Each case is checked on the directory
drop, the SFTP drop (a real asyncssh server) and the webhook (a real receiver verifying
the Standard Webhooks signature): the two statements reach the partner as two files or
two ``webhook-id``s, and an identical redelivery is the same file, left as it is, or the
same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.delivery import (
    DirectoryDeliverer,
    DirectoryEndpoint,
    SftpDeliverer,
    WebhookDeliverer,
    WebhookEndpoint,
)
from events.schemas import StatementPartnerDelivery
from routing.domain.identity import statement_key
from tests.unit.delivery.factories import IBAN, OTHER_IBAN, file_name, make_delivery

from .conftest import SftpServer, WebhookReceiver

FIRST = b"0130006    00001EUR2 12345678901  010126 first statement\r\n"
SECOND = b"0130006    00001EUR2 12345678901  010126 another statement\r\n"

#: (what the second statement is, how it is built): the first is always
#: ``make_delivery("stmt-2", content=FIRST)`` (IBAN, cabinet cab-1).
OTHERS: dict[str, dict[str, Any]] = {
    "another_cabinet": dict(content=SECOND, iban=OTHER_IBAN, cabinet_id="cab-2"),
    "another_cabinet_same_bytes": dict(content=FIRST, iban=OTHER_IBAN, cabinet_id="cab-2"),
    "same_account_other_content": dict(content=SECOND),
}


def first() -> StatementPartnerDelivery:
    return make_delivery("stmt-2", content=FIRST)


def second(kind: str) -> StatementPartnerDelivery:
    return make_delivery("stmt-2", **OTHERS[kind])


def files_in(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# --- directory drop -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(OTHERS))
async def test_directory_two_statements_sharing_an_id_are_two_files(
    tmp_path: Path, kind: str
) -> None:
    deliverer = DirectoryDeliverer(DirectoryEndpoint(tmp_path, metadata_sidecar=True))
    a, b = first(), second(kind)

    assert (await deliverer.deliver(a)).ok
    assert (await deliverer.deliver(b)).ok

    files = files_in(tmp_path)
    name_a = file_name("stmt-2", content=FIRST)
    name_b = file_name("stmt-2", **OTHERS[kind])
    assert name_a != name_b
    assert {name_a, name_b, f"{name_a}.json", f"{name_b}.json"} == set(files)
    assert files[name_a] == FIRST
    assert files[name_b] == OTHERS[kind]["content"]
    assert json.loads(files[f"{name_a}.json"])["iban"] == a.iban
    assert json.loads(files[f"{name_b}.json"])["cabinet_id"] == b.cabinet_id


async def test_directory_two_statements_sharing_an_id_delivered_at_once(tmp_path: Path) -> None:
    """Two accounts hash to two partitions, which a worker delivers concurrently."""
    deliverers = [DirectoryDeliverer(DirectoryEndpoint(tmp_path)) for _ in range(2)]
    a, b = first(), second("another_cabinet")

    results = await asyncio.gather(deliverers[0].deliver(a), deliverers[1].deliver(b))

    assert all(r.ok for r in results)
    assert sorted(files_in(tmp_path).values()) == sorted([FIRST, SECOND])


async def test_directory_an_identical_redelivery_is_the_same_file_left_as_it_is(
    tmp_path: Path,
) -> None:
    deliverer = DirectoryDeliverer(DirectoryEndpoint(tmp_path, metadata_sidecar=True))
    assert (await deliverer.deliver(first())).ok
    path = tmp_path / file_name("stmt-2", content=FIRST)
    before = path.stat()

    again = await deliverer.deliver(first())

    assert again.kind == "delivered" and "left as it is" in again.detail
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(files_in(tmp_path)) == 2  # the statement and its sidecar, once


async def test_directory_a_foreign_file_under_the_name_is_replaced(tmp_path: Path) -> None:
    """A file of another size under the statement's own name is no delivery of ours."""
    name = file_name("stmt-2", content=FIRST)
    (tmp_path / name).write_bytes(b"truncated")

    result = await DirectoryDeliverer(DirectoryEndpoint(tmp_path)).deliver(first())

    assert result.kind == "delivered" and result.detail.startswith("wrote")
    assert files_in(tmp_path) == {name: FIRST}


# --- SFTP drop ------------------------------------------------------------------------------


@pytest.fixture
async def sftp(sftp_server: SftpServer) -> AsyncIterator[SftpDeliverer]:
    deliverer = SftpDeliverer(sftp_server.endpoint(metadata_sidecar=True))
    yield deliverer
    await deliverer.close()


@pytest.mark.parametrize("kind", sorted(OTHERS))
async def test_sftp_two_statements_sharing_an_id_are_two_files(
    sftp_server: SftpServer, sftp: SftpDeliverer, kind: str
) -> None:
    a, b = first(), second(kind)

    assert (await sftp.deliver(a)).ok
    assert (await sftp.deliver(b)).ok

    files = sftp_server.inbox_files()
    name_a = file_name("stmt-2", content=FIRST)
    name_b = file_name("stmt-2", **OTHERS[kind])
    assert name_a != name_b
    assert {name_a, name_b, f"{name_a}.json", f"{name_b}.json"} == set(files)
    assert (files[name_a], files[name_b]) == (FIRST, OTHERS[kind]["content"])


async def test_sftp_an_identical_redelivery_is_the_same_file_left_as_it_is(
    sftp_server: SftpServer, sftp: SftpDeliverer
) -> None:
    assert (await sftp.deliver(first())).ok
    path = sftp_server.inbox / file_name("stmt-2", content=FIRST)
    before = path.stat()

    again = await sftp.deliver(first())

    assert again.kind == "delivered" and "left as it is" in again.detail
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(sftp_server.inbox_files()) == 2


# --- webhook --------------------------------------------------------------------------------


@pytest.fixture
async def webhook(webhook_receiver: WebhookReceiver) -> AsyncIterator[WebhookDeliverer]:
    endpoint = WebhookEndpoint(
        url=webhook_receiver.url,
        secrets=tuple(SecretStr(s) for s in webhook_receiver.secrets),
    )
    deliverer = WebhookDeliverer(endpoint)
    yield deliverer
    await deliverer.close()


@pytest.mark.parametrize("kind", sorted(OTHERS))
async def test_webhook_two_statements_sharing_an_id_have_two_webhook_ids(
    webhook_receiver: WebhookReceiver, webhook: WebhookDeliverer, kind: str
) -> None:
    a, b = first(), second(kind)

    assert (await webhook.deliver(a)).ok
    assert (await webhook.deliver(b)).ok

    [got_a, got_b] = webhook_receiver.received
    assert got_a.verified and got_b.verified
    assert got_a.headers["webhook-id"] != got_b.headers["webhook-id"]
    key_a = statement_key(IBAN, "stmt-2", a.content_sha256)
    key_b = statement_key(b.iban, "stmt-2", b.content_sha256)
    assert got_a.headers["webhook-id"] == f"stmt-2.{key_a}"
    assert got_b.headers["webhook-id"] == f"stmt-2.{key_b}"
    assert (got_a.body, got_b.body) == (a.to_json(), b.to_json())


async def test_webhook_an_identical_redelivery_has_the_same_webhook_id(
    webhook_receiver: WebhookReceiver, webhook: WebhookDeliverer
) -> None:
    assert (await webhook.deliver(first())).ok
    assert (await webhook.deliver(first())).ok

    [one, two] = webhook_receiver.received
    assert one.headers["webhook-id"] == two.headers["webhook-id"]
    assert one.headers["webhook-id"].startswith("stmt-2.")
    assert one.body == two.body
