"""The consumer-group and changelog names are contracts: operators and the monitor read them."""

from __future__ import annotations

import re

import pytest

from events.topics import Topics, changelog
from routing.services.ledger import ledger_pattern


def test_each_role_reads_in_its_own_group_under_the_prefix() -> None:
    topics = Topics(prefix="p")
    assert topics.group("router") == "p.router"
    assert topics.group("global-file") == "p.global-file"
    assert topics.group("ledger") == "p.ledger"
    assert topics.group("adapter", "acd") == "p.adapter.acd"


@pytest.mark.parametrize(("role", "connector_id"), [("adapter", None), ("ledger", "acd")])
def test_a_connector_id_names_the_adapter_group_and_only_it(
    role: str, connector_id: str | None
) -> None:
    with pytest.raises(ValueError, match="connector id"):
        Topics(prefix="p").group(role, connector_id)  # type: ignore[arg-type]


def test_the_router_tables_changelogs_are_named_after_its_app_id() -> None:
    assert changelog("p.router", "iban-state") == "p.router-iban-state-changelog"
    assert changelog("p.router", "held") == "p.router-held-changelog"


def test_the_ledger_reads_the_outcomes_held_global_file_and_partner_topics_by_pattern() -> None:
    """One list for the ledger's subscription and the monitor's expected lag."""
    topics = Topics(prefix="p.x")
    pattern = re.compile(ledger_pattern(topics))
    read = [*topics.ledger_reads, topics.partner("acd"), topics.partner("cegid-2")]
    assert [t for t in read if not pattern.match(t)] == []
    not_read = [
        topics.received,
        topics.iban_state,
        topics.invalid,
        topics.adapters_control,
        topics.partner_dlq("acd"),
        "p.x-deliveries.outcomes",  # the dots are literal
        Topics(prefix="other").outcomes,
    ]
    assert [t for t in not_read if pattern.match(t)] == []
