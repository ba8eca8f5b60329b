"""Revenue events: canonical identity, validation and idempotent ingestion.

The event hash
--------------
``event_hash = sha256("finsup-revenue-v1" US source US external_id US
amount_minor US currency US occurred_at US kind)`` in lowercase hex, where US
is the ASCII unit separator (0x1F) and the fields are normalised first:
source and kind lowercased and stripped, external_id stripped, amount in
integer minor units, currency upper-cased ISO 4217, occurred_at converted to
UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. "10.0" and "10.00", or 12:00+02:00 and
10:00Z, give the same hash; status is not part of it.

Status only moves forward: projected → confirmed → reversed (skipping ahead
is allowed). A message that would move an event back is written to the
transaction log and otherwise ignored.

A sale reversed, or a confirmed refund or chargeback with the sale's source
and external id, takes the funding from the earnings the sale backs: they are
held or clawed back in the same transaction (holds.py).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import audit_log, clock, db, holds
from finsup_dagster.ledger.audit_log import LogRecord
from finsup_dagster.ledger.bulk import TableStats, insert_rows, select_where_in
from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.files import Rejected
from finsup_dagster.ledger.journal import Account, Posting, debit_credit, post_entry
from finsup_dagster.ledger.money import normalise_currency, to_minor
from finsup_dagster.ledger.schema import revenue_events
from finsup_dagster.ledger.text import clean_text

KINDS = ("sale", "refund", "fee", "chargeback")
STATUSES = ("projected", "confirmed", "reversed")
STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}
FIELDS = ("source", "external_id", "amount", "currency", "occurred_at", "kind", "status")
HASH_VERSION = "finsup-revenue-v1"
_US = "\x1f"

# Confirming an event moves money between these accounts; reversing moves it back.
_CONFIRM_ACCOUNTS = {
    "sale": (Account.GATEWAY_CLEARING, Account.SALES),
    "refund": (Account.REFUNDS, Account.GATEWAY_CLEARING),
    "chargeback": (Account.CHARGEBACKS, Account.GATEWAY_CLEARING),
    "fee": (Account.GATEWAY_FEES, Account.GATEWAY_CLEARING),
}


def event_hash(
    source: str, external_id: str, amount_minor: int, currency: str, occurred_at: str, kind: str
) -> str:
    """SHA-256 over already-normalised fields (see the module docstring)."""
    body = _US.join(
        (HASH_VERSION, source, external_id, str(amount_minor), currency, occurred_at, kind)
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RevenueEvent:
    source: str
    external_id: str
    kind: str
    amount_minor: int
    currency: str
    occurred_at: str
    status: str
    event_hash: str

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.external_id, self.source, self.kind)


def _text(raw: Mapping[str, Any], name: str, lower: bool = False, max_len: int = 128) -> str:
    value = clean_text(raw.get(name), name, max_len=max_len)
    return value.lower() if lower else value


def parse_event(raw: Mapping[str, Any]) -> RevenueEvent:
    """Validates one record (strings in major units) into a canonical event."""
    source = _text(raw, "source", lower=True, max_len=64)
    external_id = _text(raw, "external_id")
    kind = _text(raw, "kind", lower=True)
    if kind not in KINDS:
        raise InvalidInput(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    currency = normalise_currency(raw.get("currency"))
    amount_minor = to_minor(raw.get("amount"), currency)
    occurred_at = clock.parse_instant(raw.get("occurred_at"), "occurred_at")
    status_raw = raw.get("status")
    status = "projected" if status_raw in (None, "") else _text(raw, "status", lower=True)
    if status not in STATUS_RANK:
        raise InvalidInput(f"status {status!r} is not one of {', '.join(STATUSES)}")
    digest = event_hash(source, external_id, amount_minor, currency, occurred_at, kind)
    return RevenueEvent(
        source, external_id, kind, amount_minor, currency, occurred_at, status, digest
    )


@dataclass
class IngestResult:
    inserted: int = 0
    unchanged: int = 0
    advanced: int = 0
    ignored_backward: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    confirmed_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    held: int = 0  # earnings held or flagged because this input took their funding
    clawed_back_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: IngestResult) -> None:
        self.inserted += other.inserted
        self.unchanged += other.unchanged
        self.advanced += other.advanced
        self.ignored_backward += other.ignored_backward
        self.rejected.extend(other.rejected)
        for cur, amount in other.confirmed_minor.items():
            self.confirmed_minor[cur] += amount
        self.held += other.held
        for cur, amount in other.clawed_back_minor.items():
            self.clawed_back_minor[cur] += amount

    def summary(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "unchanged": self.unchanged,
            "status_advanced": self.advanced,
            "ignored_backward": self.ignored_backward,
            "rejected": len(self.rejected),
            "newly_confirmed_minor": dict(sorted(self.confirmed_minor.items())),
            "earnings_held": self.held,
            "clawed_back_minor": dict(sorted(self.clawed_back_minor.items())),
        }


def ingest(
    engine: Engine,
    events: Iterable[tuple[int, RevenueEvent]],
    *,
    source_file: str | None = None,
    actor: str = "system",
    chunk_size: int = 20_000,
    originals: dict[int, Mapping[str, Any]] | None = None,
) -> IngestResult:
    """Upserts events, forward-only, a chunk per write transaction.

    ``events`` pairs each event with its row number in the input, so that a
    row refused here (a conflicting duplicate) can be reported by row.
    ``originals``, filled by whoever yields ``events``, maps the chunk's row
    numbers to the records as read: a refused row is reported with those
    (else with its parsed fields); it is emptied after each chunk.
    Re-running with the same input changes nothing.
    """
    total = IngestResult()
    iterator = iter(events)
    stats = TableStats(engine, revenue_events)
    done = 0
    while chunk := _next_chunk(iterator, chunk_size, done):
        done += len(chunk)
        with db.write(engine) as conn:
            part = _ingest_chunk(conn, chunk, source_file, actor)
        if originals is not None:
            part.rejected = [
                Rejected(r.row, r.reason, originals.get(r.row, r.record)) for r in part.rejected
            ]
            originals.clear()
        total.merge(part)
        stats.grew(part.inserted)
    return total


def _next_chunk(
    iterator: Iterator[tuple[int, RevenueEvent]], size: int, done: int
) -> list[tuple[int, RevenueEvent]]:
    try:
        return list(islice(iterator, size))
    except InvalidInput as exc:
        if not done:
            raise
        # Earlier chunks are committed: say so, and that the mended file may simply go in again.
        raise InvalidInput(
            f"{exc}; the {done} rows before it are in the books (ingestion is idempotent: "
            "ingest the mended file again)"
        ) from None


def _lookup(
    conn: Connection, external_ids: list[str]
) -> dict[tuple[str, str, str], tuple[str, str]]:
    rows = select_where_in(
        conn,
        revenue_events,
        ("external_id", "source", "kind", "event_hash", "status"),
        "external_id",
        external_ids,
    )
    return {(ext, src, kind): (digest, status) for ext, src, kind, digest, status in rows}


# An event's own columns, in RevenueEvent's field order after the hash.
EVENT_COLUMNS = (
    "event_hash",
    "source",
    "external_id",
    "kind",
    "amount_minor",
    "currency",
    "occurred_at",
    "status",
)
_INSERT_COLUMNS = (
    *EVENT_COLUMNS,
    "ingested_at",
    "status_changed_at",
    "source_file",
    "confirmed_entry_id",
)


def _ingest_chunk(
    conn: Connection, chunk: list[tuple[int, RevenueEvent]], source_file: str | None, actor: str
) -> IngestResult:
    result = IngestResult()
    existing = _lookup(conn, sorted({ev.external_id for _, ev in chunk}))
    new: dict[tuple[str, str, str], RevenueEvent] = {}
    advances: dict[str, tuple[RevenueEvent, str]] = {}  # hash -> (event, from status)
    log: list[LogRecord] = []

    for row, ev in chunk:
        key = ev.natural_key
        if key in new:
            prior_hash, prior_status = new[key].event_hash, new[key].status
        elif key in existing:
            prior_hash, prior_status = existing[key]
            if ev.event_hash in advances:
                prior_status = advances[ev.event_hash][0].status
        else:
            new[key] = ev
            continue
        if prior_hash != ev.event_hash:
            result.rejected.append(
                Rejected(
                    row,
                    f"conflicts with event {prior_hash[:12]}… (same source, "
                    "external_id and kind but a different amount, currency or time)",
                    _record(ev),
                ),
            )
            continue
        if STATUS_RANK[ev.status] > STATUS_RANK[prior_status]:
            if key in new:
                new[key] = ev  # not written yet: insert it with the later status
                result.unchanged += 1
            else:
                start = advances.get(ev.event_hash, (ev, prior_status))[1]
                advances[ev.event_hash] = (ev, start)
        elif STATUS_RANK[ev.status] < STATUS_RANK[prior_status]:
            result.ignored_backward += 1
            log.append(
                _event_log(
                    "revenue_status_backward_ignored",
                    ev,
                    actor,
                    {
                        "current": prior_status,
                        "offered": ev.status,
                        "row": row,
                        "file": source_file,
                    },
                )
            )
        else:
            result.unchanged += 1

    confirm = [ev for ev in new.values() if ev.status == "confirmed"]
    confirm += [
        ev for ev, start in advances.values() if start == "projected" and ev.status == "confirmed"
    ]
    reverse = [ev for ev, start in advances.values() if start == "confirmed"]
    confirm_entry = _post(conn, confirm, reverse=False)
    reverse_entry = _post(conn, reverse, reverse=True)
    for ev in confirm:
        result.confirmed_minor[ev.currency] += _signed(ev)
    for ev in reverse:
        result.confirmed_minor[ev.currency] -= _signed(ev)

    now = clock.now()
    if new:
        insert_rows(
            conn,
            revenue_events,
            _INSERT_COLUMNS,
            [
                (
                    ev.event_hash,
                    ev.source,
                    ev.external_id,
                    ev.kind,
                    ev.amount_minor,
                    ev.currency,
                    ev.occurred_at,
                    ev.status,
                    now,
                    now,
                    source_file,
                    confirm_entry if ev.status == "confirmed" else None,
                )
                for ev in new.values()
            ],
        )
        result.inserted = len(new)
        digest = hashlib.sha256("".join(sorted(ev.event_hash for ev in new.values())).encode())
        log.append(
            LogRecord(
                "revenue_events_ingested",
                "revenue_file",
                source_file or "-",
                actor=actor,
                detail={
                    "inserted": len(new),
                    "hashes_sha256": digest.hexdigest(),
                    "by_status": _count_by(new.values(), "status"),
                    "confirm_entry_id": confirm_entry,
                },
            )
        )

    for ev, start in advances.values():
        entry = (
            reverse_entry
            if start == "confirmed"
            else (confirm_entry if ev.status == "confirmed" else None)
        )
        values: dict[str, Any] = {"status": ev.status, "status_changed_at": now}
        if start == "confirmed":
            values["reversed_entry_id"] = entry
        elif ev.status == "confirmed":
            values["confirmed_entry_id"] = entry
        conn.execute(
            sa.update(revenue_events)
            .where(revenue_events.c.event_hash == ev.event_hash)
            .where(revenue_events.c.status == start)
            .values(**values)
        )
        log.append(
            _event_log(
                "revenue_status_advanced",
                ev,
                actor,
                {"from": start, "to": ev.status, "entry_id": entry, "file": source_file},
            )
        )
    result.advanced = len(advances)
    audit_log.append(conn, log)
    # A sale reversed, or a refund or chargeback confirmed that names one, takes the
    # funding from under the earnings it backs: hold, flag or claw them back now.
    gone = {ev.external_id for ev in reverse if ev.kind == "sale"}
    gone |= {ev.external_id for ev in confirm if ev.kind in ("refund", "chargeback")}
    if gone:
        held = holds.apply_holds(conn, actor, external_ids=sorted(gone))
        result.held += held.held + held.flagged
        for cur, amount in (held.clawed_back_minor or {}).items():
            result.clawed_back_minor[cur] += amount
    return result


def _signed(ev: RevenueEvent) -> int:
    return ev.amount_minor if ev.kind == "sale" else -ev.amount_minor


def _post(conn: Connection, events: list[RevenueEvent], reverse: bool) -> int | None:
    """One journal entry for all events of a chunk moving the same way."""
    if not events:
        return None
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for ev in events:
        sums[(ev.kind, ev.currency)] += ev.amount_minor
    lines: list[Posting] = []
    for (kind, currency), amount in sorted(sums.items()):
        debit, credit = _CONFIRM_ACCOUNTS[kind]
        if reverse:
            debit, credit = credit, debit
        lines += debit_credit(debit, credit, currency, amount)
    verb = "reversed" if reverse else "confirmed"
    return post_entry(
        conn,
        f"revenue_{verb}",
        f"{len(events)} revenue events {verb}",
        lines,
        reference=("revenue_events", events[0].event_hash),
    )


def _record(ev: RevenueEvent) -> dict[str, Any]:
    return {
        "source": ev.source,
        "external_id": ev.external_id,
        "kind": ev.kind,
        "amount_minor": ev.amount_minor,
        "currency": ev.currency,
        "occurred_at": ev.occurred_at,
        "status": ev.status,
    }


def _count_by(events: Iterable[RevenueEvent], attr: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for ev in events:
        counts[getattr(ev, attr)] += 1
    return dict(sorted(counts.items()))


def parse_one(row: int, raw: Mapping[str, Any]) -> RevenueEvent | Rejected:
    """One record validated on its own: a bad row never stops the good ones."""
    try:
        return parse_event(raw)
    except InvalidInput as exc:
        return Rejected(row, str(exc), raw)


def _event_log(action: str, ev: RevenueEvent, actor: str, detail: dict[str, Any]) -> LogRecord:
    """A transaction-log row about one revenue event, with its amount."""
    return LogRecord(
        action,
        "revenue_event",
        ev.event_hash,
        actor=actor,
        amount_minor=ev.amount_minor,
        currency=ev.currency,
        detail=detail,
    )
