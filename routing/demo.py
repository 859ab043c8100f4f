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
BOUND_ACD = "FR7630006000011234567890189"  # bound to acd (webhook), mandate approved
UNBOUND = "FR7630004008250001234567886"  # no connector: the global file
BOUND_QUADRA = "FR6010278060760001234F50152"  # bound to quadra (directory drop)
PENDING = "FR7630003012340005000123471"  # bound to acd, mandate pending: held
UNKNOWN = "FR7611315000010891234567896"  # never registered: held as unknown


@dataclass(frozen=True)
class DemoSeed:
    cabinet_id: str
    admin_token: str
    collaborator_token: str
    ibans: dict[str, str]  # IBAN -> what it demonstrates


async def seed_demo(store: StateStore) -> DemoSeed:
    """Create the demo cabinet, its users, connectors, IBANs and mandates."""
    await store.create_cabinet(CABINET, "Cabinet Démo")
    admin = await store.create_user(CABINET, Profile.ADMINISTRATEUR, "Alice (administrateur)")
    collaborator = await store.create_user(CABINET, Profile.COLLABORATEUR, "Bob (collaborateur)")
    admin_actor = await store.authenticate(admin.token)
    collaborator_actor = await store.authenticate(collaborator.token)
    for connector_id in ("acd", "quadra"):
        await store.add_cabinet_connector(admin_actor, CABINET, connector_id)
    for iban, client in (
        (BOUND_ACD, "boulangerie-martin"),
        (UNBOUND, "garage-dupont"),
        (BOUND_QUADRA, "sci-les-tilleuls"),
        (PENDING, "cafe-du-port"),
    ):
        await store.add_iban(iban, CABINET, client)
    for iban in (BOUND_ACD, UNBOUND, BOUND_QUADRA):
        await store.set_mandate(iban, MandateStatus.APPROVED)
    await store.bind_iban(collaborator_actor, BOUND_ACD, "acd")
    await store.bind_iban(collaborator_actor, BOUND_QUADRA, "quadra")
    await store.bind_iban(collaborator_actor, PENDING, "acd")
    return DemoSeed(
        cabinet_id=CABINET,
        admin_token=admin.token,
        collaborator_token=collaborator.token,
        ibans={
            BOUND_ACD: "bound to acd, mandate approved",
            UNBOUND: "no connector (« Aucun connecteur »), mandate approved",
            BOUND_QUADRA: "bound to quadra, mandate approved",
            PENDING: "bound to acd, mandate pending",
            UNKNOWN: "not registered at all",
        },
    )
