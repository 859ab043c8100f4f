"""``GET /cabinets/{cabinet_id}/global-file`` over the real store (SQLite and PostgreSQL):
the exact bytes of the file, the archive, the cabinet boundary and the 422s."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from adapters.global_file import member_name
from config.catalogue import default_catalogue
from routing.domain.identity import statement_key
from routing.domain.model import Profile
from routing.entrypoints.api.app import create_app
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.sql import SqlStateStore
from tests.integration.global_file.factories import cfonb_content, cfonb_record, entry, iban

URL = "/cabinets/cab-a/global-file"
JANUARY = {"from": "2026-01-01", "to": "2026-01-31"}
CRLF = b"\r\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Api:
    client: httpx.AsyncClient
    files: SqlGlobalFileStore
    user: dict[str, str]
    other: dict[str, str]


@pytest.fixture
async def api(store: SqlStateStore) -> AsyncIterator[Api]:
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    user = await store.create_user("cab-a", Profile.COLLABORATEUR)
    other = await store.create_user("cab-b", Profile.ADMINISTRATEUR)
    files = SqlGlobalFileStore(store.engine)
    app = create_app(
        store, default_catalogue(), global_file=files, ledger=SqlDeliveryLedger(store.engine)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(
            client,
            files,
            {"Authorization": f"Bearer {user.token}"},
            {"Authorization": f"Bearer {other.token}"},
        )


def records(tag: str) -> list[bytes]:
    return [cfonb_record(k, f"{tag}-{k}") for k in ("01", "04", "07")]


async def test_cfonb_statements_are_one_txt_with_crlf_records_in_order(api: Api) -> None:
    short_05 = b"05 short complement"
    await api.files.store(
        [
            # Stored out of order; the file follows (period_start, received_at, id).
            entry("s3-crlf-blank-lines", period=("2026-01-12", "2026-01-12"),
                  content=CRLF.join([*records("s3")[:2], b"", b"   ", short_05,
                                     records("s3")[2], b""])),
            entry("s1-lf", period=("2026-01-05", "2026-01-05"),
                  content=cfonb_content("s1", sep=b"\n", trailing=False)),
            entry("s2-no-breaks", period=("2026-01-06", "2026-01-06"),
                  content=cfonb_content("s2", sep=b"") + b"\x1a"),
            entry("elsewhere", cabinet_id="cab-b"),
            entry("february", period=("2026-02-01", "2026-02-01")),
        ]
    )
    response = await api.client.get(URL, params=JANUARY, headers=api.user)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == (
        'attachment; filename="releves-cab-a-2026-01-01-2026-01-31.txt"'
    )
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-statement-count"] == "3"
    expected = [
        *records("s1"),
        *records("s2"),
        *records("s3")[:2],
        short_05.ljust(120),
        records("s3")[2],
    ]
    assert response.content == b"".join(r + CRLF for r in expected)
    lines = response.content.split(CRLF)
    assert lines[-1] == b"" and all(len(line) == 120 for line in lines[:-1])


async def test_mixed_formats_are_a_zip(api: Api) -> None:
    camt = b"<?xml version='1.0'?><Document>camt</Document>"
    mt940 = b":20:STMT\r\n:25:ACCOUNT\r\n"
    await api.files.store(
        [
            entry("c1", period=("2026-01-05", "2026-01-05"), content=cfonb_content("c1")),
            entry("x1", fmt="camt053", period=("2026-01-06", "2026-01-07"), content=camt),
            entry("m:1", fmt="mt940", period=("2026-01-08", "2026-01-08"), content=mt940,
                  client_ref=None, account=2),
            entry("c2", period=("2026-01-09", "2026-01-09"), content=cfonb_content("c2")),
        ]
    )
    response = await api.client.get(URL, params=JANUARY, headers=api.user)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == (
        'attachment; filename="releves-cab-a-2026-01-01-2026-01-31.zip"'
    )
    assert response.headers["x-statement-count"] == "4"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        contents = {name: archive.read(name) for name in names}
    m_name = next(n for n in names if n.startswith("2026-01-08_"))
    x_name = member_name(
        entry("x1", fmt="camt053", period=("2026-01-06", "2026-01-07"), content=camt)
    )
    # <period_start>_<client_ref>_<id>.<statement key>.<ext>: the key keeps apart two
    # statements sharing an id.
    assert x_name == f"2026-01-06_client-1_x1.{statement_key(iban(1), 'x1', sha(camt))}.xml"
    assert names == ["releves-cab-a-2026-01-01-2026-01-31.txt", x_name, m_name]
    # No client reference: the IBAN; an id with ':' gets a safe, hashed name.
    assert m_name.startswith("2026-01-08_FR76") and m_name.endswith(".sta") and ":" not in m_name
    assert contents["releves-cab-a-2026-01-01-2026-01-31.txt"] == b"".join(
        r + CRLF for r in [*records("c1"), *records("c2")]
    )
    assert contents[x_name] == camt
    assert contents[m_name] == mt940  # byte for byte
    again = await api.client.get(URL, params=JANUARY, headers=api.user)
    assert again.content == response.content  # deterministic


async def test_no_cfonb_means_no_txt_in_the_zip(api: Api) -> None:
    await api.files.store([entry("x1", fmt="camt053", content=b"<Document/>")])
    response = await api.client.get(URL, params=JANUARY, headers=api.user)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == [
            member_name(entry("x1", fmt="camt053", content=b"<Document/>"))
        ]


async def test_an_empty_period_is_an_empty_txt(api: Api) -> None:
    response = await api.client.get(URL, params=JANUARY, headers=api.user)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["x-statement-count"] == "0"
    assert response.headers["content-disposition"].endswith('-2026-01-31.txt"')


async def test_another_cabinet_is_403(api: Api) -> None:
    await api.files.store([entry("s1")])
    response = await api.client.get(URL, params=JANUARY, headers=api.other)
    assert response.status_code == 403
    assert response.json()["error"] == "other_cabinet"
    unauthenticated = await api.client.get(URL, params=JANUARY)
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"from": "2026-13-01", "to": "2026-01-31"}, "query.from"),
        ({"from": "2026-1-1", "to": "2026-01-31"}, "query.from"),
        ({"from": "2026-01-01", "to": "yesterday"}, "query.to"),
        ({"from": "2026-02-30", "to": "2026-03-01"}, "query.from"),
        ({"from": "2026-02-01", "to": "2026-01-31"}, "before it starts"),
        ({"to": "2026-01-31"}, "query.from"),
    ],
)
async def test_bad_periods_are_422(api: Api, params: dict[str, str], complaint: str) -> None:
    response = await api.client.get(URL, params=params, headers=api.user)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert complaint in body["detail"]


async def test_the_route_is_in_the_openapi_schema(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    download = paths["/cabinets/{cabinet_id}/global-file"]["get"]
    assert {p["name"] for p in download["parameters"]} >= {"from", "to", "cabinet_id"}
    assert "/statements/{statement_id}" in paths
