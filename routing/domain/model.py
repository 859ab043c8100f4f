"""Value objects of the domain: profiles, mandates, actors and the IBAN state snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class Profile(StrEnum):
    """A user's profile in their cabinet (FAQ: « Superviseur », « Administrateur », …)."""

    COLLABORATEUR = "collaborateur"
    SUPERVISEUR = "superviseur"
    ADMINISTRATEUR = "administrateur"

    @property
    def manages_connectors(self) -> bool:
        """Only a superviseur or an administrateur may add or remove a cabinet's connectors."""
        return self in (Profile.SUPERVISEUR, Profile.ADMINISTRATEUR)


class MandateStatus(StrEnum):
    """The client mandate's status at the bank. Only ``approved`` makes the IBAN active."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated user on whose behalf an operation runs."""

    user_id: str
    cabinet_id: str
    profile: Profile


@dataclass(frozen=True, slots=True)
class IbanState:
    """Everything routing needs to know about one IBAN (the ``iban.state/v1`` snapshot).

    ``connector_on_cabinet`` is the FAQ's first check, precomputed by whoever publishes
    the snapshot: for a bound IBAN, its connector is one of the cabinet's connectors; for
    an unbound IBAN, the cabinet has at least one connector.
    """

    iban: str
    cabinet_id: str
    client_ref: str | None
    connector_id: str | None
    connector_on_cabinet: bool
    mandate_status: MandateStatus
    version: int
    updated_at: datetime

    @property
    def active(self) -> bool:
        """FAQ: « le mandat est en statut approuvé et donc l'IBAN actif »."""
        return self.mandate_status is MandateStatus.APPROVED

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> IbanState:
        """The snapshot from anything that carries its fields by name (an event, a row).

        The one mapping of the snapshot's fields: the event, the database row and the API
        body all go through here or :meth:`as_fields`, so a new field cannot be forgotten
        in one copy. (The router's Table value, read on its hot path, is turned into a
        snapshot by keywords, which cannot forget a field either:
        ``routing.router.codec.state_from_table``.) Extra keys are ignored; the mandate
        status may come as its text.
        """
        snapshot = {name: values[name] for name in IBAN_STATE_FIELDS}
        snapshot["mandate_status"] = MandateStatus(snapshot["mandate_status"])
        return cls(**snapshot)

    def as_fields(self) -> dict[str, Any]:
        """The snapshot's fields by name, the inverse of :meth:`from_fields`."""
        return {name: getattr(self, name) for name in IBAN_STATE_FIELDS}


IBAN_STATE_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(IbanState))
"""The names of :class:`IbanState`'s fields, in declaration order."""
