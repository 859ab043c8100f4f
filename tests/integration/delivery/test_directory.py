"""The directory-drop adapter on the real file system."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from adapters.delivery import DirectoryDeliverer, DirectoryEndpoint
from adapters.delivery.naming import is_temporary_name
from tests.unit.delivery.factories import SAMPLE_CONTENT, file_name, make_delivery


def files_in(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def names_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


async def deliver_to(path: Path, statement_id: str = "stmt-0001", **kwargs: bool) -> str:
    deliverer = DirectoryDeliverer(DirectoryEndpoint(path, **kwargs))
    try:
        result = await deliverer.deliver(make_delivery(statement_id))
    finally:
        await deliverer.close()
    return f"{result.kind}: {result.detail}"


async def test_the_statement_lands_whole_under_its_deterministic_name(tmp_path: Path) -> None:
    outcome = await deliver_to(tmp_path)

    assert outcome.startswith(f"delivered: wrote {file_name()}")
    assert files_in(tmp_path) == {file_name(): SAMPLE_CONTENT["cfonb120"]}


async def test_each_format_gets_its_extension(tmp_path: Path) -> None:
    deliverer = DirectoryDeliverer(DirectoryEndpoint(tmp_path))
    for fmt in ("cfonb120", "camt053", "mt940"):
        assert (await deliverer.deliver(make_delivery("s-" + fmt, fmt=fmt))).ok
    await deliverer.close()

    names = set(files_in(tmp_path))
    assert {name.rsplit(".", 1)[1] for name in names} == {"txt", "xml", "sta"}
    assert names == {file_name("s-" + fmt, fmt=fmt) for fmt in ("cfonb120", "camt053", "mt940")}


async def test_a_redelivery_leaves_the_file_and_another_content_gets_its_own(
    tmp_path: Path,
) -> None:
    deliverer = DirectoryDeliverer(DirectoryEndpoint(tmp_path))
    resent = b"corrected statement\r\n"
    assert (await deliverer.deliver(make_delivery("stmt-dup"))).ok
    written = (tmp_path / file_name("stmt-dup")).stat()
    again = await deliverer.deliver(make_delivery("stmt-dup"))
    assert (await deliverer.deliver(make_delivery("stmt-dup", content=resent))).ok

    assert again.ok and "already" in again.detail and "left as it is" in again.detail
    assert (tmp_path / file_name("stmt-dup")).stat().st_ino == written.st_ino  # not rewritten
    files = files_in(tmp_path)
    assert files == {
        file_name("stmt-dup"): SAMPLE_CONTENT["cfonb120"],
        file_name("stmt-dup", content=resent): resent,
    }
    assert not [name for name in files if is_temporary_name(name)]


async def test_files_are_readable_like_any_new_file(tmp_path: Path) -> None:
    """Not mkstemp's 0600: the partner's tool often runs as another user."""
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    drop = tmp_path / "drop"
    drop.mkdir()

    await deliver_to(drop)

    mode = stat.S_IMODE((drop / file_name()).stat().st_mode)
    assert mode == stat.S_IMODE(reference.stat().st_mode)


async def test_the_optional_sidecar_is_written_next_to_the_statement(tmp_path: Path) -> None:
    await deliver_to(tmp_path, "stmt-meta", metadata_sidecar=True)

    files = files_in(tmp_path)
    name = file_name("stmt-meta")
    assert set(files) == {name, f"{name}.json"}
    metadata = json.loads(files[f"{name}.json"])
    assert metadata["file_name"] == name
    assert metadata["iban"] == "FR7630006000011234567890189"
    assert metadata["content_sha256"] == make_delivery().content_sha256
    assert "content_b64" not in metadata


async def test_a_missing_directory_is_retried_until_it_is_back(tmp_path: Path) -> None:
    mount = tmp_path / "share"
    deliverer = DirectoryDeliverer(DirectoryEndpoint(mount))

    first = await deliverer.deliver(make_delivery())
    mount.mkdir()
    second = await deliverer.deliver(make_delivery())

    assert first.kind == "retry" and "does not exist" in first.detail
    assert second.kind == "delivered"


async def test_a_path_that_is_a_file_is_permanent(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")

    assert (await deliver_to(not_a_dir)).startswith("permanent: drop path")
    assert (await deliver_to(not_a_dir / "below")).startswith("permanent: drop directory")


async def test_a_directory_in_place_of_the_final_name_is_permanent(tmp_path: Path) -> None:
    (tmp_path / file_name()).mkdir()

    assert (await deliver_to(tmp_path)).startswith(f"permanent: cannot write {file_name()}")
    assert names_in(tmp_path) == [file_name()]  # no .part left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
async def test_an_unwritable_directory_is_retried(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir(mode=0o555)
    try:
        outcome = await deliver_to(drop)
    finally:
        drop.chmod(0o755)

    assert outcome.startswith("retry:") and "not writable" in outcome
