"""Value objects of the domain: profiles, mandates, actors and the IBAN state snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


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
