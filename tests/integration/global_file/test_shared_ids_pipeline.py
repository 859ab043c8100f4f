"""Issue 13 item 2 through the whole pipeline: a statement id shared by two feeds (two
cabinets' accounts) or reused for other content loses no statement, and an identical
redelivery stays one.

The real router, global-file builder and ledger run against the session broker and one
SQLite store; the files are downloaded and the statements traced through the API, as each
cabinet's staff would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer
from routing.domain.model import Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.bootstrap import run_global_file_builder, run_ledger, run_router
from routing.router import RouterTuning
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.eventually import eventually
from tests.unit.router.factories import make_iban, state, statement

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
IBAN_A, IBAN_B = make_iban(6001), make_iban(6002)
JANUARY = {"from": "2026-01-01", "to": "2026-01-31"}



def content(tag: str) -> bytes:
    return f"01 {tag}".ljust(120, "-").encode()


async def test_a_shared_or_reused_id_loses_nothing_through_the_pipeline(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    sqlite_url: str,
    tmp_path: Path,
    unique_group: Callable[..., str],
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    user_a, user_b = [
        {"Authorization": f"Bearer {(await store.create_user(c, Profile.COLLABORATEUR)).token}"}
        for c in ("cab-a", "cab-b")
    ]
    settings = Settings(data_dir=tmp_path)
    stop = asyncio.Event()
    roles = [
        asyncio.create_task(
            run_router(settings, topics, default_catalogue(), stop, bootstrap_servers=bootstrap,
                       app_id=unique_group("router"), tuning=TUNING)
        ),
        asyncio.create_task(
            run_global_file_builder(settings, topics, store.engine, stop,
                                    bootstrap_servers=bootstrap)
        ),
        asyncio.create_task(
            run_ledger(settings, topics, store.engine, stop, bootstrap_servers=bootstrap)
        ),
    ]
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    app = create_app(
        store,
        default_catalogue(),
        global_file=SqlGlobalFileStore(store.engine),
        ledger=SqlDeliveryLedger(store.engine),
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    sent = [
        ("stmt-1", IBAN_A, content("A stmt-1")),
        ("stmt-1", IBAN_B, content("B stmt-1")),  # another feed, another cabinet, same id
        ("stmt-1", IBAN_A, content("A stmt-1")),  # an identical redelivery
        ("stmt-2", IBAN_A, content("A stmt-2 first")),
        ("stmt-2", IBAN_A, content("A stmt-2 corrected")),  # the id reused
    ]
    try:
        for iban, cabinet in ((IBAN_A, "cab-a"), (IBAN_B, "cab-b")):
            await producer.send_and_wait(
                topics.iban_state, state(iban, cabinet_id=cabinet, client_ref=None),
                key=iban.encode())
        for sid, iban, data in sent:
            value = statement(sid, iban, content=data, period_start="2026-01-05",
                              period_end="2026-01-05")
            await producer.send_and_wait(topics.received, value, key=iban.encode())

        async def download(headers: dict[str, str], cabinet: str) -> httpx.Response:
            return await client.get(f"/cabinets/{cabinet}/global-file", params=JANUARY,
                                    headers=headers)

        file_a = await eventually(
            lambda: download(user_a, "cab-a"),
            "cabinet A's three statements in its file",
            done=lambda r: r.headers.get("x-statement-count") == "3",
        )
        file_b = await eventually(
            lambda: download(user_b, "cab-b"),
            "cabinet B's stmt-1 in its file",
            done=lambda r: r.headers.get("x-statement-count") == "1",
        )

        async def trace(headers: dict[str, str], sid: str) -> httpx.Response:
            return await client.get(f"/statements/{sid}", headers=headers)

        trace_b = await eventually(
            lambda: trace(user_b, "stmt-1"),
            "B's stmt-1 traced, with the builder's outcome",
            done=lambda r: r.status_code == 200
            and [o["outcome"] for o in r.json()["outcomes"]][-1:] == ["stored_global_file"],
        )
        trace_a = (await trace(user_a, "stmt-1")).json()
        ambiguous = await eventually(
            lambda: trace(user_a, "stmt-2"),
            "stmt-2 of A: two statements",
            done=lambda r: r.status_code == 409
            and all(c["status"] == "in_global_file" for c in r.json()["candidates"]),
        )
        chosen = [
            (await client.get("/statements/stmt-2", params={"key": c["key"]},
                              headers=user_a)).json()
            for c in ambiguous.json()["candidates"]
        ]
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*roles, return_exceptions=True), 90)
        await client.aclose()
        await producer.stop()
        await store.close()
    for result in results:
        assert not isinstance(result, BaseException), result

    # B's file holds B's stmt-1; A's holds its stmt-1 once and both of its stmt-2.
    assert file_b.content == content("B stmt-1") + b"\r\n"
    assert sorted(file_a.content.split(b"\r\n")[:-1]) == sorted(
        [content("A stmt-1"), content("A stmt-2 first"), content("A stmt-2 corrected")]
    )
    # Each cabinet's user traces its own stmt-1, never the other's, never a 403.
    assert (trace_b.json()["cabinet_id"], trace_b.json()["iban"]) == ("cab-b", IBAN_B)
    assert trace_b.json()["status"] == "in_global_file"
    assert (trace_a["cabinet_id"], trace_a["iban"]) == ("cab-a", IBAN_A)
    # The reused id: two statements, each with its trace, the later one says it was reused.
    assert len(chosen) == 2 and all(t["status"] == "in_global_file" for t in chosen)
    assert all(len(t["other_contents"]) == 1 for t in chosen)
    details = [o["detail"] or "" for t in chosen for o in t["outcomes"]]
    assert any("the id was reused, all are kept" in d for d in details)
