"""The FAQ troubleshooting checklist, and the routing decision built on the same checks.

``run_checks`` is the one place that reads an ``IbanState``. ``decide`` (where does this
statement go?) and ``diagnose`` (why do my statements not reach my production tool?) are
both thin readings of its result, so they can never disagree.

After the FAQ's three checks comes a fourth, So bank's own: the IBAN's connector must be
in the configured connector catalogue (the router has no topic for one that is not, so
its statements are held). Both readings take the catalogue, so a statement held for that
reason is never diagnosed as "everything is fine, contact support".
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from routing.domain.model import IbanState, MandateStatus


class CheckName(StrEnum):
    """The FAQ's checks, in the order the FAQ asks to make them."""

    CONNECTOR_ON_CABINET = "connector_on_cabinet"
    IBAN_BOUND = "iban_bound"
    MANDATE_APPROVED = "mandate_approved"
    CONNECTOR_CONFIGURED = "connector_configured"


class Destination(StrEnum):
    PARTNER = "partner"
    GLOBAL_FILE = "global-file"
    HELD = "held"


class Verdict(StrEnum):
    """What to do next, after the checklist (the first failing check decides)."""

    UNKNOWN_IBAN = "unknown_iban"
    ADD_CONNECTOR_TO_CABINET = "add_connector_to_cabinet"
    BIND_IBAN = "bind_iban"
    APPROVE_MANDATE = "approve_mandate"
    CONNECTOR_NOT_CONFIGURED = "connector_not_configured"
    CONTACT_SUPPORT = "contact_support"


@dataclass(frozen=True, slots=True)
class Check:
    name: CheckName
    ok: bool
    message_fr: str
    message_en: str


class StatementRef(Protocol):
    """What ``decide`` needs to know of a statement."""

    @property
    def iban(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one statement goes, and the trace of the checks that led there."""

    destination: Destination
    reason: str
    connector_id: str | None
    checks: tuple[Check, ...]
    state_version: int | None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    checks: tuple[Check, ...]
    verdict: Verdict
    message_fr: str
    message_en: str


_MANDATE_FR = {
    MandateStatus.PENDING: "en attente",
    MandateStatus.APPROVED: "approuvé",
    MandateStatus.REJECTED: "refusé",
    MandateStatus.REVOKED: "révoqué",
}


def _connector_check(connector_on_cabinet: bool, connector_id: str | None) -> Check:
    name = CheckName.CONNECTOR_ON_CABINET
    if connector_on_cabinet:
        return Check(
            name,
            True,
            "Un connecteur est associé au cabinet.",
            "A connector is associated with the cabinet.",
        )
    if connector_id is None:
        return Check(
            name,
            False,
            "Aucun connecteur n'est associé au cabinet : un superviseur ou un administrateur "
            "doit l'ajouter sur la page « Cabinet(s) ».",
            "No connector is associated with the cabinet: a superviseur or an administrateur "
            "must add one on the Cabinet page.",
        )
    return Check(
        name,
        False,
        f"Le connecteur {connector_id} de l'IBAN n'est pas associé au cabinet.",
        f"The IBAN's connector {connector_id} is not associated with the cabinet.",
    )


def _binding_check(connector_id: str | None, active: bool) -> Check:
    """Check 2. Unbound, the statements go to the global file only once the IBAN is active:
    with the mandate not approved they are held (check 3 says so), and saying both would
    contradict it."""
    name = CheckName.IBAN_BOUND
    if connector_id is not None:
        return Check(
            name,
            True,
            f"L'IBAN est associé au connecteur {connector_id}.",
            f"The IBAN is bound to connector {connector_id}.",
        )
    if not active:
        return Check(
            name,
            False,
            "L'IBAN n'est associé à aucun connecteur : une fois le mandat approuvé, ses "
            "relevés iront dans le fichier global des relevés du cabinet.",
            "The IBAN is not bound to a connector: once the mandate is approved, its "
            "statements will go to the cabinet's global file.",
        )
    return Check(
        name,
        False,
        "L'IBAN n'est associé à aucun connecteur : ses relevés vont dans le fichier global "
        "des relevés du cabinet.",
        "The IBAN is not bound to a connector: its statements go to the cabinet's global file.",
    )


def _mandate_check(status: MandateStatus) -> Check:
    name = CheckName.MANDATE_APPROVED
    if status is MandateStatus.APPROVED:
        return Check(
            name,
            True,
            "Le mandat est approuvé : l'IBAN est actif.",
            "The mandate is approved: the IBAN is active.",
        )
    return Check(
        name,
        False,
        f"Le mandat est {_MANDATE_FR[status]} : l'IBAN n'est pas actif et ses relevés sont "
        "mis en attente.",
        f"The mandate is {status.value}: the IBAN is not active and its statements are held.",
    )


def _catalogue_check(connector_id: str | None, configured: bool, active: bool) -> Check:
    name = CheckName.CONNECTOR_CONFIGURED
    if connector_id is None:
        return Check(
            name,
            True,
            "Aucun connecteur à configurer"
            + (" : les relevés vont dans le fichier global." if active else "."),
            "No connector to configure"
            + (": statements go to the global file." if active else "."),
        )
    if configured:
        return Check(
            name,
            True,
            f"Le connecteur {connector_id} est configuré chez So bank.",
            f"Connector {connector_id} is configured at So bank.",
        )
    return Check(
        name,
        False,
        f"Le connecteur {connector_id} n'est pas configuré chez So bank : les relevés sont "
        "mis en attente jusqu'à sa configuration.",
        f"Connector {connector_id} is not configured at So bank: statements are held until it is.",
    )


Checks = tuple[Check, Check, Check, Check]


def run_checks(state: IbanState, catalogue: Container[str]) -> Checks:
    """The FAQ's three checks in its order (connector on cabinet, IBAN bound, mandate),
    then whether the IBAN's connector is in the configured ``catalogue``."""
    configured = state.connector_id is None or state.connector_id in catalogue
    return _checks(state.connector_on_cabinet, state.connector_id, state.mandate_status, configured)


@lru_cache(maxsize=4_096)
def _checks(
    connector_on_cabinet: bool, connector_id: str | None, status: MandateStatus, configured: bool
) -> Checks:
    # The checks read these fields only, and they take few distinct values (the
    # connector catalogue times the mandate statuses), so they are built once per
    # combination: the router asks for them for each new IBAN it sees.
    active = status is MandateStatus.APPROVED
    return (
        _connector_check(connector_on_cabinet, connector_id),
        _binding_check(connector_id, active),
        _mandate_check(status),
        _catalogue_check(connector_id, configured, active),
    )


def decide(statement: StatementRef, state: IbanState | None, catalogue: Container[str]) -> Decision:
    """Route one statement: to its partner, to the cabinet's global file, or held.

    - unknown IBAN, or mandate not approved: held until the IBAN becomes active;
    - bound, and the connector is on the cabinet: the partner (FAQ: « automatiquement
      envoyés vers votre partenaire »);
    - bound to a connector the cabinet no longer has: held, never the global file, since a
      bound IBAN's statements « ne seront plus présents dans le fichier global »;
    - unbound: the cabinet's global file;
    - bound to a connector missing from ``catalogue`` (the configured connectors): held,
      ``connector_not_in_catalogue``, until it is configured.
    """
    if state is None:
        return Decision(Destination.HELD, "unknown_iban", None, (), None)
    if state.iban != statement.iban:
        raise ValueError("decide() was given the state of another IBAN")
    checks = run_checks(state, catalogue)
    connector_ok, bound, active, configured = (check.ok for check in checks)
    if not active:
        return Decision(
            Destination.HELD, f"mandate_{state.mandate_status.value}", None, checks, state.version
        )
    if not bound:
        return Decision(Destination.GLOBAL_FILE, "unbound", None, checks, state.version)
    if not connector_ok:
        return Decision(
            Destination.HELD, "connector_not_on_cabinet", state.connector_id, checks, state.version
        )
    if not configured:
        return Decision(
            Destination.HELD,
            "connector_not_in_catalogue",
            state.connector_id,
            checks,
            state.version,
        )
    return Decision(Destination.PARTNER, "bound", state.connector_id, checks, state.version)


_VERDICTS = {
    CheckName.CONNECTOR_ON_CABINET: (
        Verdict.ADD_CONNECTOR_TO_CABINET,
        "Ajoutez le connecteur au cabinet (page « Cabinet(s) », bouton « + »).",
        "Add the connector to the cabinet (Cabinet page, '+' button).",
    ),
    CheckName.IBAN_BOUND: (
        Verdict.BIND_IBAN,
        "Associez l'IBAN à un connecteur (page « IBAN », bouton « + »).",
        "Bind the IBAN to a connector (IBAN page, '+' button).",
    ),
    CheckName.MANDATE_APPROVED: (
        Verdict.APPROVE_MANDATE,
        "Le mandat doit être approuvé par la banque pour que l'IBAN soit actif.",
        "The mandate must be approved by the bank for the IBAN to become active.",
    ),
    CheckName.CONNECTOR_CONFIGURED: (
        Verdict.CONNECTOR_NOT_CONFIGURED,
        "Le connecteur n'est pas encore configuré chez So bank : vos relevés sont conservés "
        "et lui seront envoyés dès sa configuration. Contactez le support So bank.",
        "The connector is not configured at So bank yet: your statements are kept and will "
        "be sent to it once it is. Contact So bank's support.",
    ),
}


def diagnose(state: IbanState | None, catalogue: Container[str]) -> Diagnosis:
    """The FAQ checklist for « mes relevés ne sont pas récupérés dans mon outil de production »."""
    if state is None:
        return Diagnosis(
            (),
            Verdict.UNKNOWN_IBAN,
            "Cet IBAN n'est pas connu de So bank : aucun mandat n'a été enregistré.",
            "This IBAN is unknown to So bank: no mandate has been registered for it.",
        )
    checks = run_checks(state, catalogue)
    for check in checks:
        if not check.ok:
            verdict, fr, en = _VERDICTS[check.name]
            return Diagnosis(checks, verdict, fr, en)
    return Diagnosis(
        checks,
        Verdict.CONTACT_SUPPORT,
        "Tous les points sont validés : si rien n'arrive dans votre outil de production, "
        "contactez le support.",
        "Every check passes: if nothing reaches your production tool, contact support.",
    )
