"""The demo's feed and report: sample bank files through the real topics, then the answer
to "where did each statement go, and why?" read back from the output topics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import routing
from adapters.ingest.producer import build_events
from events.topics import Topics
from routing.broker import ProducerParams, make_producer, read_topic
from routing.demo.seed import CASES, PENDING, UNBOUND, UNBOUND_CAMT, DemoSeed
from routing.domain.iban import mask_iban
from routing.domain.model import MandateStatus
from routing.ports import StateStore

UNBOUND_IBANS = (UNBOUND, UNBOUND_CAMT)
SAMPLES = Path(routing.__file__).resolve().parents[1] / "examples" / "bank-files"
SAMPLE_FILES = ("cfonb120-multi.txt", "camt053-multi.xml", "mt940-multi.sta")

# Input no bank feed should send, and what the router must make of it.
MALFORMED = (
    b"this is not JSON",
    b'{"schema": "statement.received/v9", "statement_id": "demo-future-schema"}',
)


def _outputs(topics: Topics, connector_ids: list[str]) -> dict[str, str]:
    names = {topics.partner(c): f"partner {c}" for c in connector_ids}
    names[topics.global_file] = "global file"
    names[topics.held] = "held"
    names[topics.invalid] = "invalid"
    return names


async def _routed(bootstrap: str, outputs: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = {}
    for topic in outputs:
        for record in await read_topic(bootstrap, topic):
            seen.setdefault(topic, []).append(json.loads(record.value or b"{}"))
    return seen


async def _wait_until(
    done: Callable[[dict[str, list[dict[str, Any]]]], bool],
    bootstrap: str,
    outputs: dict[str, str],
    stop: asyncio.Event,
    seconds: float = 60.0,
) -> dict[str, list[dict[str, Any]]]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        seen = await _routed(bootstrap, outputs)
        if done(seen) or stop.is_set() or asyncio.get_running_loop().time() > deadline:
            return seen
        await asyncio.sleep(0.3)


async def run_demo(
    store: StateStore,
    seed: DemoSeed,
    bootstrap: str,
    topics: Topics,
    print_line: Callable[[str], None],
    stop: asyncio.Event,
    *,
    api_url: str | None = None,
    download_dir: Path | None = None,
    deliveries: Callable[[], dict[str, int]] | None = None,
) -> None:
    connector_ids = ["acd", "cegid", "quadra", "pennylane"]
    outputs = _outputs(topics, connector_ids)
    now = datetime.now(UTC)
    events = []
    for name in SAMPLE_FILES:
        data = (SAMPLES / name).read_bytes()
        events.extend(build_events(data, fmt="auto", source=f"demo:{name}", filename=name, now=now))
    producer = make_producer(ProducerParams(bootstrap, client_id="demo-feed"))
    await producer.start()
    try:
        for event in events:
            await producer.send(topics.received, event.to_json(), key=event.iban.encode())
        for raw in MALFORMED:
            await producer.send(topics.received, raw, key=b"")
        await producer.send(topics.received, _bad_iban(events[0].to_json()), key=b"FR00")
        await producer.flush()
    finally:
        await producer.stop()
    ids = {event.statement_id for event in events}
    print_line("")
    print_line(f"fed {len(events)} statements from {', '.join(SAMPLE_FILES)} "
               f"and {len(MALFORMED) + 1} malformed events")

    def all_routed(seen: dict[str, list[dict[str, Any]]]) -> bool:
        routed = {e.get("statement_id") for topic, es in seen.items() for e in es
                  if topic != topics.invalid}
        return ids <= routed and len(seen.get(topics.invalid, [])) >= len(MALFORMED) + 1

    seen = await _wait_until(all_routed, bootstrap, outputs, stop)
    _report(seen, outputs, topics, print_line)

    print_line("")
    print_line(
        f"the bank approves the mandate of {mask_iban(PENDING)}: its held statements are released"
    )
    await store.set_mandate(PENDING, MandateStatus.APPROVED)
    pending_ids = {e.statement_id for e in events if e.iban == PENDING}

    def released(seen: dict[str, list[dict[str, Any]]]) -> bool:
        delivered = {e.get("statement_id") for e in seen.get(topics.partner("acd"), [])}
        return pending_ids <= delivered

    seen = await _wait_until(released, bootstrap, outputs, stop)
    for routed in seen.get(topics.partner("acd"), []):
        if routed.get("statement_id") in pending_ids:
            version = routed["routing"]["state_version"]
            print_line(f"  {routed['statement_id']:<40} {mask_iban(routed['iban'])}  "
                       f"-> partner acd (released; state v{version})")

    if deliveries is not None:
        expected = {c: len(seen.get(topics.partner(c), [])) for c in connector_ids}
        expected = {c: n for c, n in expected.items() if n}
        done: dict[str, int] = {}
        for _ in range(100):
            done = deliveries()
            if all(done.get(c, 0) >= n for c, n in expected.items()) or stop.is_set():
                break
            await asyncio.sleep(0.2)
        print_line("")
        for connector_id, count in expected.items():
            print_line(f"partner {connector_id}: {done.get(connector_id, 0)}/{count} statements "
                       "delivered (idempotency key = statement id)")

    if api_url is not None and download_dir is not None:
        print_line("")
        unbound = sum(1 for e in events if e.iban in UNBOUND_IBANS)
        await download_global_file(
            api_url, seed.collaborator_token, seed.cabinet_id, unbound, download_dir,
            print_line, stop,
        )


def _bad_iban(valid: bytes) -> bytes:
    """A well-formed statement whose IBAN fails its check digits."""
    document = json.loads(valid)
    document["statement_id"] = "demo-bad-iban"
    document["iban"] = document["iban"][:2] + "00" + document["iban"][4:]
    return json.dumps(document).encode()


def _report(
    seen: dict[str, list[dict[str, Any]]],
    outputs: dict[str, str],
    topics: Topics,
    print_line: Callable[[str], None],
) -> None:
    print_line("")
    print_line("where each statement went, and why:")
    for topic, label in outputs.items():
        for event in seen.get(topic, []):
            if topic == topics.invalid:
                name = event.get("statement_id") or "(unreadable)"
                print_line(f"  {name:<40} {'':<34} -> invalid: {event.get('reason')}")
                continue
            iban = event["iban"]
            routing = event["routing"]
            failed = [c["name"] for c in routing["checks"] if not c["ok"]]
            if topic == topics.global_file:
                # Not a failure: an IBAN bound to no connector goes to the global file.
                why = f"{routing['reason']} (no connector bound: the normal path)"
            else:
                why = routing["reason"] + (f" (failed: {', '.join(failed)})" if failed else "")
            print_line(f"  {event['statement_id']:<40} {mask_iban(iban):<34} -> {label}: "
                       f"{why}  [{CASES.get(iban, '')}]")


async def download_global_file(
    api_url: str,
    token: str,
    cabinet_id: str,
    expected: int,
    directory: Path,
    print_line: Callable[[str], None],
    stop: asyncio.Event,
) -> Path | None:
    """Download the cabinet's global file through the API, as the « Relevés » page does."""
    url = f"{api_url}/cabinets/{cabinet_id}/global-file"
    params = {"from": "2000-01-01", "to": "2099-12-31"}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(100):  # the builder stores what the router sent, within moments
            response = await client.get(url, params=params, headers=headers)
            count = int(response.headers.get("X-Statement-Count", "0"))
            if response.status_code != 200 or count >= expected or stop.is_set():
                break
            await asyncio.sleep(0.3)
    if response.status_code != 200:
        print_line(f"global file download failed: {response.status_code} {response.text}")
        return None
    disposition = response.headers.get("Content-Disposition", "")
    name = disposition.split("filename=")[-1].strip('"') or "global-file.bin"
    path = directory / name
    path.write_bytes(response.content)
    print_line(
        f"downloaded the global file of {cabinet_id} (GET /cabinets/{cabinet_id}/global-file): "
        f"{count} statements, {len(response.content)} bytes -> {path}"
    )
    return path
