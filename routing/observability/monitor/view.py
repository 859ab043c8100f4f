"""Rendering a monitor snapshot as rich tables: pure formatting, no broker I/O.

Kept apart from the sampler (``routing.observability.monitor.sampler``) so the tables can
be tested on a hand-made snapshot and the collection code stays free of presentation.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from routing.observability.monitor.model import MonitorSnapshot


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def topics_table(snap: MonitorSnapshot) -> Table:
    window = f" (rates over {snap.rate_window:.1f}s)" if snap.rate_window else " (no rates yet)"
    table = Table(title=f"Topics{window}", title_justify="left", expand=False)
    table.add_column("topic")
    table.add_column("p", justify="right")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    table.add_column("records", justify="right")
    table.add_column("rate", justify="right")
    for topic in snap.topics:
        name = topic.topic.removeprefix(f"{snap.topic_prefix}.")
        for index, part in enumerate(topic.partitions):
            table.add_row(
                name if index == 0 else "",
                str(part.partition),
                _num(part.start_offset),
                _num(part.end_offset),
                _num(part.records),
                _rate(part.rate),
                end_section=index == len(topic.partitions) - 1,
            )
    for missing in snap.missing_topics:
        table.add_row(Text(missing.removeprefix(f"{snap.topic_prefix}."), style="red"),
                      "", "", "", Text("missing", style="red"), "")
    return table


def groups_table(snap: MonitorSnapshot) -> Table:
    total = sum(g.lag for g in snap.groups)
    table = Table(title=f"Consumer groups (total lag {total:,})", title_justify="left")
    table.add_column("group")
    table.add_column("role")
    table.add_column("topic")
    table.add_column("p", justify="right")
    table.add_column("committed", justify="right")
    table.add_column("end", justify="right")
    table.add_column("lag", justify="right")
    for group in snap.groups:
        role = group.role + (f" {group.connector_id}" if group.connector_id else "")
        if not group.committed:
            role += " (never committed)"
        for index, part in enumerate(group.partitions):
            lag = Text(_num(part.lag), style="yellow" if part.lag else "green")
            table.add_row(
                group.group_id if index == 0 else "",
                role if index == 0 else "",
                part.topic.removeprefix(f"{snap.topic_prefix}."),
                str(part.partition),
                _num(part.committed_offset),
                _num(part.end_offset),
                lag,
                end_section=index == len(group.partitions) - 1,
            )
    return table


def connectors_table(snap: MonitorSnapshot) -> Table:
    table = Table(title="Per connector", title_justify="left")
    table.add_column("connector")
    table.add_column("held now", justify="right")
    table.add_column("dead letters open", justify="right")
    table.add_column("dead letters total", justify="right")
    table.add_column("worker")
    for connector in snap.connectors or ():
        worker = Text(connector.worker or "-")
        if connector.worker in ("stopped", "disabled"):
            worker = Text.assemble((connector.worker, "bold red"),
                                   f": {connector.worker_reason or ''}"[:120])
        table.add_row(
            connector.connector_id,
            _num(connector.held),
            _num(connector.dead_letters_open),
            _num(connector.dead_letters),
            worker,
        )
    return table


def summary(snap: MonitorSnapshot) -> Text:
    held = snap.held
    if held is None:
        held_text = "held: not counted"
    elif not held.available:
        held_text = f"held now: unknown ({held.source} does not exist: the router never ran)"
    else:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(held.by_reason.items()))
        held_text = (
            f"held now: {held.current} statement(s) on {held.ibans} IBAN(s)"
            + (f" [{reasons}]" if reasons else "")
            + f", {held.by_connector.get(None, 0)} without a connector"
        )
    audit = _num(held.audit_events) if held is not None else "-"
    return Text(
        f"{held_text}; parked ever (statements.held records): {audit}; "
        f"invalid: {_num(snap.invalid)}"
    )


def render(snap: MonitorSnapshot, error: str | None = None) -> RenderableType:
    """Everything the monitor shows, as one renderable (for ``print`` or ``Live``)."""
    parts: list[RenderableType] = [
        Text(f"statement-router monitor — {snap.topic_prefix} — "
             f"{snap.taken_at.strftime('%Y-%m-%d %H:%M:%S %Z')}", style="bold"),
    ]
    if error:
        parts.append(Text(f"last refresh failed: {error} (showing the previous sample)",
                          style="red"))
    parts += [topics_table(snap), groups_table(snap)]
    if snap.has_counts:
        parts += [connectors_table(snap), summary(snap)]
    return Group(*parts)


def _short(snap: MonitorSnapshot, topic: str) -> str:
    return topic.removeprefix(f"{snap.topic_prefix}.")


def roles_table(snap: MonitorSnapshot) -> Table:
    """One row per consumer group: its role, lag, and the rate of what it reads."""
    rates = {t.topic: t.rate for t in snap.topics}
    table = Table(title="Roles", title_justify="left")
    table.add_column("role")
    table.add_column("reads")
    table.add_column("lag", justify="right")
    table.add_column("in rate", justify="right")
    for group in snap.groups:
        role = group.role + (f" {group.connector_id}" if group.connector_id else "")
        if not group.committed:
            role += " (idle)"
        read = sorted({p.topic for p in group.partitions})
        known = [rates.get(t) for t in read]
        rate = None if not known or any(r is None for r in known) else sum(
            r for r in known if r is not None
        )
        lag = Text(_num(group.lag), style="yellow" if group.lag else "green")
        table.add_row(role, ", ".join(_short(snap, t) for t in read), lag, _rate(rate))
    return table


def compact(snap: MonitorSnapshot, error: str | None = None) -> RenderableType:
    """The watch's default: fits a 40-row terminal (roles, connectors, held by reason).

    One row per role instead of one per partition: with six partitions a topic took six
    rows, and lag, connectors and "held now" fell off the bottom of the screen.
    """
    parts: list[RenderableType] = [
        Text(f"statement-router monitor — {snap.topic_prefix} — "
             f"{snap.taken_at.strftime('%Y-%m-%d %H:%M:%S %Z')} (--full for every partition)",
             style="bold"),
    ]
    if error:
        parts.append(Text(f"last refresh failed: {error} (showing the previous sample)",
                          style="red"))
    parts.append(roles_table(snap))
    if snap.has_counts:
        parts += [connectors_table(snap), summary(snap)]
    if snap.missing_topics:
        missing = ", ".join(_short(snap, t) for t in snap.missing_topics)
        parts.append(Text(f"missing topics: {missing}", style="red"))
    return Group(*parts)


def only(
    snap: MonitorSnapshot, topics: list[str] | None = None, groups: list[str] | None = None
) -> MonitorSnapshot:
    """The snapshot narrowed to some topics and/or consumer groups (names with or
    without the topic prefix; a group matches its id or its role, e.g. ``router``)."""

    def full(name: str) -> str:
        return name if name.startswith(f"{snap.topic_prefix}.") else f"{snap.topic_prefix}.{name}"

    narrowed = snap
    if topics:
        wanted = {full(t) for t in topics}
        narrowed = replace(
            narrowed,
            topics=tuple(t for t in narrowed.topics if t.topic in wanted),
            missing_topics=tuple(t for t in narrowed.missing_topics if t in wanted),
            groups=tuple(
                replace(g, partitions=tuple(p for p in g.partitions if p.topic in wanted))
                for g in narrowed.groups
                if any(p.topic in wanted for p in g.partitions)
            ),
        )
    if groups:
        wanted_groups = set(groups)
        narrowed = replace(
            narrowed,
            groups=tuple(
                g for g in narrowed.groups
                if g.group_id in wanted_groups or g.role in wanted_groups
                or (g.connector_id is not None and f"{g.role} {g.connector_id}" in wanted_groups)
            ),
        )
    return narrowed


def render_error(message: str) -> RenderableType:
    """What the watch shows before any sample succeeded."""
    return Text(f"statement-router monitor: {message}; retrying", style="red")
