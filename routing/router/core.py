"""The router's logic, free of any transport: one record in, the records to produce out.

:class:`RouterCore` is called by the batch pump, for both input topics. It reads and writes
the two Tables through :class:`TableAccess` and returns :class:`~routing.router.emit.Out`
records; the caller produces them and waits for their acks before it lets the input
offset be committed. Every call is synchronous, so a caller that holds the router's lock
while calling it and while *issuing* the sends makes "update the Tables, decide, emit" one
atomic step per record, which is what keeps held statements in order (see below).

Rules kept here (DESIGN §4, §5):

* exactly one routed event per statement read: partner, global-file, held or invalid.
  Any failure while routing a record (parsing, a bug) ends in ``statements.invalid``
  with a precise reason; nothing is skipped;
* the Table write happens only once every output record of the step is built, so an
  exception half-way leaves the Tables as they were;
* ``iban.state``: versions older than or equal to the stored one are ignored; a null
  value (tombstone) deletes the state (held statements of that IBAN stay held);
* held statements are kept per IBAN, in arrival order, in the held Table. When the IBAN
  becomes routable they are released in that order, *before* anything newer is routed:
  - an ``iban.state`` update that makes the IBAN routable starts their release: at most
    ``release_chunk`` of them in its own step, the rest in the following steps
    (:meth:`RouterCore.continue_releases`, which the batch pump calls at the end of
    every step, and on its own while nothing else arrives). Each chunk is one step:
    its routed records, then the held entries' tombstones (``Stepper.issue``'s
    order), so a crash between chunks leaves the rest held, and the sweep of the
    next owner resumes the release; a release of 10,000 no longer stops every other
    IBAN's routing for the whole of it (docs/performance.md, "Releasing a backlog");
  - a new statement that finds held statements for its IBAN never overtakes them: if
    the IBAN is still not routable it is appended behind them (with its own decision's
    reason, e.g. ``mandate_pending``); if the IBAN is routable, it first releases all
    that remain (in its own step) and is routed after them. That branch happens when a
    release was missed (a connector added to the catalogue is process configuration and
    produces no ``iban.state`` event; a crash between the two changelog writes), so it
    repairs the situation instead of parking the statement behind a list nobody will
    release, and when a statement of the IBAN arrives while its release is in progress
    (that step then stalls the others as a release in one step did). This is why no
    statement is ever held with a reason like "earlier statements held":
    with the release done under the same lock as the routing, that state cannot last;
* a statement whose IBAN is bound to a connector that is not in the configured catalogue
  (hence has no topic) is *held* with reason ``connector_not_in_catalogue``: nothing is
  lost, an operator sees it in ``statements.held``, and it is released once the
  connector is configured (at the next statement, state update or restart sweep);
* the record key must be the statement's normalised IBAN, because the key decides the
  partition and the Table is co-partitioned with it: a statement keyed otherwise would
  be looked up in the wrong partition of the Table and held forever as unknown. It goes
  to ``statements.invalid`` instead, with the reason.

Logging never shows statement content; IBANs are masked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import structlog

from events.limits import (
    MAX_INVALID_COPY_BYTES,
    MAX_RECORD_BYTES,
    MAX_STATEMENT_BYTES,
    decoded_length,
)
from events.topics import Topics
from events.wire import SourceRecord, cut_reason, invalid_key, statement_id_of_large
from routing.broker.partitioner import default_partition
from routing.domain.decide import Decision, Destination, decide
from routing.domain.iban import key_difference, mask_iban
from routing.domain.model import IbanState
from routing.observability import metrics
from routing.router.codec import (
    RECEIVED_SCHEMA,
    InvalidInput,
    SourceRef,
    decode_key,
    dumps,
    encode_invalid,
    key_fault,
    parse_state,
    state_from_table,
    state_to_table,
    statement_fields_of,
)
from routing.router.emit import Out, build_routed
from routing.router.state_cache import StateCache

log = structlog.get_logger("routing.router")

RELEASE_CHUNK = 200
"""Held statements released per routing step once their IBAN becomes routable. A step of
200 took ~20 ms in the benchmark (10,000 in 1.0 s on Tansu, acknowledgements included), so
the other IBANs' statements wait about one such step, where a release in one step made
them wait for all of it (10,000: ~0.5 s);
larger chunks release faster and delay the others more (docs/performance.md, "Releasing
a backlog")."""

HeldEntry = dict[str, Any]
"""One held statement: ``raw`` (the received JSON text), ``partition``, ``offset``,
``reason`` and ``held_at``. The source offset lets a redelivered statement (after a crash
before its offset was committed) be recognised instead of being held twice."""


def held_key(iban: str, partition: int, offset: int) -> str:
    """The held Table's key of one held statement: ``iban|partition|offset``.

    One record per held statement, not one list per IBAN: a list rewritten whole on every
    change made changelog traffic grow with the square of its length, and once larger than
    the broker's message size it could no longer be written at all.
    """
    return f"{iban}|{partition}|{offset}"


class HeldIndex:
    """Per IBAN, the keys of its held statements in release order.

    Kept in memory beside the held Table and rebuilt from the Table's keys after every
    recovery (:meth:`from_keys`): the order is the source ``(partition, offset)``, which
    is arrival order, since all of an IBAN's statements are read from its own partition.
    """

    def __init__(self) -> None:
        self._by_iban: dict[str, dict[tuple[int, int], str]] = {}

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> HeldIndex:
        index = cls()
        parsed: list[tuple[str, int, int, str]] = []
        for key in keys:
            iban, partition, offset = key.rsplit("|", 2)
            parsed.append((iban, int(partition), int(offset), key))
        for entry in sorted(parsed):
            index.add(*entry)
        return index

    def add(self, iban: str, partition: int, offset: int, key: str) -> None:
        self._by_iban.setdefault(iban, {})[(partition, offset)] = key

    def keys_of(self, iban: str, limit: int | None = None) -> list[str]:
        """The IBAN's keys in release order; only the first ``limit`` if given."""
        keys = self._by_iban.get(iban, {}).values()
        return list(keys if limit is None else islice(keys, limit))

    def contains(self, iban: str, partition: int, offset: int) -> bool:
        return (partition, offset) in self._by_iban.get(iban, {})

    def has(self, iban: str) -> bool:
        return iban in self._by_iban

    def drop(self, iban: str, count: int | None = None) -> list[str]:
        """Forget the IBAN's first ``count`` keys (all by default); the keys forgotten."""
        held = self._by_iban.get(iban)
        if held is None:
            return []
        if count is None or count >= len(held):
            return list(self._by_iban.pop(iban).values())
        first = list(islice(held, count))
        return [held.pop(position) for position in first]

    def ibans(self) -> list[str]:
        return list(self._by_iban)


@dataclass(frozen=True, slots=True)
class Record:
    """A concrete SourceRecord (a held statement being released, tests)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TableAccess(Protocol):
    """The two Tables, with the changelog partition of every write given explicitly.

    The partition is the one of the record being processed: both input topics are keyed
    by IBAN with the same partition count, so it is the IBAN's partition either way.
    Held statements are one Table record each (``held_key``); ``get_held`` lists an
    IBAN's in release order (the first ``limit`` only, if given) and ``delete_held``
    removes them all, or the first ``count`` (a tombstone each): a release in chunks.
    """

    def get_state(self, iban: str) -> dict[str, Any] | None: ...

    def put_state(self, iban: str, value: dict[str, Any], partition: int) -> None: ...

    def delete_state(self, iban: str, partition: int) -> None: ...

    def get_held(self, iban: str, limit: int | None = None) -> list[HeldEntry] | None: ...

    def has_held(self, iban: str) -> bool: ...

    def is_held(self, iban: str, partition: int, offset: int) -> bool: ...

    def put_held(self, iban: str, entry: HeldEntry, partition: int) -> None: ...

    def delete_held(self, iban: str, partition: int, count: int | None = None) -> None: ...

    def held_ibans(self) -> Iterable[str]: ...


@dataclass(frozen=True, slots=True)
class _Ref:
    """What decide() reads of a statement: its IBAN."""

    iban: str


class RouterCore:
    """Routes statements and applies IBAN states; returns what to produce."""

    def __init__(
        self,
        *,
        topics: Topics,
        catalogue: Mapping[str, object],
        tables: TableAccess,
        detected_by: str = "router",
        max_statement_bytes: int = MAX_STATEMENT_BYTES,
        release_chunk: int = RELEASE_CHUNK,
    ) -> None:
        self.topics = topics
        self.max_statement_bytes = max_statement_bytes
        self.catalogue = frozenset(catalogue)
        self.tables = tables
        self.detected_by = detected_by
        self.stats: Counter[str] = Counter()
        # Per IBAN, the snapshot and decision of the Table value's version: not rebuilt
        # and re-checked for every statement (decide() depends on the state only).
        self._states = StateCache()
        # Held statements per input partition and reason, for the held gauge: counted
        # from the Table once per assignment (``sweep``), then kept by ``_hold`` and
        # ``_release``, so the gauge never reads the Table (nor the changelog) again.
        self._held_counts: dict[int, Counter[str]] = {}
        self._held_reasons: set[str] = set()
        self._held_gauges: dict[str, Any] = {}
        self.release_chunk = release_chunk
        # IBANs whose release is in progress, with their partition, in the order their
        # release started. In memory only: the held Table is the truth, and the sweep at
        # each assignment finds any release left unfinished (a rebalance, a crash).
        self._releasing: dict[str, int] = {}

    # --- held statements, counted ----------------------------------------------------------

    def keep_held_counts(self, partitions: Iterable[int]) -> None:
        """Forget the held counts of partitions this router no longer owns (a rebalance);
        the sweep of each owned partition counts it again from the Table."""
        owned = set(partitions)
        for partition in list(self._held_counts):
            if partition not in owned:
                del self._held_counts[partition]
        self._releasing.clear()  # the sweep of each owned partition starts them again
        self._publish_held()

    def held_by_reason(self) -> dict[str, int]:
        """Statements held now in this router's partitions, per reason."""
        total: Counter[str] = Counter()
        for counts in self._held_counts.values():
            total.update(counts)
        return {reason: n for reason, n in total.items() if n > 0}

    def _count_held(self, partition: int, tally: Mapping[str, int], sign: int = 1) -> None:
        """Count held (``sign`` 1) or released (-1) statements, ``tally`` per reason, and
        move the gauge of their reasons by as much: a hold or a release touches only its own
        reasons' series, not every reason's (the gauge is set whole only on assignment,
        ``_publish_held``)."""
        counts = self._held_counts.setdefault(partition, Counter())
        for reason, n in tally.items():
            counts[reason] += sign * n
            self._held_reasons.add(reason)
            gauge = self._held_gauges.get(reason)
            if gauge is None:
                gauge = self._held_gauges[reason] = metrics.HELD_STATEMENTS.labels(reason)
            gauge.inc(sign * n)

    def _publish_held(self) -> None:
        """Set ``statement_router_held_statements{reason}`` from the counts, whole: after an
        assignment's sweep counted the Table, or once partitions were given up. Every series
        the gauge has is set, not only this core's reasons: the gauge is the process's, and
        from here on it moves by this core's increments (a router restarted in the same
        process starts from its own counts). Every reason seen keeps its series (at 0 once
        released), so a graph falls to zero instead of vanishing."""
        now = self.held_by_reason()
        self._held_reasons.update(now)
        shown = {
            sample.labels["reason"]
            for metric in metrics.HELD_STATEMENTS.collect()
            for sample in metric.samples
        }
        for reason in self._held_reasons | shown:
            metrics.HELD_STATEMENTS.labels(reason).set(now.get(reason, 0))

    # --- lookups ------------------------------------------------------------------------

    def forget_cached_states(self) -> None:
        """Drop the snapshot cache (partitions revoked or assigned: the Tables may change
        under it; the catalogue changed: the decisions depend on it)."""
        self._states.clear()

    def lookup(self, iban: str) -> tuple[IbanState | None, Decision]:
        """The IBAN's state and the decision it gives its statements."""
        value = self.tables.get_state(iban)
        if value is None:
            return None, self._decide(iban, None)
        cached = self._states.get(iban, value["version"])
        if cached is not None:
            return cached
        state = state_from_table(iban, value)
        decision = self._decide(iban, state)
        self._states.put(iban, state, decision)
        return state, decision

    def state_of(self, iban: str) -> IbanState | None:
        return self.lookup(iban)[0]

    def _decide(self, iban: str, state: IbanState | None) -> Decision:
        return decide(_Ref(iban), state, self.catalogue)

    # --- statements ---------------------------------------------------------------------

    def on_statement(self, rec: SourceRecord, now: str) -> list[Out]:
        """Route one ``statements.received`` record; never raises."""
        self.stats["statements"] += 1
        try:
            return self._route_statement(rec, now)
        except InvalidInput as exc:
            return self._invalid(rec, exc.reason, exc.statement_id, now)
        except Exception as exc:  # a bug must not skip the statement: park it in invalid
            return self._failed(rec, exc, now)

    def _route_statement(self, rec: SourceRecord, now: str) -> list[Out]:
        size = len(rec.value) if rec.value is not None else 0
        if size > MAX_RECORD_BYTES:
            # Before parsing (a 20 MB value is not parsed) and before forwarding (nor copied).
            raise InvalidInput(
                f"statement record of {size} bytes is over the limit of {MAX_RECORD_BYTES} "
                f"bytes for a statements.received record (a statement of at most "
                f"{self.max_statement_bytes} bytes of content, in base64 with its fields; "
                "MAX_STATEMENT_BYTES)",
                statement_id_of_large(rec.value),
            )
        forward = self._misplaced(rec)
        if forward is not None:
            return [forward]
        fields = statement_fields_of(rec.value)
        content = decoded_length(fields["content_b64"])
        if content > self.max_statement_bytes:
            raise InvalidInput(
                f"statement of {content} bytes of content is over the limit of "
                f"{self.max_statement_bytes} bytes (MAX_STATEMENT_BYTES)",
                fields["statement_id"],
            )
        iban = fields["iban"]
        key = decode_key(rec.key)
        if key != iban:
            shown = key_fault(rec.key) or key_difference(key or "", iban)
            raise InvalidInput(
                f"the record's key is not the statement's normalised IBAN "
                f"{mask_iban(iban)} ({shown}): statements.received must be keyed by the "
                "normalised IBAN (it decides the partition, and the IBAN state is "
                "co-partitioned)",
                fields["statement_id"],
            )
        state, decision = self.lookup(iban)
        if decision.destination is Destination.HELD:
            return self._hold(rec, fields, decision, state, now)
        # Built before any release: if it cannot be (too large), nothing else changes.
        routed = self._routed(fields, decision, state, now)
        if self.tables.has_held(iban):
            return self._release(iban, state, decision, rec.partition, now) + routed
        return routed

    def _misplaced(self, rec: SourceRecord) -> Out | None:
        """The forward of a statement read off its key's partition, else None.

        The state of an IBAN lives in the partition its key hashes to with murmur2 (Kafka's
        Java client, aiokafka, faust), so a statement placed elsewhere, as librdkafka's
        default CRC32 partitioner does, would be looked up where its state is not and held
        for ever as unknown. It is forwarded, unchanged, to the right partition of
        ``statements.received``, whose owner routes it with every guarantee: the repartition
        step (docs/events.md). A record without a key cannot be placed; it goes on to be
        refused as invalid.
        """
        if rec.key is None or rec.key == b"" or rec.topic != self.topics.received:
            return None
        right = default_partition(rec.key, self.topics.partitions)
        if right == rec.partition:
            return None
        self.stats["forwarded"] += 1
        metrics.STATEMENTS_FORWARDED.inc()
        return Out(self.topics.received, rec.key, rec.value, right)

    def _routed(
        self,
        fields: dict[str, Any],
        decision: Decision,
        state: IbanState | None,
        now: str,
        *,
        released: bool = False,
    ) -> list[Out]:
        """The routed records of one statement; ``InvalidInput`` if one breaks the size rule.

        A statement within the limit always fits, but an envelope may not: the cabinet and
        ``client_ref`` come from ``iban.state``, which any system may publish. Such a record
        is never sent (the broker would refuse it, and a failed send stops the router): the
        statement goes to ``statements.invalid`` instead, with the sizes.
        """
        outs = build_routed(fields, decision, state, self.topics, now, released=released)
        for out in outs:
            size = len(out.value) if out.value is not None else 0
            if size > MAX_RECORD_BYTES:
                raise InvalidInput(
                    f"the {decision.destination} record built for this statement would be "
                    f"{size} bytes, over the limit of {MAX_RECORD_BYTES} bytes for any record "
                    "(its envelope is too large: the cabinet id or client_ref of the IBAN's "
                    "state)",
                    fields["statement_id"],
                )
        self.stats[decision.destination] += 1
        return outs

    def _hold(
        self,
        rec: SourceRecord,
        fields: dict[str, Any],
        decision: Decision,
        state: IbanState | None,
        now: str,
    ) -> list[Out]:
        assert rec.value is not None
        iban = fields["iban"]
        if self.tables.is_held(iban, rec.partition, rec.offset):
            # Redelivered after a crash that came before the offset commit: it is already
            # held (the Table was recovered from its changelog); re-emit only the audit.
            self.stats["held_redelivered"] += 1
            return self._routed(fields, decision, state, now)
        # The contract's fields only, re-encoded: a record's unknown fields are not kept, so
        # the entry stays within the size rule whatever the producer added.
        entry = {
            "raw": dumps({"schema": RECEIVED_SCHEMA, **fields}).decode("utf-8"),
            "partition": rec.partition,
            "offset": rec.offset,
            "reason": decision.reason,
            "held_at": now,
        }
        outs = self._routed(fields, decision, state, now)
        self.tables.put_held(iban, entry, rec.partition)
        self._count_held(rec.partition, {decision.reason: 1})
        return outs

    def _release(
        self,
        iban: str,
        state: IbanState | None,
        decision: Decision,
        partition: int,
        now: str,
        limit: int | None = None,
    ) -> list[Out]:
        """Route the held statements of ``iban`` in order, every one or the first ``limit``,
        then forget them; the release is over once none is left."""
        held = self.tables.get_held(iban, limit) or []
        outs: list[Out] = []
        for entry in held:
            raw = entry["raw"].encode("utf-8")
            source = Record(self.topics.received, entry["partition"], entry["offset"], None, raw)
            try:
                fields = statement_fields_of(raw)
                outs += self._routed(fields, decision, state, now, released=True)
            except InvalidInput as exc:  # the contract changed under held data; too large
                outs += self._invalid(
                    source, f"held statement: {exc.reason}", exc.statement_id, now
                )
        self.stats["released"] += len(held)
        self._count_held(partition, Counter(_held_reason(e) for e in held), -1)
        self.tables.delete_held(iban, partition, None if limit is None else len(held))
        done = not self.tables.has_held(iban)
        if done:
            self._releasing.pop(iban, None)
        log.info(
            "held_statements_released",
            iban=mask_iban(iban),
            count=len(held),
            release_done=done,
            destination=decision.destination.value,
            cabinet_id=state.cabinet_id if state is not None else None,
            connector_id=decision.connector_id,
        )
        return outs

    # --- IBAN states --------------------------------------------------------------------

    def on_state(self, rec: SourceRecord, now: str) -> list[Out]:
        """Apply one ``iban.state`` record, releasing held statements; never raises."""
        self.stats["states"] += 1
        try:
            return self._apply_state(rec, now)
        except InvalidInput as exc:
            self.stats["states_invalid"] += 1
            return self._invalid(rec, exc.reason, None, now)
        except Exception as exc:
            return self._failed(rec, exc, now)

    def _apply_state(self, rec: SourceRecord, now: str) -> list[Out]:
        key = decode_key(rec.key)
        if not key:
            raise InvalidInput(
                f"iban.state record with {key_fault(rec.key)}: the key must be the IBAN"
            )
        if rec.value is None:
            if self.tables.get_state(key) is not None:
                self.tables.delete_state(key, rec.partition)
                self._states.drop(key)
                self.stats["states_deleted"] += 1
            return []
        event = parse_state(rec.value)
        if event.iban != key:
            raise InvalidInput(
                f"the record's key is not the snapshot's normalised IBAN "
                f"{mask_iban(event.iban)} ({key_difference(key, event.iban)}): iban.state "
                "must be keyed by the normalised IBAN"
            )
        current = self.tables.get_state(key)
        if current is not None and event.version <= current["version"]:
            self.stats["states_stale"] += 1
        else:
            self.tables.put_state(key, state_to_table(event), rec.partition)
            self._states.drop(key)
            self.stats["states_applied"] += 1
        # Checked even for a stale version: a redelivered update whose release was lost
        # in a crash must still release.
        return self.release_if_routable(key, rec.partition, now)

    def release_if_routable(self, iban: str, partition: int, now: str) -> list[Out]:
        """Start releasing ``iban``'s held statements if its state now routes them
        somewhere: the first ``release_chunk`` now, the rest by :meth:`continue_releases`."""
        if not self.tables.has_held(iban):
            self._releasing.pop(iban, None)
            return []
        state, decision = self.lookup(iban)
        if decision.destination is Destination.HELD:
            self._releasing.pop(iban, None)
            return []
        self._releasing[iban] = partition
        return self._release(iban, state, decision, partition, now, self.release_chunk)

    def releasing_partitions(self) -> frozenset[int]:
        """The partitions with a release in progress (the pump gives them steps)."""
        return frozenset(self._releasing.values())

    def continue_releases(self, now: str, partitions: Container[int] | None = None) -> list[Out]:
        """The next ``release_chunk`` statements of the releases in progress, in order.

        Called by the pump at the end of every step (and in steps of its own while no
        record arrives), so a large release is spread over many steps with other IBANs'
        statements routed in between; ``partitions``: only those (a transaction is one
        partition's). An IBAN whose state stopped routing its statements (the mandate
        withdrawn mid-release) keeps the rest held. A failure keeps them held too: the
        next event of the IBAN, or the next sweep, tries again.
        """
        outs: list[Out] = []
        budget = self.release_chunk
        for iban, partition in list(self._releasing.items()):
            if budget <= 0:
                break
            if partitions is not None and partition not in partitions:
                continue
            released = self.stats["released"]
            try:
                outs += self.release_if_routable(iban, partition, now)
            except Exception as exc:
                self._releasing.pop(iban, None)
                self.stats["errors"] += 1
                log.error("held_release_failed", iban=mask_iban(iban), error=type(exc).__name__)
            budget -= self.stats["released"] - released
        return outs

    def sweep(self, partitions: set[int], now: str) -> list[Out]:
        """Start releasing what became routable without an event (a connector added to the
        catalogue), or whose release a crash or a rebalance interrupted.

        Called once the Tables are recovered for ``partitions``, before new statements; it
        also counts their held statements for the held gauge (the one full read of them).
        """
        outs: list[Out] = []
        for partition in partitions:
            self._held_counts[partition] = Counter()
        for iban in list(self.tables.held_ibans()):
            held = self.tables.get_held(iban)
            if not held or held[0]["partition"] not in partitions:
                continue
            self._held_counts[held[0]["partition"]].update(_held_reason(e) for e in held)
            try:
                outs += self.release_if_routable(iban, held[0]["partition"], now)
            except Exception as exc:  # keep them held; the next event retries
                self._releasing.pop(iban, None)
                self.stats["errors"] += 1
                log.error("held_sweep_failed", iban=mask_iban(iban), error=type(exc).__name__)
        self._publish_held()
        return outs

    # --- failures -----------------------------------------------------------------------

    def _invalid(
        self, rec: SourceRecord, reason: str, statement_id: str | None, now: str
    ) -> list[Out]:
        self.stats["invalid"] += 1
        log.warning(
            "record_invalid",
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            statement_id=statement_id,
            reason=cut_reason(reason),
            payload_bytes=len(rec.value) if rec.value is not None else None,
        )
        value = encode_invalid(
            value=rec.value,
            key=rec.key,
            reason=reason,
            source=SourceRef(rec.topic, rec.partition, rec.offset),
            detected_at=now,
            statement_id=statement_id,
            detected_by=self.detected_by,
        )
        if rec.value is not None and len(rec.value) > MAX_INVALID_COPY_BYTES:
            metrics.PARKED.labels("router", "referred").inc()
        return [Out(self.topics.invalid, invalid_key(rec.key), value)]

    def _failed(self, rec: SourceRecord, exc: Exception, now: str) -> list[Out]:
        self.stats["errors"] += 1
        # The exception text may quote the statement: the log gets its type only, the
        # invalid event (which carries the raw bytes anyway) gets the message.
        log.error(
            "record_failed",
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            error=type(exc).__name__,
        )
        reason = f"internal error while routing: {type(exc).__name__}: {exc}"
        return self._invalid(rec, reason, None, now)


def _held_reason(entry: HeldEntry) -> str:
    return str(entry.get("reason") or "unknown")


Handler = Callable[[SourceRecord, str], list[Out]]
