"""The SQL state store (SQLAlchemy 2 Core, async): SQLite embedded, PostgreSQL in production.

How the FAQ rules stay true under concurrency
---------------------------------------------
Every mutation is one transaction that reads the facts, checks them with
``routing.domain.rules``, writes, and appends the resulting ``iban.state/v1`` snapshots to
the outbox. A check is only worth something if the facts cannot change before the commit,
so cabinet-scoped mutations are serialized per cabinet:

* PostgreSQL: the transaction first locks the cabinet's row (``SELECT ... FOR UPDATE``).
  Binding an IBAN and removing a connector from its cabinet therefore run one after the
  other, and the second sees what the first committed.
* SQLite: every writing transaction starts with ``BEGIN IMMEDIATE`` (see
  ``routing.store.engine``), which serializes all writers of the file.

Behind the locks, the composite foreign key ibans(cabinet_id, connector_id) ->
cabinet_connectors refuses any state where a bound IBAN's connector is off its cabinet; a
violation is turned into the domain error the rules would have raised.

Versions and the outbox
-----------------------
``ibans.version`` goes up by exactly one with every change of an IBAN's published snapshot,
and each such change appends one outbox row (topic ``iban.state``, key = the IBAN) in the
same transaction. No-op calls (same mandate status, re-binding to the same connector,
adding a connector the cabinet already has) change nothing and publish nothing.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from events.schemas import IbanStateEvent
from routing.domain import rules
from routing.domain.errors import (
    AlreadyExists,
    ConnectorNotOnCabinet,
    ConnectorStillBound,
    UnknownCabinet,
    UnknownIban,
)
from routing.domain.iban import normalise_iban
from routing.domain.ids import ensure_valid_id
from routing.domain.model import Actor, IbanState, MandateStatus
from routing.ports import CabinetStore
from routing.store.base import CHUNK, SqlStoreBase, chunks
from routing.store.errors import StoreBusy, StoreIntegrityError
from routing.store.tables import cabinet_connectors, cabinets, ibans, outbox

IBAN_STATE_TOPIC = "iban.state"
_MAX_FK_RETRIES = 3


class SqlCabinets(SqlStoreBase, CabinetStore):
    """The FAQ's use cases on SQL: cabinets, their connectors, IBANs and mandates.

    The store enforces the FAQ rules itself, in the same transaction as the write and the
    outbox append, so neither the API nor the CLI can skip a check, and the published
    ``iban.state`` stream can neither miss a committed change nor show an uncommitted one.
    """

    # --- reading helpers -------------------------------------------------------------

    @staticmethod
    async def _lock_cabinet(conn: AsyncConnection, cabinet_id: str) -> None:
        """Serialize this transaction with every other mutation of the cabinet (PostgreSQL
        row lock; a no-op on SQLite, where BEGIN IMMEDIATE already serialized it)."""
        stmt = select(cabinets.c.id).where(cabinets.c.id == cabinet_id).with_for_update()
        if (await conn.execute(stmt)).first() is None:
            raise UnknownCabinet(cabinet_id)

    @staticmethod
    async def _connectors(conn: AsyncConnection, cabinet_id: str) -> list[str]:
        stmt = (
            select(cabinet_connectors.c.connector_id)
            .where(cabinet_connectors.c.cabinet_id == cabinet_id)
            .order_by(cabinet_connectors.c.connector_id)
        )
        return list((await conn.scalars(stmt)).all())

    @staticmethod
    async def _iban_row(conn: AsyncConnection, iban: str) -> Row[Any] | None:
        return (await conn.execute(select(ibans).where(ibans.c.iban == iban))).first()

    async def _locked_iban_row(self, conn: AsyncConnection, iban: str) -> Row[Any]:
        """The IBAN's row, read after locking its cabinet; ``UnknownIban`` if absent."""
        row = await self._iban_row(conn, iban)
        if row is None:
            raise UnknownIban(iban)
        await self._lock_cabinet(conn, row.cabinet_id)
        # Re-read under the lock: another transaction may have committed meanwhile.
        row = await self._iban_row(conn, iban)
        if row is None:  # pragma: no cover - IBANs are never deleted today
            raise UnknownIban(iban)
        return row

    @staticmethod
    def _state(row: Row[Any], connectors: Collection[str]) -> IbanState:
        on_cabinet = rules.connector_on_cabinet(row.connector_id, connectors)
        return IbanState.from_fields({**row._mapping, "connector_on_cabinet": on_cabinet})

    @staticmethod
    async def _count_bound(conn: AsyncConnection, cabinet_id: str, connector_id: str) -> int:
        stmt = (
            select(func.count())
            .select_from(ibans)
            .where(ibans.c.cabinet_id == cabinet_id, ibans.c.connector_id == connector_id)
        )
        return int((await conn.execute(stmt)).scalar_one())

    # --- writing helpers -------------------------------------------------------------

    @staticmethod
    def _outbox_row(state: IbanState, now: datetime) -> dict[str, Any]:
        payload = IbanStateEvent.from_domain(state).model_dump(mode="json", by_alias=True)
        return {
            "topic": IBAN_STATE_TOPIC,
            "msg_key": state.iban,
            "payload": payload,
            "created_at": now,
            "published_at": None,
        }

    async def _save_changed(self, conn: AsyncConnection, state: IbanState, now: datetime) -> None:
        """Write a changed snapshot (``state.version`` already bumped) and its outbox row."""
        result = await conn.execute(
            update(ibans)
            .where(ibans.c.iban == state.iban, ibans.c.version == state.version - 1)
            .values(
                connector_id=state.connector_id,
                mandate_status=state.mandate_status.value,
                version=state.version,
                updated_at=state.updated_at,
            )
        )
        if result.rowcount != 1:  # pragma: no cover - the cabinet lock prevents it
            raise StoreBusy(f"IBAN {state.iban} changed concurrently; nothing was committed")
        await conn.execute(insert(outbox), [self._outbox_row(state, now)])

    async def _republish_cabinet(
        self,
        conn: AsyncConnection,
        cabinet_id: str,
        changed_connector: str,
        before: Collection[str],
        after: Collection[str],
        now: datetime,
    ) -> None:
        """After a change of the cabinet's connector set, bump and publish exactly the IBANs
        whose ``connector_on_cabinet`` changed."""
        candidates = [ibans.c.connector_id == changed_connector]
        if bool(before) != bool(after):
            candidates.append(ibans.c.connector_id.is_(None))
        rows = (
            await conn.execute(
                select(ibans)
                .where(ibans.c.cabinet_id == cabinet_id, or_(*candidates))
                .order_by(ibans.c.iban)
            )
        ).all()
        changed: list[IbanState] = []
        for row in rows:
            old = self._state(row, before)
            new = self._state(row, after)
            if new != old:
                changed.append(replace(new, version=old.version + 1, updated_at=now))
        if not changed:
            return
        await conn.execute(
            update(ibans)
            .where(ibans.c.iban == bindparam("b_iban"), ibans.c.version == bindparam("b_prev"))
            .values(version=bindparam("b_version"), updated_at=bindparam("b_updated_at")),
            [
                {
                    "b_iban": s.iban,
                    "b_prev": s.version - 1,
                    "b_version": s.version,
                    "b_updated_at": s.updated_at,
                }
                for s in changed
            ],
        )
        await conn.execute(insert(outbox), [self._outbox_row(s, now) for s in changed])

    # --- back office -----------------------------------------------------------------

    async def create_cabinet(self, cabinet_id: str, name: str) -> None:
        ensure_valid_id("cabinet", cabinet_id)
        taken = AlreadyExists(f"cabinet {cabinet_id} already exists")
        try:
            async with self._write() as conn:
                if await self._cabinet_exists(conn, cabinet_id):
                    raise taken
                await conn.execute(
                    insert(cabinets).values(id=cabinet_id, name=name, created_at=self._now())
                )
        except StoreIntegrityError as exc:
            if exc.kind == "unique":  # a concurrent create won the race
                raise taken from exc
            raise

    async def add_iban(self, iban: str, cabinet_id: str, client_ref: str | None) -> IbanState:
        iban = normalise_iban(iban)
        ensure_valid_id("cabinet", cabinet_id)
        taken = AlreadyExists(f"IBAN {iban} is already registered")
        try:
            async with self._write() as conn:
                await self._lock_cabinet(conn, cabinet_id)
                if await self._iban_row(conn, iban) is not None:
                    raise taken
                connectors = await self._connectors(conn, cabinet_id)
                now = self._now()
                state = IbanState(
                    iban=iban,
                    cabinet_id=cabinet_id,
                    client_ref=client_ref,
                    connector_id=None,
                    connector_on_cabinet=rules.connector_on_cabinet(None, connectors),
                    mandate_status=MandateStatus.PENDING,
                    version=1,
                    updated_at=now,
                )
                await conn.execute(
                    insert(ibans).values(
                        iban=iban,
                        cabinet_id=cabinet_id,
                        client_ref=client_ref,
                        connector_id=None,
                        mandate_status=state.mandate_status.value,
                        version=state.version,
                        updated_at=now,
                    )
                )
                await conn.execute(insert(outbox), [self._outbox_row(state, now)])
        except StoreIntegrityError as exc:
            if exc.kind == "unique":  # registered concurrently under another cabinet
                raise taken from exc
            raise
        return state

    async def set_mandate(self, iban: str, status: MandateStatus) -> IbanState:
        iban = normalise_iban(iban)
        status = MandateStatus(status)
        async with self._write() as conn:
            row = await self._locked_iban_row(conn, iban)
            current = self._state(row, await self._connectors(conn, row.cabinet_id))
            if current.mandate_status is status:
                return current
            now = self._now()
            new = replace(
                current, mandate_status=status, version=current.version + 1, updated_at=now
            )
            await self._save_changed(conn, new, now)
        return new

    async def iban_state(self, iban: str) -> IbanState | None:
        iban = normalise_iban(iban)
        async with self._read() as conn:
            row = await self._iban_row(conn, iban)
            if row is None:
                return None
            return self._state(row, await self._connectors(conn, row.cabinet_id))

    async def iban_versions(self) -> dict[str, int]:
        """Every registered IBAN with the version of its current state."""
        async with self._read() as conn:
            rows = (await conn.execute(select(ibans.c.iban, ibans.c.version))).all()
        return {row.iban: int(row.version) for row in rows}

    async def republish_states(self, wanted: Collection[str]) -> int:
        """Queue the current state of each IBAN in ``wanted`` on the outbox again.

        For a broker that lost ``iban.state`` (the embedded broker after a crash, a wiped
        cluster): the version is not bumped, so a router that already holds it ignores the
        copy. IBANs with an unpublished outbox row are skipped: the relay sends that row.
        Returns how many states were queued.
        """
        wanted = sorted(set(wanted))
        if not wanted:
            return 0
        async with self._write() as conn:
            pending = set(
                (
                    await conn.execute(
                        select(outbox.c.msg_key).where(outbox.c.published_at.is_(None))
                    )
                ).scalars()
            )
            now = self._now()
            rows_out: list[dict[str, Any]] = []
            for chunk in chunks(wanted, CHUNK):
                rows = (
                    await conn.execute(
                        select(ibans).where(ibans.c.iban.in_(chunk)).order_by(ibans.c.iban)
                    )
                ).all()
                for row in rows:
                    if row.iban in pending:
                        continue
                    state = self._state(row, await self._connectors(conn, row.cabinet_id))
                    rows_out.append(self._outbox_row(state, now))
            if rows_out:
                await conn.execute(insert(outbox), rows_out)
        return len(rows_out)

    # --- the FAQ operations ------------------------------------------------------------

    async def list_cabinet_connectors(self, actor: Actor, cabinet_id: str) -> list[str]:
        ensure_valid_id("cabinet", cabinet_id)
        rules.ensure_own_cabinet(actor, cabinet_id)
        async with self._read() as conn:
            if not await self._cabinet_exists(conn, cabinet_id):
                raise UnknownCabinet(cabinet_id)
            return await self._connectors(conn, cabinet_id)

    async def add_cabinet_connector(self, actor: Actor, cabinet_id: str, connector_id: str) -> bool:
        ensure_valid_id("cabinet", cabinet_id)
        ensure_valid_id("connector", connector_id)
        rules.ensure_can_manage_connectors(actor, cabinet_id, "add")
        try:
            async with self._write() as conn:
                await self._lock_cabinet(conn, cabinet_id)
                rules.ensure_known_connector(connector_id, self._catalogue)
                before = await self._connectors(conn, cabinet_id)
                if connector_id in before:
                    return False
                now = self._now()
                await conn.execute(
                    insert(cabinet_connectors).values(
                        cabinet_id=cabinet_id, connector_id=connector_id, added_at=now
                    )
                )
                after = sorted([*before, connector_id])
                await self._republish_cabinet(conn, cabinet_id, connector_id, before, after, now)
        except StoreIntegrityError as exc:
            if exc.kind == "unique":  # pragma: no cover - the cabinet lock prevents it
                return False
            raise
        return True

    async def remove_cabinet_connector(
        self, actor: Actor, cabinet_id: str, connector_id: str
    ) -> None:
        ensure_valid_id("cabinet", cabinet_id)
        ensure_valid_id("connector", connector_id)
        rules.ensure_can_manage_connectors(actor, cabinet_id, "remove")
        last_error: StoreIntegrityError | None = None
        for _attempt in range(_MAX_FK_RETRIES):
            try:
                async with self._write() as conn:
                    await self._lock_cabinet(conn, cabinet_id)
                    before = await self._connectors(conn, cabinet_id)
                    if connector_id not in before:
                        raise ConnectorNotOnCabinet(connector_id, cabinet_id)
                    bound = await self._count_bound(conn, cabinet_id, connector_id)
                    rules.ensure_removable(cabinet_id, connector_id, bound)
                    await conn.execute(
                        delete(cabinet_connectors).where(
                            cabinet_connectors.c.cabinet_id == cabinet_id,
                            cabinet_connectors.c.connector_id == connector_id,
                        )
                    )
                    after = [c for c in before if c != connector_id]
                    now = self._now()
                    await self._republish_cabinet(
                        conn, cabinet_id, connector_id, before, after, now
                    )
                return
            except StoreIntegrityError as exc:
                # The composite foreign key refused the delete: an IBAN got bound to the
                # connector after our count. Say how many, as rule 2 asks; if they were
                # unbound again meanwhile, run the checks once more.
                if exc.kind != "foreign_key":
                    raise
                async with self._read() as conn:
                    bound = await self._count_bound(conn, cabinet_id, connector_id)
                if bound:
                    raise ConnectorStillBound(connector_id, cabinet_id, bound) from exc
                last_error = exc
        assert last_error is not None
        raise last_error

    async def bind_iban(self, actor: Actor, iban: str, connector_id: str | None) -> IbanState:
        iban = normalise_iban(iban)
        if connector_id is not None:
            ensure_valid_id("connector", connector_id)
        cabinet_id: str | None = None
        try:
            async with self._write() as conn:
                row = await self._iban_row(conn, iban)
                if row is None:
                    raise UnknownIban(iban)
                cabinet_id = str(row.cabinet_id)
                # Another cabinet's IBAN is an unknown one, refused before taking its lock.
                rules.ensure_visible(actor, cabinet_id, UnknownIban(iban))
                if connector_id is not None:
                    rules.ensure_known_connector(connector_id, self._catalogue)
                row = await self._locked_iban_row(conn, iban)
                connectors = await self._connectors(conn, cabinet_id)
                rules.ensure_can_bind(actor, cabinet_id, connector_id, connectors)
                current = self._state(row, connectors)
                if current.connector_id == connector_id:
                    return current
                now = self._now()
                new = replace(
                    current,
                    connector_id=connector_id,
                    connector_on_cabinet=rules.connector_on_cabinet(connector_id, connectors),
                    version=current.version + 1,
                    updated_at=now,
                )
                await self._save_changed(conn, new, now)
        except StoreIntegrityError as exc:
            # The composite foreign key: the connector left the cabinet under us.
            if exc.kind == "foreign_key" and connector_id is not None and cabinet_id:
                raise ConnectorNotOnCabinet(connector_id, cabinet_id) from exc
            raise
        return new

    async def get_iban(self, actor: Actor, iban: str) -> IbanState:
        iban = normalise_iban(iban)
        async with self._read() as conn:
            row = await self._iban_row(conn, iban)
            if row is None:
                raise UnknownIban(iban)
            rules.ensure_visible(actor, row.cabinet_id, UnknownIban(iban))
            return self._state(row, await self._connectors(conn, row.cabinet_id))

    async def list_ibans(self, actor: Actor, cabinet_id: str) -> list[IbanState]:
        ensure_valid_id("cabinet", cabinet_id)
        rules.ensure_own_cabinet(actor, cabinet_id)
        async with self._read() as conn:
            if not await self._cabinet_exists(conn, cabinet_id):
                raise UnknownCabinet(cabinet_id)
            connectors = await self._connectors(conn, cabinet_id)
            rows = (
                await conn.execute(
                    select(ibans).where(ibans.c.cabinet_id == cabinet_id).order_by(ibans.c.iban)
                )
            ).all()
        return [self._state(row, connectors) for row in rows]
