"""The demo state: one cabinet that shows every case of the FAQ.

It is seeded through the same store operations (and rules) as real use, so the demo
cannot show something the system would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.domain.model import MandateStatus, Profile
from routing.ports import StateStore

CABINET = "cab-demo"

# Accounts of the sample bank files (examples/bank-files/), derived from their RIBs.
BOUND_ACD = "FR7630006000011234567890189"  # CFONB: bound to acd, mandate approved
UNBOUND = "FR7630004008250001234567886"  # CFONB: no connector: the global file
BOUND_QUADRA = "FR6010278060760001234F50152"  # CFONB: bound to quadra, approved
PENDING = "FR7630003036200002041234504"  # camt.053: bound to acd, mandate pending: held
UNBOUND_CAMT = "FR1420041010050500013M02606"  # camt.053: no connector: the global file
BOUND_MT940 = "FR3330002005500000157841Z25"  # MT940: bound to acd, approved
UNKNOWN = "FR7611315000010800123456714"  # MT940: never registered: held as unknown

CASES = {
    BOUND_ACD: "bound to acd, mandate approved",
    UNBOUND: "no connector (« Aucun connecteur »), mandate approved",
    BOUND_QUADRA: "bound to quadra, mandate approved",
    PENDING: "bound to acd, mandate pending",
    UNBOUND_CAMT: "no connector, mandate approved",
    BOUND_MT940: "bound to acd, mandate approved",
    UNKNOWN: "not registered at all",
}


@dataclass(frozen=True)
class DemoSeed:
    cabinet_id: str
    admin_token: str
    collaborator_token: str
    ibans: dict[str, str]  # IBAN -> what it demonstrates


#: The connectors the demo adds to its cabinet and binds IBANs to: the catalogue must
#: declare them (the shipped one does; ``up`` checks a ``CONNECTORS_FILE`` first).
DEMO_CONNECTORS = ("acd", "quadra")


async def seed_demo(store: StateStore) -> DemoSeed:
    """Create the demo cabinet, its users, connectors, IBANs and mandates."""
    await store.create_cabinet(CABINET, "Cabinet Démo")
    admin = await store.create_user(CABINET, Profile.ADMINISTRATEUR, "Alice (administrateur)")
    collaborator = await store.create_user(CABINET, Profile.COLLABORATEUR, "Bob (collaborateur)")
    admin_actor = await store.authenticate(admin.token)
    collaborator_actor = await store.authenticate(collaborator.token)
    for connector_id in DEMO_CONNECTORS:
        await store.add_cabinet_connector(admin_actor, CABINET, connector_id)
    for iban, client in (
        (BOUND_ACD, "boulangerie-martin"),
        (UNBOUND, "garage-dupont"),
        (BOUND_QUADRA, "sci-les-tilleuls"),
        (PENDING, "cafe-du-port"),
        (UNBOUND_CAMT, "cabinet-medical-roux"),
        (BOUND_MT940, "transports-leroy"),
    ):
        await store.add_iban(iban, CABINET, client)
    for iban in (BOUND_ACD, UNBOUND, BOUND_QUADRA, UNBOUND_CAMT, BOUND_MT940):
        await store.set_mandate(iban, MandateStatus.APPROVED)
    for iban, connector_id in ((BOUND_ACD, "acd"), (BOUND_QUADRA, "quadra"), (PENDING, "acd"),
                               (BOUND_MT940, "acd")):
        await store.bind_iban(collaborator_actor, iban, connector_id)
    return DemoSeed(
        cabinet_id=CABINET,
        admin_token=admin.token,
        collaborator_token=collaborator.token,
        ibans=dict(CASES),
    )
