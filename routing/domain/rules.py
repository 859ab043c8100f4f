"""The FAQ's rules on who may change what (DESIGN §2, rules 1–4).

The store loads the facts under a lock and calls these inside its transaction, so every
adapter enforces the same rules with the same messages.
"""

from __future__ import annotations

from collections.abc import Collection

from routing.domain.errors import (
    ConnectorNotOnCabinet,
    ConnectorStillBound,
    NotFound,
    OtherCabinet,
    ProfileNotAllowed,
    UnknownConnector,
)
from routing.domain.model import Actor


def ensure_own_cabinet(actor: Actor, cabinet_id: str) -> None:
    """A user acts only inside their own cabinet."""
    if actor.cabinet_id != cabinet_id:
        raise OtherCabinet(cabinet_id)


def ensure_visible(actor: Actor, owner_cabinet_id: str, unknown: NotFound) -> None:
    """Another cabinet's IBAN or statement is answered exactly as an unknown one.

    A 403 there would tell any user that the IBAN is registered at So bank under another
    firm, which is a client relationship. ``unknown`` is the error an absent resource
    raises (``UnknownIban``, ``UnknownStatement``), so both answers are the same bytes.
    Cabinet-addressed operations keep ``ensure_own_cabinet``: there the 403 does not
    depend on whether the other cabinet exists.
    """
    if actor.cabinet_id != owner_cabinet_id:
        raise unknown


def ensure_known_connector(connector_id: str, catalogue: Collection[str]) -> None:
    if connector_id not in catalogue:
        raise UnknownConnector(connector_id)


def ensure_can_manage_connectors(actor: Actor, cabinet_id: str, action: str) -> None:
    """Rules 1 and 2: only a superviseur or an administrateur adds or removes connectors."""
    ensure_own_cabinet(actor, cabinet_id)
    if not actor.profile.manages_connectors:
        raise ProfileNotAllowed(
            f"only a superviseur or an administrateur can {action} a connector; "
            f"you are a {actor.profile.value}"
        )


def ensure_removable(cabinet_id: str, connector_id: str, bound_ibans: int) -> None:
    """Rule 2: a connector leaves a cabinet only when none of its IBANs is bound to it."""
    if bound_ibans:
        raise ConnectorStillBound(connector_id, cabinet_id, bound_ibans)


def ensure_can_bind(
    actor: Actor,
    iban_cabinet_id: str,
    connector_id: str | None,
    cabinet_connectors: Collection[str],
) -> None:
    """Rules 3 and 4: any profile binds or unbinds, to a connector the cabinet has added.

    The caller has made the IBAN visible first (``ensure_visible``)."""
    ensure_own_cabinet(actor, iban_cabinet_id)
    if connector_id is not None and connector_id not in cabinet_connectors:
        raise ConnectorNotOnCabinet(connector_id, iban_cabinet_id)


def connector_on_cabinet(connector_id: str | None, cabinet_connectors: Collection[str]) -> bool:
    """The FAQ's first check, as published in ``iban.state``."""
    if connector_id is None:
        return bool(cabinet_connectors)
    return connector_id in cabinet_connectors
