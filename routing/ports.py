"""The ports the application core talks to. Adapters implement them; the composition
root (``routing.bootstrap``) picks the implementation.

Every method that acts for a user takes the ``Actor`` and enforces the FAQ rules
(``routing.domain.rules``) itself, inside one transaction, so the API and the CLI cannot
forget a check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


class StateStore(ABC):
    """The state store: cabinets, users, cabinet connectors, IBANs, mandates, the outbox.

    Each mutating call is one transaction that also appends the resulting
    ``iban.state/v1`` snapshot(s) to the outbox, so the published state can never miss a
    committed change nor show an uncommitted one.
    """

    # --- back office (So bank operators, the bank's mandate feed) -----------------------
    @abstractmethod
    async def create_cabinet(self, cabinet_id: str, name: str) -> None:
        """Create a cabinet; ``AlreadyExists`` if the id is taken."""

    @abstractmethod
    async def create_user(
        self, cabinet_id: str, profile: Profile, name: str | None = None
    ) -> CreatedUser:
        """Create a user and return a fresh bearer token (stored hashed)."""

    @abstractmethod
    async def authenticate(self, token: str) -> Actor:
        """The user holding ``token``; ``AuthenticationFailed`` otherwise."""

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
        """One IBAN of the actor's cabinet; ``UnknownIban`` or ``OtherCabinet`` otherwise."""

    # --- the outbox, for the relay ------------------------------------------------------
    @abstractmethod
    async def pending_outbox(self, limit: int) -> Sequence[OutboxMessage]:
        """The oldest unpublished messages, in commit order."""

    @abstractmethod
    async def mark_published(self, ids: Sequence[int]) -> None:
        """Mark messages published once the broker acknowledged them."""

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

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
