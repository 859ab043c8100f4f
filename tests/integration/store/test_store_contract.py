"""Contract of the SQL state store, on SQLite and on the real PostgreSQL.

Every test taking ``store`` (or ``database_url``) runs once per backend: the FAQ rules with
their exact refusals, the outbox (one row per effective change, none for no-ops), the
migrations against ``tables.py``, the relay lock, and the connector-removal/binding race.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from events.schemas import IbanStateEvent
from routing.domain import rules
from routing.domain.errors import (
    AlreadyExists,
    AuthenticationFailed,
    ConnectorNotOnCabinet,
    ConnectorStillBound,
    InvalidIban,
    OtherCabinet,
    ProfileNotAllowed,
    UnknownCabinet,
    UnknownConnector,
    UnknownIban,
)
from routing.domain.iban import iban_from_rib
from routing.domain.model import Actor, IbanState, MandateStatus, Profile
from routing.ports import OutboxMessage
from routing.store.engine import create_store_engine
from routing.store.errors import SchemaNotReady, StoreUnavailable
from routing.store.migrate import current_revision, head_revision, upgrade
from routing.store.sql import SqlStateStore
from routing.store.tables import metadata, outbox, users
from tests.fixtures.databases import MakeStore


def iban(n: int) -> str:
    """A valid French IBAN, distinct for each n."""
    return iban_from_rib("30006", "00001", f"{n:011d}")


IBAN_1, IBAN_2, IBAN_3, IBAN_4 = (iban(n) for n in (1, 2, 3, 4))
IBAN_B = iban(99)  # in cabinet B


@dataclass
class Seed:
    admin: Actor
    superviseur: Actor
    collaborateur: Actor
    admin_b: Actor
    tokens: dict[str, str]


async def seed(store: SqlStateStore) -> Seed:
    """Cabinets cab-a and cab-b, one user per profile in cab-a, an administrateur in cab-b,
    IBAN_1..IBAN_3 in cab-a and IBAN_B in cab-b, all unbound and pending."""
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    tokens: dict[str, str] = {}
    actors: dict[str, Actor] = {}
    for key, cabinet, profile in (
        ("admin", "cab-a", Profile.ADMINISTRATEUR),
        ("superviseur", "cab-a", Profile.SUPERVISEUR),
        ("collaborateur", "cab-a", Profile.COLLABORATEUR),
        ("admin_b", "cab-b", Profile.ADMINISTRATEUR),
    ):
        created = await store.create_user(cabinet, profile, name=key)
        tokens[key] = created.token
        actors[key] = await store.authenticate(created.token)
    for number in (1, 2, 3):
        await store.add_iban(iban(number), "cab-a", f"client-{number}")
    await store.add_iban(IBAN_B, "cab-b", None)
    return Seed(tokens=tokens, **actors)


async def pending(store: SqlStateStore, key: str | None = None) -> list[OutboxMessage]:
    rows = list(await store.pending_outbox(10_000))
    return [row for row in rows if key is None or row.key == key]


async def drain(store: SqlStateStore) -> None:
    await store.mark_published([row.id for row in await store.pending_outbox(10_000)])


def event(state: IbanState) -> dict[str, Any]:
    return IbanStateEvent.from_domain(state).model_dump(mode="json", by_alias=True)


# --- identity: cabinets, users, tokens --------------------------------------------------


async def test_users_authenticate_with_their_token_as_the_right_actor(
    store: SqlStateStore,
) -> None:
    s = await seed(store)
    assert s.collaborateur.cabinet_id == "cab-a"
    assert s.collaborateur.profile is Profile.COLLABORATEUR
    assert s.admin_b == Actor(s.admin_b.user_id, "cab-b", Profile.ADMINISTRATEUR)
    assert len({a.user_id for a in (s.admin, s.superviseur, s.collaborateur, s.admin_b)}) == 4


async def test_tokens_are_stored_only_as_their_sha256(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    created = await store.create_user("cab-a", Profile.SUPERVISEUR, name="Sophie")
    assert created.token.startswith("srt_")
    assert len(created.token) == 4 + 43  # token_urlsafe(32)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(users))).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["token_hash"] == hashlib.sha256(created.token.encode()).hexdigest()
    assert all(created.token not in str(value) for value in row.values())
    assert row["id"] == created.user_id
    assert row["profile"] == "superviseur"
    assert row["name"] == "Sophie"
    assert row["created_at"].tzinfo is UTC


async def test_two_users_never_share_a_token(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    tokens = {(await store.create_user("cab-a", Profile.COLLABORATEUR)).token for _ in range(5)}
    assert len(tokens) == 5


@pytest.mark.parametrize("token", ["", "srt_unknown", "not-even-a-token"])
async def test_unknown_tokens_fail_authentication(store: SqlStateStore, token: str) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    created = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    with pytest.raises(AuthenticationFailed, match="invalid or unknown token"):
        await store.authenticate(token)
    # A hash of a valid token is not a token either.
    with pytest.raises(AuthenticationFailed):
        await store.authenticate(hashlib.sha256(created.token.encode()).hexdigest())


async def test_create_cabinet_refuses_a_taken_id(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    with pytest.raises(AlreadyExists, match="cabinet cab-a already exists"):
        await store.create_cabinet("cab-a", "Another")


async def test_create_user_needs_an_existing_cabinet(store: SqlStateStore) -> None:
    with pytest.raises(UnknownCabinet, match="cabinet nowhere does not exist"):
        await store.create_user("nowhere", Profile.ADMINISTRATEUR)


# --- IBANs and mandates (back office) ---------------------------------------------------


async def test_add_iban_normalises_and_starts_pending_at_version_1(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    spaced = " ".join(IBAN_1[i : i + 4] for i in range(0, len(IBAN_1), 4)).lower()
    state = await store.add_iban(spaced, "cab-a", "client-1")
    assert state.iban == IBAN_1
    assert state.cabinet_id == "cab-a"
    assert state.client_ref == "client-1"
    assert state.connector_id is None
    assert state.connector_on_cabinet is False  # the cabinet has no connector yet
    assert state.mandate_status is MandateStatus.PENDING
    assert state.version == 1
    assert state.updated_at.tzinfo is UTC
    assert await store.iban_state(spaced) == state


async def test_add_iban_refusals(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    with pytest.raises(UnknownCabinet, match="cabinet nowhere does not exist"):
        await store.add_iban(IBAN_1, "nowhere", None)
    with pytest.raises(InvalidIban):
        await store.add_iban("FR7630006000011234567890180", "cab-a", None)  # bad checksum
    await store.add_iban(IBAN_1, "cab-a", None)
    with pytest.raises(AlreadyExists, match=f"IBAN {IBAN_1} is already registered"):
        await store.add_iban(IBAN_1, "cab-b", None)
    assert len(await pending(store)) == 1


async def test_mandate_changes_bump_the_version_and_no_ops_do_not(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.add_iban(IBAN_1, "cab-a", None)
    approved = await store.set_mandate(IBAN_1, MandateStatus.APPROVED)
    assert (approved.version, approved.active) == (2, True)
    again = await store.set_mandate(IBAN_1, MandateStatus.APPROVED)
    assert again == approved
    revoked = await store.set_mandate(IBAN_1.lower(), MandateStatus.REVOKED)
    assert (revoked.version, revoked.mandate_status) == (3, MandateStatus.REVOKED)
    assert [m.value["version"] for m in await pending(store, IBAN_1) if m.value] == [1, 2, 3]
    with pytest.raises(UnknownIban, match=f"IBAN {IBAN_2} is not registered"):
        await store.set_mandate(IBAN_2, MandateStatus.APPROVED)


async def test_iban_state_is_none_for_an_unknown_iban(store: SqlStateStore) -> None:
    assert await store.iban_state(IBAN_1) is None
    with pytest.raises(InvalidIban):
        await store.iban_state("not an iban")


async def test_timestamps_come_back_utc_aware_whatever_the_clock_zone(
    database_url: str, make_store: MakeStore
) -> None:
    await upgrade(database_url)
    paris = timezone(timedelta(hours=2))
    store = make_store(database_url, clock=lambda: datetime(2025, 6, 2, 9, 30, 0, 123456, paris))
    await store.create_cabinet("cab-a", "Cabinet A")
    state = await store.add_iban(IBAN_1, "cab-a", None)
    expected = datetime(2025, 6, 2, 7, 30, 0, 123456, UTC)
    read = await store.iban_state(IBAN_1)
    assert read is not None
    assert read.updated_at == expected
    assert read.updated_at.tzinfo is UTC
    assert state.updated_at.tzinfo is UTC
    [message] = await pending(store)
    assert message.created_at == expected
    assert message.created_at.tzinfo is UTC
    assert message.value is not None
    assert datetime.fromisoformat(message.value["updated_at"]) == expected


# --- rule 1: adding a connector -----------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "superviseur"])
async def test_rule1_superviseur_or_administrateur_adds_a_connector(
    store: SqlStateStore, who: str
) -> None:
    s = await seed(store)
    actor = getattr(s, who)
    assert await store.add_cabinet_connector(actor, "cab-a", "acd") is True
    assert await store.list_cabinet_connectors(actor, "cab-a") == ["acd"]
    assert await store.list_cabinet_connectors(s.collaborateur, "cab-a") == ["acd"]
    assert await store.list_cabinet_connectors(s.admin_b, "cab-b") == []


async def test_rule1_adding_a_connector_twice_changes_nothing(store: SqlStateStore) -> None:
    s = await seed(store)
    assert await store.add_cabinet_connector(s.admin, "cab-a", "acd") is True
    await drain(store)
    assert await store.add_cabinet_connector(s.superviseur, "cab-a", "acd") is False
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == ["acd"]
    assert await pending(store) == []
    assert await store.outbox_backlog() == 0


async def test_rule1_a_cabinet_can_have_any_number_of_connectors(store: SqlStateStore) -> None:
    s = await seed(store)
    for connector in ("quadra", "acd", "pennylane", "cegid"):
        assert await store.add_cabinet_connector(s.admin, "cab-a", connector) is True
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == [
        "acd",
        "cegid",
        "pennylane",
        "quadra",
    ]


async def test_rule1_a_collaborateur_cannot_add_a_connector(store: SqlStateStore) -> None:
    s = await seed(store)
    with pytest.raises(ProfileNotAllowed) as refused:
        await store.add_cabinet_connector(s.collaborateur, "cab-a", "acd")
    assert refused.value.message == (
        "only a superviseur or an administrateur can add a connector; you are a collaborateur"
    )
    assert refused.value.code == "profile_not_allowed"
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == []


async def test_rule1_only_catalogue_connectors_can_be_added(
    store: SqlStateStore, database_url: str, make_store: MakeStore
) -> None:
    s = await seed(store)
    with pytest.raises(UnknownConnector, match="connector sage is not in the connector catalogue"):
        await store.add_cabinet_connector(s.admin, "cab-a", "sage")
    narrow = make_store(database_url, catalogue=["sage"])
    assert await narrow.add_cabinet_connector(s.admin, "cab-a", "sage") is True
    with pytest.raises(UnknownConnector, match="connector acd is not in"):
        await narrow.add_cabinet_connector(s.admin, "cab-a", "acd")


async def test_rule1_unknown_cabinet(store: SqlStateStore) -> None:
    ghost = Actor("usr_ghost", "ghost", Profile.ADMINISTRATEUR)
    with pytest.raises(UnknownCabinet, match="cabinet ghost does not exist"):
        await store.add_cabinet_connector(ghost, "ghost", "acd")
    with pytest.raises(UnknownCabinet):
        await store.list_cabinet_connectors(ghost, "ghost")


# --- rule 2: removing a connector ---------------------------------------------------------


async def test_rule2_a_connector_with_bound_ibans_cannot_be_removed(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    for number in (1, 2, 3):
        await store.bind_iban(s.collaborateur, iban(number), "acd")
    await drain(store)
    with pytest.raises(ConnectorStillBound) as refused:
        await store.remove_cabinet_connector(s.admin, "cab-a", "acd")
    assert refused.value.bound_ibans == 3
    assert "connector acd is still bound to 3 IBANs of cabinet cab-a" in refused.value.message
    assert "Aucun connecteur" in refused.value.message
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == ["acd"]
    assert await pending(store) == []

    await store.bind_iban(s.collaborateur, IBAN_1, None)
    await store.bind_iban(s.collaborateur, IBAN_2, None)
    with pytest.raises(ConnectorStillBound, match="still bound to 1 IBAN of cabinet cab-a"):
        await store.remove_cabinet_connector(s.superviseur, "cab-a", "acd")

    await store.bind_iban(s.collaborateur, IBAN_3, None)
    await store.remove_cabinet_connector(s.superviseur, "cab-a", "acd")
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == []


async def test_rule2_only_a_superviseur_or_an_administrateur_removes(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    with pytest.raises(ProfileNotAllowed) as refused:
        await store.remove_cabinet_connector(s.collaborateur, "cab-a", "acd")
    assert refused.value.message == (
        "only a superviseur or an administrateur can remove a connector; you are a collaborateur"
    )
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == ["acd"]


async def test_rule2_removing_a_connector_the_cabinet_lacks(store: SqlStateStore) -> None:
    s = await seed(store)
    with pytest.raises(ConnectorNotOnCabinet) as refused:
        await store.remove_cabinet_connector(s.admin, "cab-a", "cegid")
    assert "connector cegid has not been added to cabinet cab-a" in refused.value.message


async def test_rule2_bindings_in_other_cabinets_do_not_count(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await store.add_cabinet_connector(s.admin_b, "cab-b", "acd")
    await store.bind_iban(s.admin_b, IBAN_B, "acd")
    await store.remove_cabinet_connector(s.admin, "cab-a", "acd")
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == []
    assert await store.list_cabinet_connectors(s.admin_b, "cab-b") == ["acd"]


# --- rules 3 and 4: binding and unbinding -------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "superviseur", "collaborateur"])
async def test_rule3_every_profile_binds_to_a_connector_of_the_cabinet(
    store: SqlStateStore, who: str
) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    before = await store.get_iban(s.collaborateur, IBAN_1)
    bound = await store.bind_iban(getattr(s, who), IBAN_1.lower(), "acd")
    assert bound.connector_id == "acd"
    assert bound.connector_on_cabinet is True
    assert bound.version == before.version + 1
    assert await store.get_iban(s.collaborateur, IBAN_1) == bound


async def test_rule3_binding_needs_the_connector_on_the_cabinet(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await store.add_cabinet_connector(s.admin_b, "cab-b", "cegid")
    await drain(store)
    with pytest.raises(ConnectorNotOnCabinet) as refused:
        await store.bind_iban(s.collaborateur, IBAN_1, "cegid")
    assert refused.value.message == (
        "connector cegid has not been added to cabinet cab-a; "
        "a superviseur or an administrateur must add it first"
    )
    state = await store.get_iban(s.collaborateur, IBAN_1)
    assert state.connector_id is None
    assert await pending(store) == []


async def test_rule3_binding_to_a_connector_outside_the_catalogue(store: SqlStateStore) -> None:
    s = await seed(store)
    with pytest.raises(UnknownConnector, match="connector sage is not in the connector catalogue"):
        await store.bind_iban(s.collaborateur, IBAN_1, "sage")


async def test_rule3_binding_unknown_or_invalid_ibans(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    with pytest.raises(UnknownIban, match=f"IBAN {IBAN_4} is not registered"):
        await store.bind_iban(s.collaborateur, IBAN_4, "acd")
    with pytest.raises(InvalidIban):
        await store.bind_iban(s.collaborateur, "FR76 3000 6000", "acd")


async def test_rebinding_to_the_same_connector_is_a_no_op(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    bound = await store.bind_iban(s.collaborateur, IBAN_1, "acd")
    await drain(store)
    assert await store.bind_iban(s.superviseur, IBAN_1, "acd") == bound
    assert await pending(store) == []


async def test_switching_connectors_is_one_change(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await store.add_cabinet_connector(s.admin, "cab-a", "quadra")
    acd = await store.bind_iban(s.collaborateur, IBAN_1, "acd")
    await drain(store)
    quadra = await store.bind_iban(s.collaborateur, IBAN_1, "quadra")
    assert (quadra.connector_id, quadra.version) == ("quadra", acd.version + 1)
    assert [m.value for m in await pending(store)] == [event(quadra)]


@pytest.mark.parametrize("who", ["admin", "superviseur", "collaborateur"])
async def test_rule4_every_profile_unbinds(store: SqlStateStore, who: str) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    bound = await store.bind_iban(s.collaborateur, IBAN_1, "acd")
    unbound = await store.bind_iban(getattr(s, who), IBAN_1, None)
    assert unbound.connector_id is None
    assert unbound.connector_on_cabinet is True  # the cabinet still has a connector
    assert unbound.version == bound.version + 1
    await drain(store)
    assert await store.bind_iban(s.collaborateur, IBAN_1, None) == unbound
    assert await pending(store) == []


# --- cross-cabinet refusals ---------------------------------------------------------------


async def test_every_user_operation_refuses_other_cabinets(store: SqlStateStore) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin_b, "cab-b", "acd")
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await drain(store)
    refused = "you can only act inside your own cabinet, not in cabinet cab-b"
    with pytest.raises(OtherCabinet, match=refused):
        await store.list_cabinet_connectors(s.admin, "cab-b")
    with pytest.raises(OtherCabinet, match=refused):
        await store.add_cabinet_connector(s.admin, "cab-b", "cegid")
    with pytest.raises(OtherCabinet, match=refused):
        await store.remove_cabinet_connector(s.admin, "cab-b", "acd")
    # Another cabinet's IBAN is answered as an unknown one (no existence oracle).
    unknown = f"IBAN {IBAN_B} is not registered"
    with pytest.raises(UnknownIban, match=unknown):
        await store.bind_iban(s.admin, IBAN_B, "acd")
    with pytest.raises(UnknownIban, match=unknown):
        await store.bind_iban(s.collaborateur, IBAN_B, None)
    with pytest.raises(UnknownIban, match=unknown):
        await store.get_iban(s.collaborateur, IBAN_B)
    # A collaborateur of cab-a is refused for the cabinet before the profile check.
    with pytest.raises(OtherCabinet):
        await store.add_cabinet_connector(s.collaborateur, "cab-b", "cegid")
    assert await store.list_cabinet_connectors(s.admin_b, "cab-b") == ["acd"]
    state_b = await store.get_iban(s.admin_b, IBAN_B)
    assert (state_b.connector_id, state_b.version) == (None, 2)
    assert await pending(store) == []


async def test_get_iban(store: SqlStateStore) -> None:
    s = await seed(store)
    state = await store.get_iban(s.collaborateur, IBAN_2.lower())
    assert state == await store.iban_state(IBAN_2)
    assert state.client_ref == "client-2"
    with pytest.raises(UnknownIban):
        await store.get_iban(s.collaborateur, IBAN_4)


async def test_list_ibans_is_the_actors_own_cabinet(store: SqlStateStore) -> None:
    s = await seed(store)
    listed = await store.list_ibans(s.collaborateur, "cab-a")
    assert [state.iban for state in listed] == sorted(iban(n) for n in (1, 2, 3))
    assert listed[1] == await store.iban_state(iban(2))
    assert [state.iban for state in await store.list_ibans(s.admin_b, "cab-b")] == [IBAN_B]
    with pytest.raises(OtherCabinet):
        await store.list_ibans(s.admin, "cab-b")


# --- the outbox ---------------------------------------------------------------------------


async def test_outbox_one_row_per_effective_change_with_monotonic_versions(
    store: SqlStateStore,
) -> None:
    s = await seed(store)
    await drain(store)
    states: list[IbanState] = []

    async def expect(change: IbanState | None, rows: int) -> None:
        messages = await pending(store)
        assert len(messages) == rows, messages
        if change is not None and rows:
            states.append(change)
            assert [m.key for m in messages] == [change.iban]
            assert [m.topic for m in messages] == ["iban.state"]
            assert messages[0].value == event(change)
        elif change is not None:  # a no-op returns the unchanged state
            assert change == states[-1]
        await drain(store)

    # First connector of the cabinet: every unbound IBAN's check 1 flips to true.
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    republished = await pending(store)
    assert sorted(m.key for m in republished) == [IBAN_1, IBAN_2, IBAN_3]
    for message in republished:
        assert message.value is not None
        assert (message.value["version"], message.value["connector_on_cabinet"]) == (2, True)
    await drain(store)
    states.append((await store.iban_state(IBAN_1)) or pytest.fail("IBAN_1 vanished"))

    await expect(await store.bind_iban(s.collaborateur, IBAN_1, "acd"), 1)
    await expect(await store.bind_iban(s.collaborateur, IBAN_1, "acd"), 0)
    await expect(await store.set_mandate(IBAN_1, MandateStatus.APPROVED), 1)
    await expect(await store.set_mandate(IBAN_1, MandateStatus.APPROVED), 0)
    assert await store.add_cabinet_connector(s.admin, "cab-a", "acd") is False
    await expect(None, 0)
    await expect(await store.bind_iban(s.collaborateur, IBAN_1, None), 1)
    await expect(await store.bind_iban(s.collaborateur, IBAN_1, None), 0)

    # Last connector leaves: every unbound IBAN of cab-a flips back, cab-b is untouched.
    await store.remove_cabinet_connector(s.admin, "cab-a", "acd")
    republished = await pending(store)
    assert sorted(m.key for m in republished) == [IBAN_1, IBAN_2, IBAN_3]
    last = next(m for m in republished if m.key == IBAN_1)
    final = await store.iban_state(IBAN_1)
    assert final is not None
    assert last.value == event(final)
    assert (final.connector_on_cabinet, final.version) == (False, 6)
    states.append(final)

    assert [st.version for st in states] == [2, 3, 4, 5, 6]
    assert [st.connector_id for st in states] == [None, "acd", "acd", None, None]
    assert [st.mandate_status for st in states] == [MandateStatus.PENDING] * 2 + [
        MandateStatus.APPROVED
    ] * 3


async def test_outbox_payload_is_the_iban_state_v1_snapshot(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    state = await store.add_iban(IBAN_1, "cab-a", "client-1")
    [message] = await pending(store)
    assert message.topic == "iban.state"
    assert message.key == IBAN_1
    assert message.created_at.tzinfo is UTC
    assert message.value == {
        "schema": "iban.state/v1",
        "iban": IBAN_1,
        "cabinet_id": "cab-a",
        "client_ref": "client-1",
        "connector_id": None,
        "connector_on_cabinet": False,
        "mandate_status": "pending",
        "version": 1,
        "updated_at": message.value["updated_at"] if message.value else None,
    }
    assert IbanStateEvent.model_validate(message.value).to_domain() == state


async def test_connector_set_changes_republish_only_changed_snapshots(
    store: SqlStateStore,
) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await store.bind_iban(s.collaborateur, IBAN_1, "acd")
    await drain(store)
    versions = {n: (await store.get_iban(s.admin, iban(n))).version for n in (1, 2, 3)}

    # A second connector changes no snapshot: unbound IBANs already passed check 1.
    assert await store.add_cabinet_connector(s.admin, "cab-a", "cegid") is True
    assert await pending(store) == []
    await store.remove_cabinet_connector(s.admin, "cab-a", "cegid")
    assert await pending(store) == []
    assert {n: (await store.get_iban(s.admin, iban(n))).version for n in (1, 2, 3)} == versions

    # Unbind IBAN_1, then remove the last connector: the three unbound IBANs flip.
    await store.bind_iban(s.collaborateur, IBAN_1, None)
    await drain(store)
    await store.remove_cabinet_connector(s.admin, "cab-a", "acd")
    messages = await pending(store)
    assert sorted(m.key for m in messages) == [IBAN_1, IBAN_2, IBAN_3]
    for message in messages:
        state = await store.iban_state(message.key)
        assert state is not None
        assert state.connector_on_cabinet is False
        assert message.value == event(state)
    assert (await store.iban_state(IBAN_2)) is not None
    b_state = await store.get_iban(s.admin_b, IBAN_B)
    assert b_state.version == 1


async def test_pending_outbox_and_mark_published(store: SqlStateStore) -> None:
    await store.create_cabinet("cab-a", "Cabinet A")
    for number in (1, 2, 3, 4):
        await store.add_iban(iban(number), "cab-a", None)
    assert await store.outbox_backlog() == 4
    first_two = await store.pending_outbox(2)
    assert [m.key for m in first_two] == [IBAN_1, IBAN_2]
    everything = await store.pending_outbox(100)
    ids = [m.id for m in everything]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert await store.pending_outbox(0) == []

    await store.mark_published([first_two[0].id, first_two[1].id, first_two[0].id])
    assert [m.key for m in await store.pending_outbox(100)] == [IBAN_3, IBAN_4]
    assert await store.outbox_backlog() == 2
    await store.mark_published([])
    await store.mark_published([ids[2], ids[3], 10**9])
    assert await store.pending_outbox(100) == []
    assert await store.outbox_backlog() == 0

    await store.add_iban(IBAN_B, "cab-a", None)
    [later] = await store.pending_outbox(100)
    assert later.id > ids[-1]


async def test_mark_published_keeps_the_first_publication_time(
    database_url: str, make_store: MakeStore
) -> None:
    await upgrade(database_url)
    times = iter(datetime(2025, 1, 1, 12, m, tzinfo=UTC) for m in range(10))
    store = make_store(database_url, clock=lambda: next(times))
    await store.create_cabinet("cab-a", "A")  # minute 0
    await store.add_iban(IBAN_1, "cab-a", None)  # minute 1
    [message] = await store.pending_outbox(10)
    await store.mark_published([message.id])  # minute 2
    await store.mark_published([message.id])  # minute 3: no effect
    async with store.engine.connect() as conn:
        published_at = (
            await conn.execute(select(outbox.c.published_at).where(outbox.c.id == message.id))
        ).scalar_one()
    assert published_at == datetime(2025, 1, 1, 12, 2, tzinfo=UTC)
    assert published_at.tzinfo is UTC


async def test_a_null_payload_is_a_tombstone(store: SqlStateStore) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(outbox).values(
                topic="iban.state",
                msg_key=IBAN_1,
                payload=None,
                created_at=datetime.now(UTC),
            )
        )
    async with store.engine.connect() as conn:
        is_sql_null = (await conn.execute(text("SELECT payload IS NULL FROM outbox"))).scalar_one()
    assert bool(is_sql_null) is True
    [message] = await store.pending_outbox(1)
    assert message.value is None


# --- the database's own guard (second line of defence) ------------------------------------


async def test_the_schema_forbids_a_bound_iban_whose_connector_is_off_its_cabinet(
    store: SqlStateStore,
) -> None:
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await store.add_cabinet_connector(s.admin_b, "cab-b", "cegid")
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE ibans SET connector_id = 'cegid' WHERE iban = :iban"),
                {"iban": IBAN_1},
            )
    await store.bind_iban(s.collaborateur, IBAN_1, "acd")
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM cabinet_connectors WHERE connector_id = 'acd'"),
            )
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == ["acd"]


async def test_foreign_key_refusals_become_domain_errors(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the rule checks switched off, the composite foreign key still says no, and the
    store reports it with the error the rule would have raised."""
    s = await seed(store)
    await store.add_cabinet_connector(s.admin, "cab-a", "acd")
    await store.bind_iban(s.collaborateur, IBAN_1, "acd")
    await store.bind_iban(s.collaborateur, IBAN_2, "acd")
    await drain(store)

    def no_check(*_args: object) -> None:
        return None

    monkeypatch.setattr(rules, "ensure_can_bind", no_check)
    monkeypatch.setattr(rules, "ensure_removable", no_check)
    with pytest.raises(ConnectorNotOnCabinet, match="connector cegid has not been added"):
        await store.bind_iban(s.collaborateur, IBAN_3, "cegid")
    with pytest.raises(ConnectorStillBound) as refused:
        await store.remove_cabinet_connector(s.admin, "cab-a", "acd")
    assert refused.value.bound_ibans == 2
    assert await store.list_cabinet_connectors(s.admin, "cab-a") == ["acd"]
    assert await pending(store) == []


# --- migrations ---------------------------------------------------------------------------


def _schema_diffs(conn: Connection, target: MetaData) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, target))


async def test_upgrade_head_on_an_empty_database_matches_tables_py(database_url: str) -> None:
    assert await current_revision(database_url) is None
    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision() == "0004"
    await upgrade(database_url)  # already at head: nothing to do

    engine = create_store_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_schema_diffs, metadata) == []
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            fks = await conn.run_sync(lambda c: inspect(c).get_foreign_keys("ibans"))

            # The comparison is not vacuous: a metadata with one more column differs.
            wider = MetaData()
            for table in metadata.sorted_tables:
                table.to_metadata(wider)
            wider.tables["outbox"].append_column(Column("extra", Integer))
            diffs = await conn.run_sync(_schema_diffs, wider)
    finally:
        await engine.dispose()
    assert tables == {
        "alembic_version",
        "cabinets",
        "users",
        "cabinet_connectors",
        "ibans",
        "outbox",
        "global_file_statements",
        "delivery_ledger",
    }
    composite = [fk for fk in fks if fk["constrained_columns"] == ["cabinet_id", "connector_id"]]
    assert len(composite) == 1
    assert composite[0]["referred_table"] == "cabinet_connectors"
    assert composite[0]["referred_columns"] == ["cabinet_id", "connector_id"]
    assert [d[0] for d in diffs] == ["add_column"]


async def test_concurrent_upgrades_serialize(database_url: str) -> None:
    await asyncio.gather(*(upgrade(database_url) for _ in range(3)))
    assert await current_revision(database_url) == head_revision()


# --- errors of the database itself --------------------------------------------------------


async def test_an_unmigrated_database_says_so(sqlite_url: str, make_store: MakeStore) -> None:
    store = make_store(sqlite_url)
    with pytest.raises(SchemaNotReady, match="apply the migrations"):
        await store.create_cabinet("cab-a", "A")


@pytest.mark.postgres
async def test_an_unmigrated_postgres_database_says_so(
    postgres_url: str, make_store: MakeStore
) -> None:
    store = make_store(postgres_url)
    with pytest.raises(SchemaNotReady, match="apply the migrations"):
        await store.iban_state(IBAN_1)


async def test_an_unreachable_postgres_is_store_unavailable(make_store: MakeStore) -> None:
    store = make_store("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StoreUnavailable, match=r"cannot reach the database postgresql\+asyncpg"):
        await store.iban_state(IBAN_1)
    with pytest.raises(StoreUnavailable):
        await upgrade("postgresql://postgres@127.0.0.1:1/nowhere")


# --- relay leadership ---------------------------------------------------------------------


async def test_only_one_relay_holds_the_lock(
    store: SqlStateStore, database_url: str, make_store: MakeStore
) -> None:
    other = make_store(database_url)
    async with store.relay_lock() as leader:
        assert leader is True
        async with other.relay_lock() as standby:
            assert standby is False
        async with store.relay_lock() as same_process_second_relay:
            assert same_process_second_relay is False
    async with other.relay_lock() as leader_now:
        assert leader_now is True
        async with store.relay_lock() as standby_now:
            assert standby_now is False
    async with store.relay_lock() as again:
        assert again is True


async def test_the_relay_lock_is_released_when_the_body_fails(store: SqlStateStore) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with store.relay_lock() as leader:
            assert leader
            raise RuntimeError("boom")
    async with store.relay_lock() as leader:
        assert leader is True


# --- the race: removing a connector while IBANs get bound to it -----------------------------

ROUNDS = 20
RACING_IBANS = 4


async def _after_jitter(coro: Any) -> Any:
    await asyncio.sleep(random.random() * 0.004)
    return await coro


async def test_removal_racing_bindings_never_leaves_a_dangling_binding(
    store: SqlStateStore, database_url: str, make_store: MakeStore
) -> None:
    """Removal of a connector (one process) against bindings to it (another process).

    After every round: either the connector is off the cabinet and no IBAN is bound to it, or
    it is still on; every call succeeded or gave a domain error; and the last published
    snapshot of each IBAN is its stored state.
    """
    binder_store = make_store(database_url)
    outcomes: dict[str, int] = {"removed": 0, "kept": 0}
    for round_no in range(ROUNDS):
        cabinet = f"race-{round_no}"
        await store.create_cabinet(cabinet, f"Race {round_no}")
        admin = await store.authenticate(
            (await store.create_user(cabinet, Profile.ADMINISTRATEUR)).token
        )
        collaborateur = await store.authenticate(
            (await store.create_user(cabinet, Profile.COLLABORATEUR)).token
        )
        numbers = [1000 + round_no * RACING_IBANS + k for k in range(RACING_IBANS)]
        for number in numbers:
            await store.add_iban(iban(number), cabinet, None)
        assert await store.add_cabinet_connector(admin, cabinet, "acd") is True

        calls = [_after_jitter(store.remove_cabinet_connector(admin, cabinet, "acd"))]
        calls += [
            _after_jitter(binder_store.bind_iban(collaborateur, iban(number), "acd"))
            for number in numbers
        ]
        removal, *bindings = await asyncio.gather(*calls, return_exceptions=True)

        assert removal is None or isinstance(removal, ConnectorStillBound), repr(removal)
        for binding in bindings:
            assert isinstance(binding, IbanState | ConnectorNotOnCabinet), repr(binding)

        connectors = await store.list_cabinet_connectors(admin, cabinet)
        states = [await store.get_iban(admin, iban(number)) for number in numbers]
        bound = [st for st in states if st.connector_id == "acd"]
        if "acd" in connectors:
            outcomes["kept"] += 1
            assert isinstance(removal, ConnectorStillBound)
            assert removal.bound_ibans >= 1
            assert bound, "the removal was refused, so some binding won"
        else:
            outcomes["removed"] += 1
            assert removal is None
            assert bound == []
            assert all(isinstance(b, ConnectorNotOnCabinet) for b in bindings)
        won = [b for b in bindings if isinstance(b, IbanState)]
        assert sorted(b.iban for b in won) == sorted(st.iban for st in bound)

        # The outbox tells the same story: the newest message per IBAN is its state.
        latest: dict[str, dict[str, Any] | None] = {}
        for message in await store.pending_outbox(100_000):
            latest[message.key] = message.value
        for state in states:
            assert latest[state.iban] == event(state)
        await drain(store)
    assert outcomes["removed"] + outcomes["kept"] == ROUNDS
