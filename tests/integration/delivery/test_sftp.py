"""The SFTP adapter against a real asyncssh SFTP server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncssh
import pytest

from adapters.delivery import SftpDeliverer
from adapters.delivery.naming import is_temporary_name
from tests.unit.delivery.factories import SAMPLE_CONTENT, file_name, make_delivery

from .conftest import SftpServer, SilentServer, unused_port

MakeDeliverer = Callable[..., SftpDeliverer]


@pytest.fixture
async def make_deliverer(sftp_server: SftpServer) -> AsyncIterator[MakeDeliverer]:
    made: list[SftpDeliverer] = []

    def make(**overrides: Any) -> SftpDeliverer:
        deliverer = SftpDeliverer(sftp_server.endpoint(**overrides))
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.close()


async def test_the_statement_lands_whole_under_its_deterministic_name(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    result = await make_deliverer().deliver(make_delivery("stmt-0001"))

    assert result.kind == "delivered", result.detail
    assert sftp_server.inbox_files() == {file_name("stmt-0001"): SAMPLE_CONTENT["cfonb120"]}


async def test_each_format_gets_its_extension(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    for fmt in ("cfonb120", "camt053", "mt940"):
        assert (await deliverer.deliver(make_delivery("s1-" + fmt, fmt=fmt))).ok

    assert sftp_server.inbox_files() == {
        file_name("s1-cfonb120", fmt="cfonb120"): SAMPLE_CONTENT["cfonb120"],
        file_name("s1-camt053", fmt="camt053"): SAMPLE_CONTENT["camt053"],
        file_name("s1-mt940", fmt="mt940"): SAMPLE_CONTENT["mt940"],
    }
    assert {name.rsplit(".", 1)[1] for name in sftp_server.inbox_files()} == {
        "txt", "xml", "sta"
    }


async def test_a_redelivery_leaves_the_file_and_another_content_gets_its_own(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    assert (await deliverer.deliver(make_delivery("stmt-dup"))).ok
    written = (sftp_server.inbox / file_name("stmt-dup")).stat()
    again = await deliverer.deliver(make_delivery("stmt-dup"))
    resent = b"0130006    00001EUR2 12345678901  020126 corrected\r\n"
    assert (await deliverer.deliver(make_delivery("stmt-dup", content=resent))).ok

    assert again.ok and "already" in again.detail and "left as it is" in again.detail
    assert (sftp_server.inbox / file_name("stmt-dup")).stat().st_ino == written.st_ino
    files = sftp_server.inbox_files()
    assert files == {
        file_name("stmt-dup"): SAMPLE_CONTENT["cfonb120"],
        file_name("stmt-dup", content=resent): resent,
    }
    assert not [name for name in files if is_temporary_name(name)]


async def test_the_optional_sidecar_carries_the_metadata_without_the_content(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    assert (await make_deliverer(metadata_sidecar=True).deliver(make_delivery("stmt-meta"))).ok

    files = sftp_server.inbox_files()
    name = file_name("stmt-meta")
    assert set(files) == {name, f"{name}.json"}
    metadata = json.loads(files[f"{name}.json"])
    assert metadata["statement_id"] == "stmt-meta"
    assert metadata["file_name"] == name
    assert "content_b64" not in metadata


async def test_one_connection_serves_many_deliveries(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    for i in range(3):
        assert (await deliverer.deliver(make_delivery(f"stmt-{i}"))).ok

    assert sftp_server.accepted == 1
    assert deliverer.connected
    await deliverer.close()
    assert not deliverer.connected


async def test_a_rejected_login_is_permanent(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer, tmp_path: Any
) -> None:
    stranger = tmp_path / "stranger_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))

    result = await make_deliverer(private_key_path=stranger).deliver(make_delivery())

    assert result.kind == "permanent"
    assert "login as partner@127.0.0.1" in result.detail
    assert sftp_server.inbox_files() == {}


async def test_an_unknown_host_key_is_permanent(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    sftp_server.trust(None)  # empty known_hosts: no trust on first use

    result = await make_deliverer().deliver(make_delivery())

    assert result.kind == "permanent"
    assert "host key" in result.detail and "not trusted" in result.detail
    assert sftp_server.inbox_files() == {}


async def test_a_changed_host_key_is_permanent(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    sftp_server.trust(asyncssh.generate_private_key("ssh-ed25519"))

    result = await make_deliverer().deliver(make_delivery())

    assert result.kind == "permanent"
    assert "not trusted" in result.detail


async def test_a_missing_known_hosts_file_is_permanent(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer, tmp_path: Any
) -> None:
    result = await make_deliverer(known_hosts_path=tmp_path / "nope").deliver(make_delivery())

    assert result.kind == "permanent"
    assert "known_hosts file" in result.detail and "does not exist" in result.detail


async def test_a_missing_client_key_is_permanent(
    make_deliverer: MakeDeliverer, tmp_path: Any
) -> None:
    result = await make_deliverer(private_key_path=tmp_path / "nope").deliver(make_delivery())

    assert result.kind == "permanent"
    assert "client key" in result.detail


async def test_a_missing_remote_directory_is_retried(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer(remote_directory="gone")

    result = await deliverer.deliver(make_delivery())

    assert result.kind == "retry"
    assert "does not exist" in result.detail
    (sftp_server.root / "gone").mkdir()
    assert (await deliverer.deliver(make_delivery())).ok


async def test_a_server_that_is_down_is_retried(make_deliverer: MakeDeliverer) -> None:
    result = await make_deliverer(port=unused_port()).deliver(make_delivery())

    assert result.kind == "retry"
    assert "connection" in result.detail


async def test_a_server_that_hangs_is_retried_after_the_timeout(
    make_deliverer: MakeDeliverer, silent_server: SilentServer
) -> None:
    deliverer = make_deliverer(port=silent_server.port, timeout=0.5)

    # The server never answers: without the deliverer's own timeout this would hang.
    result = await asyncio.wait_for(deliverer.deliver(make_delivery()), 30)

    assert result.kind == "retry"
    assert "within 0.5 s" in result.detail
    assert not deliverer.connected


async def test_an_outage_is_retried_then_the_deliverer_reconnects(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    assert (await deliverer.deliver(make_delivery("before"))).ok

    await sftp_server.stop()
    during = await deliverer.deliver(make_delivery("during"))
    await sftp_server.start()
    after = await deliverer.deliver(make_delivery("after"))

    assert during.kind == "retry"
    assert after.kind == "delivered", after.detail
    assert set(sftp_server.inbox_files()) == {file_name("before"), file_name("after")}


async def test_a_restart_between_deliveries_is_invisible(
    sftp_server: SftpServer, make_deliverer: MakeDeliverer
) -> None:
    deliverer = make_deliverer()
    assert (await deliverer.deliver(make_delivery("before"))).ok

    await sftp_server.stop()
    await sftp_server.start()
    result = await deliverer.deliver(make_delivery("after"))

    assert result.kind == "delivered", result.detail
    assert sftp_server.accepted == 2
    assert set(sftp_server.inbox_files()) == {file_name("before"), file_name("after")}
