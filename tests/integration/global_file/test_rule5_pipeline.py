"""DESIGN §2 rule 5 through the whole pipeline: a bound IBAN's statements never appear in
the cabinet's global file.

The real router, the global-file builder and the ledger run against the session broker
and one SQLite store; IBAN states are published to ``iban.state`` as another system would;
the file is downloaded through the API, as staff would, and the trace is read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
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
BOUND, UNBOUND = make_iban(5001), make_iban(5002)



def content(statement_id: str) -> bytes:
    return f"01 {statement_id}".ljust(120, "-").encode()


async def test_a_bound_ibans_statements_never_reach_the_global_file(
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
    user = await store.create_user("cab-a", Profile.COLLABORATEUR)
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
    headers = {"Authorization": f"Bearer {user.token}"}
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        for iban, connector_id in ((BOUND, "acd"), (UNBOUND, None)):
            await producer.send_and_wait(
                topics.iban_state,
                state(iban, cabinet_id="cab-a", connector_id=connector_id,
                      client_ref=f"client-{iban[-4:]}"),
                key=iban.encode())
        for sid, iban in (("b1", BOUND), ("u1", UNBOUND), ("b2", BOUND), ("u2", UNBOUND)):
            value = statement(sid, iban, content=content(sid), period_start="2026-01-05",
                              period_end="2026-01-05")
            await producer.send_and_wait(topics.received, value, key=iban.encode())

        # Every statement has been routed (the bound ones to their partner) ...
        await eventually(
            lambda: read_topic(bootstrap, topics.partner("acd")),
            "two partner deliveries",
            done=lambda records: len(records) == 2,
        )

        async def trace(sid: str) -> httpx.Response:
            return await client.get(f"/statements/{sid}", headers=headers)

        # ... and the builder and the ledger have caught up.
        for sid in ("u1", "u2"):
            await eventually(
                lambda sid=sid: trace(sid),
                f"{sid} in the global file and both outcomes in the ledger",
                done=lambda r: r.status_code == 200
                             and r.json()["status"] == "in_global_file"
                             and [o["outcome"] for o in r.json()["outcomes"]][-2:]
                             == ["routed", "stored_global_file"],
            )
        for sid in ("b1", "b2"):
            await eventually(
                lambda sid=sid: trace(sid),
                f"{sid} routed, in the ledger",
                done=lambda r: r.status_code == 200 and r.json()["status"] == "routed",
            )

        download = await client.get(
            "/cabinets/cab-a/global-file", params={"from": "2026-01-01", "to": "2026-01-31"},
            headers=headers,
        )
        bound_trace = (await trace("b1")).json()
        unbound_trace = (await trace("u1")).json()
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*roles, return_exceptions=True), 90)
        await client.aclose()
        await producer.stop()
        await store.close()
    for result in results:
        assert not isinstance(result, BaseException), result

    assert download.status_code == 200
    assert download.headers["x-statement-count"] == "2"
    assert download.content == content("u1") + b"\r\n" + content("u2") + b"\r\n"
    assert b"b1" not in download.content and b"b2" not in download.content

    assert bound_trace["status"] == "routed"
    assert bound_trace["global_file"] is None
    assert bound_trace["routing"]["destination"] == "partner"
    assert bound_trace["routing"]["connector_id"] == "acd"
    # Held first when the statement overtook its IBAN's state, then released: both fine.
    assert [o["outcome"] for o in unbound_trace["outcomes"]] in (
        ["routed", "stored_global_file"], ["held", "routed", "stored_global_file"],
    )
    assert unbound_trace["routing"]["source"] in ("outcome", "global_file")
    assert unbound_trace["routing"]["state_version"] == 1
    assert {c["name"]: c["ok"] for c in unbound_trace["routing"]["checks"]} == {
        "connector_on_cabinet": True, "iban_bound": False, "mandate_approved": True,
        "connector_configured": True,
    }
