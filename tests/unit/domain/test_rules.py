"""The FAQ's rules on who may change what (DESIGN §2, rules 1–4)."""

from __future__ import annotations

import pytest

from routing.domain import rules
from routing.domain.errors import (
    ConnectorNotOnCabinet,
    ConnectorStillBound,
    OtherCabinet,
    ProfileNotAllowed,
    UnknownConnector,
)
from routing.domain.model import Actor, Profile


def actor(profile: Profile, cabinet: str = "cab-a") -> Actor:
    return Actor(user_id="u1", cabinet_id=cabinet, profile=profile)


@pytest.mark.parametrize("profile", [Profile.SUPERVISEUR, Profile.ADMINISTRATEUR])
def test_supervisors_and_administrators_manage_connectors(profile: Profile) -> None:
    rules.ensure_can_manage_connectors(actor(profile), "cab-a", "add")


def test_a_collaborateur_cannot_add_or_remove_a_connector() -> None:
    for action in ("add", "remove"):
        with pytest.raises(ProfileNotAllowed) as refusal:
            rules.ensure_can_manage_connectors(actor(Profile.COLLABORATEUR), "cab-a", action)
        assert refusal.value.message == (
            f"only a superviseur or an administrateur can {action} a connector; "
            "you are a collaborateur"
        )


def test_nobody_manages_another_cabinet() -> None:
    with pytest.raises(OtherCabinet, match="not in cabinet cab-b"):
        rules.ensure_can_manage_connectors(actor(Profile.ADMINISTRATEUR), "cab-b", "add")


def test_removal_is_refused_while_ibans_are_bound_and_says_how_many() -> None:
    rules.ensure_removable("cab-a", "acd", 0)
    with pytest.raises(ConnectorStillBound) as refusal:
        rules.ensure_removable("cab-a", "acd", 3)
    assert refusal.value.bound_ibans == 3
    assert "connector acd is still bound to 3 IBANs of cabinet cab-a" in refusal.value.message
    with pytest.raises(ConnectorStillBound, match="bound to 1 IBAN of"):
        rules.ensure_removable("cab-a", "acd", 1)


@pytest.mark.parametrize("profile", list(Profile))
def test_every_profile_binds_to_a_connector_of_the_cabinet(profile: Profile) -> None:
    rules.ensure_can_bind(actor(profile), "cab-a", "acd", {"acd"})
    rules.ensure_can_bind(actor(profile), "cab-a", None, set())


def test_binding_needs_the_connector_on_the_cabinet() -> None:
    with pytest.raises(ConnectorNotOnCabinet) as refusal:
        rules.ensure_can_bind(actor(Profile.COLLABORATEUR), "cab-a", "cegid", {"acd"})
    assert refusal.value.message.startswith(
        "connector cegid has not been added to cabinet cab-a"
    )


def test_binding_an_iban_of_another_cabinet_is_refused() -> None:
    with pytest.raises(OtherCabinet):
        rules.ensure_can_bind(actor(Profile.ADMINISTRATEUR), "cab-b", None, set())


def test_unknown_connector() -> None:
    with pytest.raises(UnknownConnector, match="connector zzz is not in the connector catalogue"):
        rules.ensure_known_connector("zzz", {"acd"})


def test_connector_on_cabinet_is_the_faq_first_check() -> None:
    assert rules.connector_on_cabinet("acd", {"acd"}) is True
    assert rules.connector_on_cabinet("acd", {"cegid"}) is False
    assert rules.connector_on_cabinet(None, {"cegid"}) is True
    assert rules.connector_on_cabinet(None, set()) is False
