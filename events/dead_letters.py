"""How a ``replayed`` outcome names the dead letters it closed (``delivery.outcome/v1``).

A dead letter is one record of ``statements.partner.<id>.dlq``, identified by its place
(partition and offset). Replaying it writes a ``replayed`` outcome whose ``detail`` says
``replayed from <dlq topic> dead letter(s) 0@12, 2@7``. The writer (``adapters.dlq``) and
the readers (``adapters.dlq`` for ``dlq list``, the delivery ledger for the monitor's open
count) share this one format, so it lives with the event it is part of.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["replay_detail", "replay_detail_prefix", "replayed_places"]

_PLACE = re.compile(r"(\d+)@(\d+)")


def replay_detail_prefix(dlq_topic: str) -> str:
    return f"replayed from {dlq_topic} dead letter(s) "


def replay_detail(dlq_topic: str, places: Collection[tuple[int, int]]) -> str:
    spots = ", ".join(f"{p}@{o}" for p, o in sorted(places))
    return replay_detail_prefix(dlq_topic) + spots


def replayed_places(detail: str | None, dlq_topic: str) -> list[tuple[int, int]]:
    """The places of ``dlq_topic`` a ``replayed`` outcome's detail names (none if it names
    another topic's, or is not a replay detail)."""
    prefix = replay_detail_prefix(dlq_topic)
    if not detail or not detail.startswith(prefix):
        return []
    return [(int(p), int(o)) for p, o in _PLACE.findall(detail[len(prefix):])]
