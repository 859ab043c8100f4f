"""Console sessions keep no secret in clear; the lag chart is drawn from real samples."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from routing.domain.model import Actor, Profile
from routing.entrypoints.console.ops import LagHistory
from routing.entrypoints.console.sessions import SessionStore, csrf_matches
from routing.observability.monitor.model import GroupPartition, GroupStatus, MonitorSnapshot

ACTOR = Actor("usr-1", "cab-a", Profile.COLLABORATEUR)


def test_the_server_keeps_only_the_hash_of_a_session_id() -> None:
    sessions = SessionStore()
    session_id, session = sessions.open(ACTOR)
    assert sessions.get(session_id) == session
    assert session_id not in repr(vars(sessions))
    assert hashlib.sha256(session_id.encode()).hexdigest() in repr(vars(sessions))
    assert sessions.get("forged") is None and sessions.get(None) is None
    sessions.close(session_id)
    assert sessions.get(session_id) is None


def test_sessions_expire() -> None:
    sessions = SessionStore(ttl=-1)
    session_id, _ = sessions.open(None)
    assert sessions.get(session_id) is None


def test_csrf_tokens_must_match_exactly() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches("abc", None)
    assert not csrf_matches("", "")


def snapshot(at: datetime, lag: int) -> MonitorSnapshot:
    group = GroupStatus("g", "router", None, (GroupPartition("t", 0, 0, lag, lag),))
    return MonitorSnapshot(at, "p.", None, (), (), (group,))


def test_the_lag_chart_scales_its_samples_and_skips_repeats() -> None:
    history = LagHistory()
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for minute, lag in ((0, 0), (1, 10), (1, 10), (2, 5)):
        history.add(snapshot(start + timedelta(minutes=minute), lag))
    chart = history.svg(width=200, height=110)
    assert chart["count"] == 3 and chart["peak"] == 10 and chart["latest"] == 5
    assert chart["points"] == "0.0,110.0 100.0,10.0 200.0,60.0"
    assert LagHistory().svg()["points"] == ""
