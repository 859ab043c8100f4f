"""RouterCore through the Stepper, driven with in-memory fakes: no faust, no broker.

Every decision path of DESIGN §3/§4 is covered: partner, global file, held (unknown IBAN,
pending/rejected mandate, connector not on the cabinet, connector not in the catalogue),
invalid (each kind of bad input with its reason, the size limit), the repartition step,
the Table's version ordering and tombstones, and the release of held statements in
order. Records go through :class:`~routing.router.step.Stepper` over ``DictTables`` and
``MemorySink``, as the batch pump sends them. Every produced value is validated against
the contract's pydantic models.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from config.catalogue import default_catalogue
from events.limits import MAX_RECORD_BYTES, MAX_STATEMENT_BYTES
from events.schemas import (
    StatementGlobalFile,
    StatementHeld,
    StatementInvalid,
    StatementPartnerDelivery,
)
from events.topics import Topics
from routing.broker.partitioner import default_partition
from routing.router.core import Record, RouterCore
from routing.router.emit import Out
from routing.router.sink import MemorySink
from routing.router.step import Stepper
from tests.eventually import eventually
from tests.unit.router.dict_tables import DictTables
from tests.unit.router.factories import (
    BAD_IBAN,
    IBAN_A,
    IBAN_B,
    state,
    statement,
    statement_doc,
)

TOPICS = Topics("unit", 3)
P = default_partition(IBAN_A.encode(), TOPICS.partitions)  # IBAN_A's partition (2)


@dataclass
class FakeRouter:
    """What the tests touch of a router: its core, Tables and step runner."""

    core: RouterCore
    tables: DictTables
    stepper: Stepper
    sink: MemorySink

    async def run_step(self, step: Any) -> None:
        await self.stepper.run_step(step)


@dataclass
class Harness:
    router: FakeRouter
    sink: MemorySink
    offsets: Counter[tuple[str, int]] = field(default_factory=Counter)

    async def _put(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int
    ) -> None:
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        record = Record(topic, partition, offset, key, value)
        core = self.router.core
        handler = core.on_state if topic == TOPICS.iban_state else core.on_statement
        await self.router.run_step(lambda now: handler(record, now))

    async def put_state(self, value: bytes | None, *, key: bytes | None, partition: int) -> None:
        await self._put(TOPICS.iban_state, value, key, partition)

    async def state(self, iban: str, partition: int = P, **kwargs: Any) -> None:
        await self.put_state(state(iban, **kwargs), key=iban.encode(), partition=partition)

    async def tombstone(self, iban: str, partition: int = P) -> None:
        await self.put_state(None, key=iban.encode(), partition=partition)

    async def statement(
        self, sid: str, iban: str = IBAN_A, *, key: bytes | None = None,
        partition: int | None = None,
    ) -> None:
        await self.put_raw(statement(sid, iban), key=iban.encode() if key is None else key,
                           partition=partition)

    async def put_raw(
        self, value: bytes | None, *, key: bytes | None, partition: int | None = None
    ) -> None:
        """A record on ``partition``; by default its key's (murmur2) partition, else P."""
        if partition is None:
            partition = default_partition(key, TOPICS.partitions) if key else P
        await self._put(TOPICS.received, value, key, partition)

    def on(self, topic: str) -> list[Out]:
        return self.sink.on(topic)

    def ids(self, topic: str) -> list[str]:
        return [json.loads(o.value)["statement_id"] for o in self.on(topic)]


def make_router(sink: MemorySink) -> FakeRouter:
    tables = DictTables("unit-router")
    core = RouterCore(topics=TOPICS, catalogue=default_catalogue(), tables=tables)
    router = FakeRouter(core, tables, Stepper(tables, lambda: router.sink), sink)
    return router


@pytest.fixture
def h() -> Harness:
    sink = MemorySink()
    return Harness(make_router(sink), sink)


# --- routed ---------------------------------------------------------------------------


async def test_bound_iban_goes_to_its_partner(h: Harness) -> None:
    await h.state(IBAN_A, connector_id="acd", version=3)
    await h.statement("s1")
    out = h.on(TOPICS.partner("acd"))
    assert len(out) == 1 and out[0].key == IBAN_A.encode()
    event = StatementPartnerDelivery.model_validate_json(out[0].value)
    assert event.statement_id == "s1" and event.connector_id == "acd"
    assert event.cabinet_id == "cab-1" and event.client_ref == "client-1"
    assert event.routing.destination == "partner" and event.routing.reason == "bound"
    assert event.routing.state_version == 3
    assert [(c.name, c.ok) for c in event.routing.checks] == [
        ("connector_on_cabinet", True),
        ("iban_bound", True),
        ("mandate_approved", True),
        ("connector_configured", True),
    ]
    assert h.on(TOPICS.global_file) == [] and h.on(TOPICS.held) == []
    assert not event.released_from_held and "released_from_held" not in json.loads(out[0].value)
    # No outcome record: the ledger derives "routed" from this event (issue 18).
    assert h.on(TOPICS.outcomes) == []


async def test_unbound_iban_goes_to_the_cabinet_global_file(h: Harness) -> None:
    await h.state(IBAN_A, connector_id=None, cabinet_id="cab-9")
    await h.statement("s1")
    out = h.on(TOPICS.global_file)
    assert len(out) == 1 and out[0].key == b"cab-9"
    event = StatementGlobalFile.model_validate_json(out[0].value)
    assert event.routing.reason == "unbound" and event.cabinet_id == "cab-9"
    assert h.on(TOPICS.partner("acd")) == []


async def test_the_routed_event_carries_the_statement_fields_unchanged(h: Harness) -> None:
    await h.state(IBAN_A, connector_id="cegid")
    await h.statement("s1")
    sent = json.loads(h.on(TOPICS.partner("cegid"))[0].value)
    original = statement_doc("s1", IBAN_A)
    for name in ("statement_id", "iban", "format", "period_start", "period_end",
                 "content_b64", "source", "content_sha256"):
        assert sent[name] == original[name]
    assert sent["schema"] == "statement.partner-delivery/v1"


# --- held -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state_kwargs", "reason"),
    [
        (None, "unknown_iban"),
        ({"mandate_status": "pending", "connector_id": "acd"}, "mandate_pending"),
        ({"mandate_status": "rejected"}, "mandate_rejected"),
        ({"mandate_status": "revoked", "connector_id": "acd"}, "mandate_revoked"),
        ({"connector_id": "acd", "connector_on_cabinet": False}, "connector_not_on_cabinet"),
    ],
)
async def test_statements_are_held_with_the_reason(
    h: Harness, state_kwargs: dict[str, Any] | None, reason: str
) -> None:
    if state_kwargs is not None:
        await h.state(IBAN_A, **state_kwargs)
    await h.statement("s1")
    out = h.on(TOPICS.held)
    assert len(out) == 1 and out[0].key == IBAN_A.encode()
    event = StatementHeld.model_validate_json(out[0].value)
    assert event.routing.destination == "held" and event.routing.reason == reason
    assert event.statement_id == "s1"
    held = h.router.tables.get_held(IBAN_A)
    assert held is not None and [json.loads(e["raw"])["statement_id"] for e in held] == ["s1"]
    assert h.on(TOPICS.outcomes) == []
    # The IBAN's connector when the reason is about it, for the ledger's "held" entry.
    expected = "acd" if reason == "connector_not_on_cabinet" else None
    assert event.connector_id == expected


async def test_a_connector_missing_from_the_catalogue_holds_rather_than_drops(
    h: Harness,
) -> None:
    await h.state(IBAN_A, connector_id="sage")  # a valid id, but not configured here
    await h.statement("s1")
    event = StatementHeld.model_validate_json(h.on(TOPICS.held)[0].value)
    assert event.routing.reason == "connector_not_in_catalogue"
    assert not [o for o in h.sink.records if o.topic.startswith(TOPICS.partner(""))]


# --- invalid --------------------------------------------------------------------------


def invalid_reason(h: Harness) -> tuple[str, StatementInvalid]:
    out = h.on(TOPICS.invalid)
    assert len(out) == 1, h.sink.records
    event = StatementInvalid.model_validate_json(out[0].value)
    return event.reason, event


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\xff\xfe garbage", "value is not UTF-8"),
        (b"not json at all", "value is not JSON"),
        (b"[1, 2]", "value is not a JSON object"),
        (b"{}", "missing `schema` field"),
        (json.dumps({**statement_doc("s1", IBAN_A), "schema": "statement.received/v9"}).encode(),
         "unknown schema 'statement.received/v9'"),
        (json.dumps({**statement_doc("s1", IBAN_A), "schema": "iban.state/v1"}).encode(),
         "schema 'iban.state/v1' is not accepted on statements.received"),
        (json.dumps({k: v for k, v in statement_doc("s1", IBAN_A).items() if k != "schema"})
         .encode(), "missing `schema` field"),
        (statement("s1", BAD_IBAN), "field `iban`: IBAN FR76 **** **** **** **** ***0 188 is "
         "invalid"),
        (statement("s1", IBAN_A, content_sha256="0" * 64),
         "content_sha256 does not match the decoded content_b64"),
        (statement("s1", IBAN_A, format="pdf"), "field `format`"),
        (statement("s1", IBAN_A, period_start="2026-02-01"), "period_end 2026-01-01 is before"),
        (None, "null value (tombstone)"),
    ],
)
async def test_invalid_input_goes_to_statements_invalid_with_a_precise_reason(
    h: Harness, value: bytes | None, expected: str
) -> None:
    await h.state(IBAN_A, connector_id="acd")
    await h.put_raw(value, key=IBAN_A.encode())
    reason, event = invalid_reason(h)
    assert expected in reason
    assert base64.b64decode(event.raw_b64) == (value or b"")
    assert event.raw_key == IBAN_A
    assert event.source_topic == TOPICS.received and event.source_partition == P
    assert event.source_offset is not None and event.detected_by == "router"
    assert h.on(TOPICS.invalid)[0].key == IBAN_A.encode()
    assert h.on(TOPICS.partner("acd")) == [] and h.on(TOPICS.held) == []


async def test_a_statement_keyed_by_anything_but_its_iban_is_invalid(h: Harness) -> None:
    await h.state(IBAN_A, connector_id="acd")
    await h.statement("s1", key=b"not-the-iban")
    reason, event = invalid_reason(h)
    assert "must be keyed by the normalised IBAN" in reason
    assert event.statement_id == "s1" and event.raw_key == "not-the-iban"


async def test_a_statement_without_key_is_invalid_with_an_empty_key(h: Harness) -> None:
    await h.put_raw(statement("s1", IBAN_A), key=None)
    reason, event = invalid_reason(h)
    assert "no key" in reason and event.raw_key is None
    assert h.on(TOPICS.invalid)[0].key == b""


async def test_a_key_that_is_not_utf8_is_reported_as_such_not_as_no_key(h: Harness) -> None:
    await h.put_raw(statement("s1", IBAN_A), key=b"\xc3\x28")
    reason, event = invalid_reason(h)
    assert reason == (
        "the record's key is not the statement's normalised IBAN "
        "FR76 **** **** **** **** ***0 189 (a key that is not UTF-8 (invalid continuation "
        "byte at byte 0; kept as base64 in raw_key)): statements.received must be keyed by "
        "the normalised IBAN (it decides the partition, and the IBAN state is co-partitioned)"
    )
    assert event.raw_key == "base64:wyg=" and event.statement_id == "s1"


async def test_an_iban_state_with_a_key_that_is_not_utf8_says_so(h: Harness) -> None:
    await h.put_state(state(IBAN_A), key=b"\xff", partition=P)
    reason, _ = invalid_reason(h)
    assert reason == (
        "iban.state record with a key that is not UTF-8 (invalid start byte at byte 0; kept "
        "as base64 in raw_key): the key must be the IBAN"
    )


async def test_a_deeply_nested_value_is_not_json_not_an_internal_error(h: Harness) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    await h.put_raw(deep, key=IBAN_A.encode())
    reason, _ = invalid_reason(h)
    assert reason.startswith("value is not JSON this system reads: nested too deeply")
    assert h.router.core.stats["errors"] == 0


async def test_a_record_over_the_size_limit_is_invalid_with_its_size_and_not_copied(
    h: Harness,
) -> None:
    await h.state(IBAN_A, connector_id="acd")
    big = statement("big", IBAN_A, content=b"x" * 1_200_000)
    await h.put_raw(big, key=IBAN_A.encode())
    reason, event = invalid_reason(h)
    assert reason.startswith(
        f"statement record of {len(big)} bytes is over the limit of {MAX_RECORD_BYTES} bytes "
        "for a statements.received record (a statement of at most 1048576 bytes of content"
    )
    assert f"read it at {TOPICS.received} partition {P} offset" in reason
    assert event.raw_b64 == "" and event.source_offset is not None
    assert event.payload_omitted and event.payload_bytes == len(big)
    assert event.statement_id == "big"  # found without parsing the value
    assert len(h.on(TOPICS.invalid)[0].value or b"") < 2_000
    assert h.on(TOPICS.partner("acd")) == []


async def test_a_statement_at_the_size_limit_is_routed_and_one_byte_over_is_invalid(
    h: Harness,
) -> None:
    await h.state(IBAN_A, connector_id="acd")
    at_limit = statement("s1", IBAN_A, content=b"x" * MAX_STATEMENT_BYTES)
    await h.put_raw(at_limit, key=IBAN_A.encode())
    assert h.ids(TOPICS.partner("acd")) == ["s1"]
    [routed] = h.on(TOPICS.partner("acd"))
    assert len(routed.value or b"") <= MAX_RECORD_BYTES

    over = statement("s2", IBAN_A, content=b"x" * (MAX_STATEMENT_BYTES + 1))
    assert len(over) <= MAX_RECORD_BYTES  # refused for its content, not its record size
    await h.put_raw(over, key=IBAN_A.encode())
    assert h.ids(TOPICS.partner("acd")) == ["s1"]
    reason, event = invalid_reason(h)
    assert reason.startswith(
        f"statement of {MAX_STATEMENT_BYTES + 1} bytes of content is over the limit of "
        f"{MAX_STATEMENT_BYTES} bytes (MAX_STATEMENT_BYTES)"
    )
    assert event.statement_id == "s2" and event.payload_omitted


async def test_the_setting_lowers_the_limit(h: Harness) -> None:
    await h.state(IBAN_A, connector_id="acd")
    h.router.core.max_statement_bytes = 10
    await h.put_raw(statement("s1", IBAN_A, content=b"x" * 10), key=IBAN_A.encode())
    await h.put_raw(statement("s2", IBAN_A, content=b"x" * 11), key=IBAN_A.encode())
    assert h.ids(TOPICS.partner("acd")) == ["s1"]
    reason, event = invalid_reason(h)
    assert reason == (
        "statement of 11 bytes of content is over the limit of 10 bytes (MAX_STATEMENT_BYTES)"
    )
    assert not event.payload_omitted and base64.b64decode(event.raw_b64) == statement(
        "s2", IBAN_A, content=b"x" * 11
    )


async def test_a_statement_held_at_the_limit_is_released_whole(h: Harness) -> None:
    at_limit = statement("s1", IBAN_A, content=b"y" * MAX_STATEMENT_BYTES)
    await h.put_raw(at_limit, key=IBAN_A.encode())  # unknown IBAN: held
    assert h.ids(TOPICS.held) == ["s1"]
    held = [r for r in h.sink.records if r.topic == h.router.tables.held_changelog_topic]
    assert len(held) == 1 and len(held[0].value or b"") <= MAX_RECORD_BYTES
    await h.state(IBAN_A, connector_id="acd")
    [released] = h.on(TOPICS.partner("acd"))
    event = StatementPartnerDelivery.model_validate_json(released.value or b"")
    assert base64.b64decode(event.content_b64) == b"y" * MAX_STATEMENT_BYTES


async def test_unknown_fields_of_a_held_statement_are_not_kept(h: Harness) -> None:
    """A producer may add fields (readers ignore them); the held entry keeps the contract's
    only, so a record within the size rule cannot make a larger changelog record."""
    doc = {**statement_doc("s1", IBAN_A), "note": '"\\' * 100_000}
    await h.put_raw(json.dumps(doc).encode(), key=IBAN_A.encode())
    held = [r for r in h.sink.records if r.topic == h.router.tables.held_changelog_topic]
    assert len(held[0].value or b"") < 2_000


async def test_a_routed_record_over_the_size_rule_goes_to_invalid_not_to_the_broker(
    h: Harness,
) -> None:
    """The envelope comes from iban.state, which anyone may publish: a 100 KB client_ref
    would make the partner delivery of a statement at the limit too large to send."""
    await h.state(IBAN_A, connector_id="acd", client_ref="c" * 100_000)
    await h.put_raw(
        statement("s1", IBAN_A, content=b"x" * MAX_STATEMENT_BYTES), key=IBAN_A.encode()
    )
    assert h.on(TOPICS.partner("acd")) == []
    reason, event = invalid_reason(h)
    assert reason.startswith("the partner record built for this statement would be ")
    assert f"over the limit of {MAX_RECORD_BYTES} bytes for any record" in reason
    assert event.statement_id == "s1" and event.payload_omitted
    await h.statement("s2")  # a small one still fits: the router goes on
    assert h.ids(TOPICS.partner("acd")) == ["s2"]


async def test_a_released_statement_too_large_to_route_does_not_lose_the_others(
    h: Harness,
) -> None:
    await h.put_raw(
        statement("big", IBAN_A, content=b"x" * MAX_STATEMENT_BYTES), key=IBAN_A.encode()
    )
    await h.statement("small")
    assert h.ids(TOPICS.held) == ["big", "small"]
    await h.state(IBAN_A, connector_id="acd", client_ref="c" * 100_000)
    assert h.ids(TOPICS.partner("acd")) == ["small"]
    reason, event = invalid_reason(h)
    assert reason.startswith("held statement: the partner record built for this statement")
    assert event.statement_id == "big" and event.source_topic == TOPICS.received
    assert h.router.tables.get_held(IBAN_A) is None


async def test_a_large_malformed_record_is_referred_with_a_short_reason(h: Harness) -> None:
    """0.9 MB whose `schema` is a long string of backslashes: quoted whole, its reason
    alone would have been 1.8 MB of JSON."""
    hostile = b'{"schema":"' + b"\\\\" * 450_000 + b'"}'
    await h.put_raw(hostile, key=IBAN_A.encode())
    reason, event = invalid_reason(h)
    assert reason.startswith("unknown schema '")
    assert "characters) (expected 'statement.received/v1')" in reason
    assert event.payload_omitted and event.payload_bytes == len(hostile)
    assert len(h.on(TOPICS.invalid)[0].value or b"") < 2_000


async def test_an_oversized_key_is_not_copied(h: Harness) -> None:
    await h.put_raw(b"junk", key=b"k" * 600_000)
    out = h.on(TOPICS.invalid)
    assert len(out) == 1 and out[0].key == b""
    event = StatementInvalid.model_validate_json(out[0].value or b"")
    assert event.key_omitted and event.raw_key is None
    assert "(the key, 600000 bytes, is not copied here)" in event.reason
    assert len(out[0].value or b"") < 2_000


async def test_the_stream_goes_on_after_invalid_input(h: Harness) -> None:
    await h.state(IBAN_A, connector_id="acd")
    await h.put_raw(b"garbage", key=IBAN_A.encode())
    await h.statement("s2")
    assert len(h.on(TOPICS.invalid)) == 1
    assert h.ids(TOPICS.partner("acd")) == ["s2"]


async def test_an_invalid_iban_state_goes_to_statements_invalid(h: Harness) -> None:
    await h.put_state(b"{oops", key=IBAN_A.encode(), partition=P)
    await h.put_state(state(IBAN_B), key=IBAN_A.encode(), partition=P)
    out = [StatementInvalid.model_validate_json(o.value) for o in h.on(TOPICS.invalid)]
    assert [o.source_topic for o in out] == [TOPICS.iban_state] * 2
    assert "value is not JSON" in out[0].reason
    assert "is not the snapshot's normalised IBAN" in out[1].reason
    assert h.router.tables.get_state(IBAN_A) is None


# --- the state Table ------------------------------------------------------------------


async def test_older_or_equal_state_versions_are_ignored(h: Harness) -> None:
    await h.state(IBAN_A, version=5, connector_id="acd")
    await h.state(IBAN_A, version=4, connector_id=None)
    await h.state(IBAN_A, version=5, connector_id="cegid")
    await h.statement("s1")
    assert h.ids(TOPICS.partner("acd")) == ["s1"]
    assert h.router.core.stats["states_stale"] == 2
    await h.state(IBAN_A, version=6, connector_id="cegid")
    await h.statement("s2")
    assert h.ids(TOPICS.partner("cegid")) == ["s2"]


async def test_a_tombstone_deletes_the_state(h: Harness) -> None:
    await h.state(IBAN_A, version=5, connector_id="acd")
    await h.tombstone(IBAN_A)
    assert h.router.tables.get_state(IBAN_A) is None
    await h.statement("s1")
    event = StatementHeld.model_validate_json(h.on(TOPICS.held)[0].value)
    assert event.routing.reason == "unknown_iban"


async def test_binding_and_unbinding_move_the_next_statements(h: Harness) -> None:
    await h.state(IBAN_A, version=1, connector_id=None)
    await h.statement("s1")
    await h.state(IBAN_A, version=2, connector_id="quadra")
    await h.statement("s2")
    await h.state(IBAN_A, version=3, connector_id=None)
    await h.statement("s3")
    assert h.ids(TOPICS.global_file) == ["s1", "s3"]
    assert h.ids(TOPICS.partner("quadra")) == ["s2"]


# --- release of held statements --------------------------------------------------------


async def test_approval_releases_held_statements_in_order(h: Harness) -> None:
    await h.state(IBAN_A, version=1, mandate_status="pending", connector_id="acd")
    for sid in ("s1", "s2", "s3"):
        await h.statement(sid)
    assert h.ids(TOPICS.held) == ["s1", "s2", "s3"]
    assert h.ids(TOPICS.partner("acd")) == []
    await h.state(IBAN_A, version=2, mandate_status="approved", connector_id="acd")
    assert h.ids(TOPICS.partner("acd")) == ["s1", "s2", "s3"]
    assert h.router.tables.get_held(IBAN_A) is None
    released = StatementPartnerDelivery.model_validate_json(h.on(TOPICS.partner("acd"))[0].value)
    assert released.routing.state_version == 2 and released.routing.reason == "bound"
    assert released.released_from_held
    await h.statement("s4")
    assert h.ids(TOPICS.partner("acd")) == ["s1", "s2", "s3", "s4"]
    assert h.router.core.stats["released"] == 3


async def test_unknown_iban_statements_are_released_when_the_state_arrives(h: Harness) -> None:
    await h.statement("s1")
    await h.statement("s2")
    await h.state(IBAN_A, version=1, connector_id=None)
    assert h.ids(TOPICS.global_file) == ["s1", "s2"]


async def test_a_state_that_still_holds_keeps_them_held(h: Harness) -> None:
    await h.state(IBAN_A, version=1, mandate_status="pending")
    await h.statement("s1")
    await h.state(IBAN_A, version=2, mandate_status="rejected")
    assert h.ids(TOPICS.global_file) == [] and h.ids(TOPICS.held) == ["s1"]
    held = h.router.tables.get_held(IBAN_A)
    assert held is not None and len(held) == 1


async def test_a_new_statement_never_overtakes_held_ones(h: Harness) -> None:
    # While the IBAN is not routable, new statements queue behind the held ones.
    await h.state(IBAN_A, version=1, mandate_status="pending", connector_id="acd")
    await h.statement("s1")
    await h.statement("s2")
    held = h.router.tables.get_held(IBAN_A)
    assert held is not None and [json.loads(e["raw"])["statement_id"] for e in held] == [
        "s1",
        "s2",
    ]
    # A release that was missed (here: the Table is made routable behind the router's
    # back, as after a catalogue change): the next statement releases the held ones first
    # and is routed after them, never ahead. (A newer version: the router's state cache
    # is keyed by version, and a state never changes without one.)
    value = dict(h.router.tables.get_state(IBAN_A) or {})
    value["mandate_status"] = "approved"
    value["version"] = 2
    h.router.tables.put_state(IBAN_A, value, P)
    await h.statement("s3")
    assert h.ids(TOPICS.partner("acd")) == ["s1", "s2", "s3"]
    assert h.router.tables.get_held(IBAN_A) is None


async def test_other_ibans_are_not_blocked_by_held_ones(h: Harness) -> None:
    await h.state(IBAN_A, version=1, mandate_status="pending")
    await h.state(IBAN_B, version=1, connector_id="acd", partition=1)
    await h.statement("a1")
    await h.statement("b1", IBAN_B)
    assert h.ids(TOPICS.held) == ["a1"] and h.ids(TOPICS.partner("acd")) == ["b1"]


async def test_a_redelivered_held_statement_is_not_held_twice(h: Harness) -> None:
    await h.state(IBAN_A, version=1, mandate_status="pending", connector_id="acd")
    await h.statement("s1")
    held = h.router.tables.get_held(IBAN_A)
    assert held is not None
    offset = held[0]["offset"]
    # Replay the same record (same partition and offset), as after a crash.
    from routing.router.core import Record

    outs = h.router.core.on_statement(
        Record(TOPICS.received, P, offset, IBAN_A.encode(), statement("s1", IBAN_A)), "now"
    )
    assert [o.topic for o in outs] == [TOPICS.held]
    assert h.router.tables.take_changelog() == []  # not held a second time
    assert len(h.router.tables.get_held(IBAN_A) or []) == 1
    await h.state(IBAN_A, version=2, connector_id="acd")
    assert h.ids(TOPICS.partner("acd")) == ["s1"]


async def test_a_catalogue_connector_releases_on_the_sweep(h: Harness) -> None:
    await h.state(IBAN_A, version=1, connector_id="sage")
    await h.statement("s1")
    assert h.router.tables.get_held(IBAN_A) is not None
    # The catalogue is process configuration: it changes with a restart, which starts
    # with an empty decision cache.
    h.router.core.catalogue = frozenset({*h.router.core.catalogue, "sage"})
    h.router.core.forget_cached_states()
    outs = h.router.core.sweep({P}, "2026-01-01T00:00:00+00:00")
    assert [o.topic for o in outs] == [TOPICS.partner("sage")]
    assert StatementPartnerDelivery.model_validate_json(outs[0].value or b"").released_from_held
    assert h.router.tables.get_held(IBAN_A) is None


# --- durability order -----------------------------------------------------------------


class GatedSink(MemorySink):
    """A sink whose sends are acknowledged only when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send_many(self, outs: Sequence[Out]) -> list[asyncio.Future[Any]]:
        acks = await super().send_many(outs)
        if self.gate.done():
            return acks
        return [asyncio.ensure_future(self._after_gate(ack)) for ack in acks]

    async def _after_gate(self, ack: asyncio.Future[Any]) -> Any:
        await self.gate
        return ack.result()


async def test_a_release_deletes_the_held_entry_only_once_the_released_are_acked(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the held entry's tombstone durable before the released statements, a crash in
    # between would lose them: after a restart nothing is held any more and the state
    # replays as stale. So the changelog records are sent only once the outputs are acked.
    await h.state(IBAN_A, version=1, mandate_status="pending", connector_id="acd")
    await h.statement("s1")
    gated = GatedSink()
    monkeypatch.setattr(h.router, "sink", gated)
    from routing.router.core import Record

    record = Record(
        TOPICS.iban_state, P, 7, IBAN_A.encode(), state(IBAN_A, version=2, connector_id="acd")
    )
    step = asyncio.create_task(h.router.run_step(lambda now: h.router.core.on_state(record, now)))
    released = await eventually(lambda: gated.on(TOPICS.partner("acd")), "the released statement")
    assert len(released) == 1 and released[0].value is not None
    assert json.loads(released[0].value)["statement_id"] == "s1"
    changelogs = [o for o in gated.records if o.topic.endswith("-changelog")]
    assert changelogs == [] and not step.done()  # nothing written to the changelogs yet
    gated.gate.set_result(None)
    await step
    sent = [o for o in gated.records if o.topic.endswith("-changelog")]
    assert [(o.topic.endswith("-held-changelog"), o.value) for o in sent][-1] == (True, None)


async def test_a_step_that_only_writes_sends_outputs_and_changelog_in_one_round(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Holding a statement writes the held Table; no tombstone, so nothing needs ordering
    # and the step does not wait for its outputs before issuing the changelog record.
    # It still returns (letting the input be committed) only once both are acknowledged.
    await h.state(IBAN_A, version=1, mandate_status="pending", connector_id="acd")
    gated = GatedSink()
    monkeypatch.setattr(h.router, "sink", gated)
    from routing.router.core import Record

    record = Record(TOPICS.received, P, 3, IBAN_A.encode(), statement("s1", IBAN_A))
    step = asyncio.create_task(
        h.router.run_step(lambda now: h.router.core.on_statement(record, now))
    )
    await eventually(lambda: len(gated.records) >= 2, "the held output and changelog record")
    topics = [o.topic for o in gated.records]
    assert topics[:1] == [TOPICS.held]
    assert topics[1].endswith("-held-changelog") and gated.records[1].value is not None
    assert not step.done()  # nothing acknowledged yet: the input must not be committed
    gated.gate.set_result(None)
    await step


# --- the repartition step ---------------------------------------------------------------


async def test_a_statement_off_its_keys_partition_is_forwarded_unchanged(h: Harness) -> None:
    await h.state(IBAN_A, connector_id="acd")
    value = statement("s1", IBAN_A)
    elsewhere = (P + 1) % TOPICS.partitions  # where a CRC32 partitioner may put it
    h.sink.clear()
    await h.put_raw(value, key=IBAN_A.encode(), partition=elsewhere)
    assert h.sink.records == [Out(TOPICS.received, IBAN_A.encode(), value, P)]
    assert h.router.core.stats["forwarded"] == 1
    # Read again from the right partition, it is routed there.
    await h.put_raw(value, key=IBAN_A.encode(), partition=P)
    assert h.ids(TOPICS.partner("acd")) == ["s1"]


async def test_a_record_without_key_is_not_forwarded_but_refused(h: Harness) -> None:
    await h.put_raw(statement("s1", IBAN_A), key=None, partition=0)
    reason, _ = invalid_reason(h)
    assert reason.startswith(
        "the record's key is not the statement's normalised IBAN FR76 **** **** **** **** "
        "***0 189 (no key)"
    )
    assert h.router.core.stats["forwarded"] == 0
