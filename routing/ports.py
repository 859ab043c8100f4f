"""The ports the application core talks to. Adapters implement them; the composition
root (``routing.entrypoints.bootstrap``) picks the implementation.

Every method that acts for a user takes the ``Actor`` and enforces the FAQ rules
(``routing.domain.rules``) itself, inside one transaction, so the API and the CLI cannot
forget a check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from routing.domain.errors import Conflict, NotFound
from routing.domain.identity import statement_key
from routing.domain.model import Actor, IbanState, MandateStatus, Profile


@dataclass(frozen=True, slots=True)
class CreatedUser:
    user_id: str
    cabinet_id: str
    profile: Profile
    token: str  # shown once; only its hash is stored


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message waiting in the outbox, in commit order (``id`` ascending)."""

    id: int
    topic: str  # logical topic name without prefix, e.g. "iban.state"
    key: str
    value: dict[str, Any] | None  # None is a tombstone
    created_at: datetime


class UserStore(Protocol):
    """Users and their bearer tokens (back office creates them; every request authenticates)."""

    @abstractmethod
    async def create_user(
        self, cabinet_id: str, profile: Profile, name: str | None = None
    ) -> CreatedUser:
        """Create a user and return a fresh bearer token (stored hashed)."""

    @abstractmethod
    async def authenticate(self, token: str) -> Actor:
        """The user holding ``token``; ``AuthenticationFailed`` otherwise."""


class CabinetStore(Protocol):
    """The FAQ's use cases: cabinets, cabinet connectors, IBANs and mandates.

    Each mutating call is one transaction that also appends the resulting
    ``iban.state/v1`` snapshot(s) to the outbox, so the published state can never miss a
    committed change nor show an uncommitted one.
    """

    # --- back office (So bank operators, the bank's mandate feed) -----------------------
    @abstractmethod
    async def create_cabinet(self, cabinet_id: str, name: str) -> None:
        """Create a cabinet; ``AlreadyExists`` if the id is taken."""

    @abstractmethod
    async def add_iban(self, iban: str, cabinet_id: str, client_ref: str | None) -> IbanState:
        """Register a client IBAN under a cabinet, mandate ``pending``."""

    @abstractmethod
    async def set_mandate(self, iban: str, status: MandateStatus) -> IbanState:
        """Record the bank's mandate decision; ``approved`` makes the IBAN active."""

    @abstractmethod
    async def iban_state(self, iban: str) -> IbanState | None:
        """Operator read of one IBAN's state, or None."""

    # --- the FAQ operations, on behalf of a user ----------------------------------------
    @abstractmethod
    async def list_cabinet_connectors(self, actor: Actor, cabinet_id: str) -> list[str]:
        """The connector ids added to the cabinet, sorted."""

    @abstractmethod
    async def add_cabinet_connector(self, actor: Actor, cabinet_id: str, connector_id: str) -> bool:
        """Rule 1. True when added, False when the cabinet already had it."""

    @abstractmethod
    async def remove_cabinet_connector(
        self, actor: Actor, cabinet_id: str, connector_id: str
    ) -> None:
        """Rule 2. ``ConnectorStillBound`` (with the count) while IBANs are bound to it."""

    @abstractmethod
    async def bind_iban(self, actor: Actor, iban: str, connector_id: str | None) -> IbanState:
        """Rules 3 and 4: bind to a connector the cabinet has, or unbind with None."""

    @abstractmethod
    async def get_iban(self, actor: Actor, iban: str) -> IbanState:
        """One IBAN of the actor's cabinet; ``UnknownIban`` otherwise, also for another
        cabinet's IBAN (``rules.ensure_visible``: no existence oracle)."""

    @abstractmethod
    async def list_ibans(self, actor: Actor, cabinet_id: str) -> list[IbanState]:
        """The IBANs of the actor's own cabinet, sorted by IBAN (the console's « IBAN »
        page); ``OtherCabinet`` for another cabinet, ``UnknownCabinet`` if absent."""



class Outbox(Protocol):
    """The outbox, for the relay: what the cabinet store committed, to publish in order."""

    @abstractmethod
    async def pending_outbox(self, limit: int) -> Sequence[OutboxMessage]:
        """The oldest unpublished messages, in commit order."""

    @abstractmethod
    async def mark_published(self, ids: Sequence[int]) -> None:
        """Mark messages published once the broker acknowledged them."""

    @abstractmethod
    async def outbox_backlog(self) -> int:
        """How many messages wait for the relay (the ``outbox_backlog`` metric)."""

    @abstractmethod
    def relay_lock(self) -> AbstractAsyncContextManager[bool]:
        """Relay leadership: ``async with store.relay_lock() as leader:``, never blocking.

        The outbox must reach ``iban.state`` in commit order per IBAN. Two relays reading
        the same pending rows would race their sends and could publish an older snapshot
        after a newer one (and duplicate every message), so only the holder of this lock
        may publish; the others wait and retry. ``leader`` is False when another process
        holds it. The lock is released when the context exits or the process dies.
        """

    @abstractmethod
    async def relay_lock_held(self) -> bool:
        """Whether the lock yielded by ``relay_lock`` is still held (a lock tied to a
        database session is lost with it); the relay checks before every batch."""


class StateStore(CabinetStore, UserStore, Outbox, Protocol):
    """The state store: the three ports above on one database, so a cabinet mutation and
    its outbox row commit together. Callers that need one concern take its port only."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""


# --- the cabinet global file and the delivery ledger ---------------------------------------


class UnknownStatement(NotFound):
    """No trace of this statement anywhere the user may look (ledger and global file)."""

    code = "unknown_statement"

    def __init__(self, statement_id: str) -> None:
        super().__init__(f"statement {statement_id} is not known")


@dataclass(frozen=True, slots=True)
class StatementCandidate:
    """One of the statements an ambiguous id names, as its own cabinet may see it."""

    key: str | None
    iban: str | None
    content_sha256: str | None
    status: str
    first_seen: datetime | None


class AmbiguousStatement(Conflict):
    """The id names several statements the caller may see: several accounts of their
    cabinet use it, or one account re-used it for another content (routing.domain.identity).
    The caller chooses one by its statement key; ``candidates`` are theirs only."""

    code = "ambiguous_statement"

    def __init__(self, statement_id: str, candidates: Sequence[StatementCandidate]) -> None:
        super().__init__(
            f"statement id {statement_id} names {len(candidates)} statements (several "
            "accounts use it, or one re-used it for another content): choose one by its "
            "key (?key=… on the API, --key with the trace command)"
        )
        self.statement_id = statement_id
        self.candidates = tuple(candidates)


@dataclass(frozen=True, slots=True)
class GlobalFileEntry:
    """One statement of a cabinet's global file, as the builder stores it.

    ``routing`` is the router's trace (``RoutingTrace`` as JSON); ``routed_at`` is its
    ``decided_at``. ``kafka_*`` say which ``statements.global-file`` record it came from,
    so an operator can find it on the topic.
    """

    statement_id: str
    cabinet_id: str
    iban: str
    client_ref: str | None
    format: str
    period_start: date
    period_end: date
    received_at: datetime
    source: str
    content: bytes
    content_sha256: str
    routed_at: datetime
    routing: dict[str, Any] | None
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    stored_at: datetime | None = None  # set when read back from the store

    @property
    def key(self) -> str:
        """Its statement key (``routing.domain.identity``): which statement, when an id is
        shared by two accounts or reused for other content."""
        return statement_key(self.iban, self.statement_id, self.content_sha256)


@dataclass(frozen=True, slots=True)
class StoredStatement:
    """The result of storing one statement: ``created`` is False for a redelivery (same
    IBAN, id and content); ``other_contents`` is not empty for a reused id.

    ``stored_at`` is the time of the *first* write, so a builder that re-emits its
    ``stored_global_file`` outcome after a crash emits the very same record, which the
    ledger then recognises as a duplicate.
    """

    statement_id: str
    cabinet_id: str
    created: bool
    stored_at: datetime
    iban: str = ""
    content_sha256: str = ""
    #: The other contents stored under the same (IBAN, statement_id): a reused id.
    other_contents: tuple[str, ...] = ()


class GlobalFileStore(ABC):
    """The cabinets' global files (« fichier global des relevés », page « Relevés »).

    Idempotent on the statement's identity and content, (IBAN, ``statement_id``,
    ``content_sha256``): storing a statement again changes nothing, and a statement sharing
    another's id is kept beside it (``routing.domain.identity``).
    """

    @abstractmethod
    async def store(self, entries: Sequence[GlobalFileEntry]) -> list[StoredStatement]:
        """Store statements in one transaction; one result per distinct (IBAN, id, content)."""

    @abstractmethod
    async def statements(
        self, actor: Actor, cabinet_id: str, start: date, end: date
    ) -> list[GlobalFileEntry]:
        """The statements of the actor's own cabinet whose period overlaps [start, end],
        in file order: (period_start, received_at, statement_id, iban, content_sha256).
        ``OtherCabinet`` for
        another cabinet, whatever the profile."""

    @abstractmethod
    async def latest_period_start(self, actor: Actor, cabinet_id: str) -> date | None:
        """The start of the latest period in the actor's own cabinet's file, or None when
        the file is empty (the console's « Relevés » opens on that month)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (only if the store owns its engine)."""


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One ``delivery.outcome/v1`` to record. ``routing`` is the routing trace when the
    record carries one (an optional field readers may find on routed/held outcomes)."""

    statement_id: str
    outcome: str
    at: datetime
    iban: str | None = None
    cabinet_id: str | None = None
    connector_id: str | None = None
    attempt: int | None = None
    detail: str | None = None
    routing: dict[str, Any] | None = None
    content_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recorded outcome; ``recorded_at`` is when the ledger wrote it."""

    statement_id: str
    outcome: str
    at: datetime
    iban: str | None
    cabinet_id: str | None
    connector_id: str | None
    attempt: int | None
    detail: str | None
    routing: dict[str, Any] | None
    recorded_at: datetime
    content_sha256: str | None = None


#: What ``statement_status`` answers, from the most to the least final.
STATUSES = (
    "delivered", "in_global_file", "dead_lettered", "retrying", "replayed", "routed", "held",
    "unknown",
)

_STATUS_OF_OUTCOME = {
    "delivered": "delivered",
    "stored_global_file": "in_global_file",
    "dead_lettered": "dead_lettered",
    "retrying": "retrying",
    "replayed": "replayed",
    "routed": "routed",
    "held": "held",
}


def statement_status(entries: Sequence[LedgerEntry], *, in_global_file: bool = False) -> str:
    """One word for where a statement is, from its ledger entries in time order.

    A success is final: once ``delivered`` or stored in the global file, a late record
    from another process (whose clock may lag) cannot make the statement look pending
    again. Otherwise the latest outcome speaks: ``dead_lettered`` until a ``replayed``,
    ``retrying`` while the adapter backs off, ``routed`` on its way to the partner,
    ``held`` while parked. ``in_global_file`` also holds when the global file has the
    statement but the ledger has not caught up with the builder's outcome yet.
    """
    outcomes = [entry.outcome for entry in entries]
    if "delivered" in outcomes:
        return "delivered"
    if in_global_file or "stored_global_file" in outcomes:
        return "in_global_file"
    for outcome in reversed(outcomes):
        status = _STATUS_OF_OUTCOME.get(outcome)
        if status is not None:
            return status
    return "unknown"


@dataclass(frozen=True, slots=True)
class StatementTrace:
    """Where a statement is and why: its routing trace and every recorded step.

    ``routing`` is the best trace known (see ``DeliveryLedger.trace``), with ``source``
    saying where it came from; ``global_file`` holds the global-file facts when the
    statement is in its cabinet's file. ``key`` and ``content_sha256`` say which statement
    it is when its id is shared (None when no record named its content);
    ``other_contents`` are the other contents its account sent under the same id.
    """

    statement_id: str
    cabinet_id: str
    iban: str | None
    status: str
    routing: dict[str, Any] | None
    entries: tuple[LedgerEntry, ...]
    global_file: GlobalFileEntry | None
    key: str | None = None
    content_sha256: str | None = None
    other_contents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatementSummary:
    """One of an IBAN's last statements, for the diagnosis."""

    statement_id: str
    status: str
    last_outcome: str
    last_at: datetime
    connector_id: str | None
    attempt: int | None
    detail: str | None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectorDeliveries:
    """One connector's deliveries since a time, for the operators' overview."""

    connector_id: str
    delivered: int
    dead_lettered: int
    retries: int
    last_error: str | None
    last_error_at: datetime | None

    @property
    def success_ratio(self) -> float | None:
        """Delivered over finished (delivered or dead-lettered); None before any."""
        finished = self.delivered + self.dead_lettered
        return self.delivered / finished if finished else None


class DeliveryLedger(ABC):
    """Every ``delivery.outcome/v1`` of every statement, recorded once.

    Idempotent: the same outcome record read twice (at-least-once) adds no second entry.
    """

    @abstractmethod
    async def record(self, outcomes: Sequence[OutcomeRecord]) -> int:
        """Record outcomes in one transaction; return how many were new."""

    @abstractmethod
    async def trace(
        self, actor: Actor, statement_id: str, key: str | None = None
    ) -> StatementTrace:
        """The statement's trace, for a user of its cabinet; ``UnknownStatement`` otherwise,
        whether nothing is known of it or it is another cabinet's (no existence oracle).

        Only the statements of the actor's cabinet count: when the id names several of
        them (two accounts, or a reused id), ``AmbiguousStatement`` lists them and ``key``
        (a statement key) chooses one; other cabinets' statements are never mentioned."""

    @abstractmethod
    async def operator_trace(
        self, statement_id: str, key: str | None = None
    ) -> StatementTrace | None:
        """The same trace for a So bank operator, whatever the cabinet (the operators'
        console and ``trace --operator``), a statement held for an unknown IBAN included
        (``cabinet_id`` empty); None if the ledger has never seen it;
        ``AmbiguousStatement`` when the id names several statements and ``key`` does not
        choose one."""

    @abstractmethod
    async def connector_deliveries(self, since: datetime) -> list[ConnectorDeliveries]:
        """Per connector with outcomes since ``since``: delivered, dead-lettered, retries
        and the latest failure's detail (an operator read, every cabinet)."""

    @abstractmethod
    async def recent_statements(
        self, actor: Actor, iban: str, limit: int = 5
    ) -> list[StatementSummary]:
        """The IBAN's last ``limit`` statements (latest first) and where each one is."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (only if the ledger owns its engine)."""
