"""Statuses coming back from the providers: one mapping, one way into the books.

A webhook and a status poll say the same thing in different envelopes: "this
item is now X" in the provider's own word. Both are turned into a
:class:`StatusReport` by the provider's module and handed to
:func:`apply_report`, so the mapping provider status → item status lives in
one table here and a status can reach the books only one way.

Why reports are applied by rank and not in arrival order: webhooks come late,
twice, or out of order, and polls race them. ``state_machine.ITEM_TRANSITIONS``
only ever moves up ``ITEM_RANK``, so a report of a status at or below where the
item already is changes nothing (a repeat is ``unchanged``, a late earlier
status is ``ignored`` and logged), and any interleaving of one item's reports
ends in the same status with the same balances.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from finsup_dagster.ledger import audit_log, clock, seals, state_machine
from finsup_dagster.ledger.schema import gateway_events, payout_batches, payout_items

# The provider's word → finsup's item status. PayPal's words are its
# transaction_status values; Payoneer's are the sandbox's (docs/gateways.md).
ITEM_STATUS_FROM_PROVIDER: dict[str, dict[str, str]] = {
    "paypal": {
        "NEW": "processing",
        "PENDING": "processing",
        "ONHOLD": "held",
        "UNCLAIMED": "unclaimed",
        "SUCCESS": "paid",
        "FAILED": "failed",
        "RETURNED": "returned",
        "BLOCKED": "blocked",
        "REFUNDED": "refunded",
        "DENIED": "denied",
        "CANCELED": "cancelled",
        "REVERSED": "returned",
    },
    "payoneer": {
        "Pending": "processing",
        "In Process": "processing",
        "On Hold": "held",
        "Pending Payee Approval": "unclaimed",
        "Transferred": "paid",
        "Failed": "failed",
        "Returned": "returned",
        "Blocked": "blocked",
        "Refunded": "refunded",
        "Declined": "denied",
        "Cancelled": "cancelled",
    },
}

# What apply_report can come to. The first two leave a webhook to be applied again later.
RETRY_LATER = frozenset({"unknown_item"})
OUTCOMES = frozenset({"applied", "unchanged", "ignored", "unknown_status", *RETRY_LATER})

# Header names never stored: credentials a provider or a proxy may pass along.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
_SECRET_WORDS = ("secret", "token", "password")


@dataclass(frozen=True)
class StatusReport:
    """One provider's word about one item, from a webhook, a poll or a cancel."""

    gateway: str  # "paypal" | "payoneer": the batch's payout method
    provider_status: str  # the provider's own word: "SUCCESS", "Transferred", ...
    item_id: int | None  # finsup's item id, when the provider echoes it back
    gateway_item_id: str | None  # the provider's item id
    source: str  # "webhook" | "poll" | "cancel"
    event_row_id: int | None = None  # the gateway_events row it came from, once stored
    event_id: str | None = None  # the provider's event id it came in (webhooks)


def item_status_for(gateway: str, provider_status: str) -> str | None:
    """finsup's item status for a provider's word, or None when the word is not known."""
    table = ITEM_STATUS_FROM_PROVIDER.get(gateway, {})
    if provider_status in table:
        return table[provider_status]
    # PayPal documents upper case; tolerate a provider that changes case, never spelling.
    folded = {word.casefold(): status for word, status in table.items()}
    return folded.get(provider_status.casefold())


def derived_batch_status(item_statuses: list[str]) -> str | None:
    """A submitted batch's status from its items; None while any item is still committed."""
    classes = [state_machine.ITEM_MONEY_CLASS[s] for s in item_statuses]
    if not classes or "committed" in classes:
        return None
    if all(c == "paid" for c in classes):
        return "completed"
    return "failed" if "paid" not in classes else "partially_completed"


@dataclass
class KnownItems:
    """The items a group of reports names, read in one query (``find_items``).

    A key looked up and not found maps to None: the item is not in the books, and
    no other query is needed to say so. An item this transaction writes is forgotten,
    so a later report in the same group reads it again as it now stands.
    """

    by_id: dict[tuple[str, int], Row[Any] | None] = field(default_factory=dict)
    by_gateway_id: dict[tuple[str, str], Row[Any] | None] = field(default_factory=dict)

    def lookup(self, report: StatusReport) -> tuple[bool, Row[Any] | None]:
        """(whether this map answers for the report's item, the item or None)."""
        if report.item_id is not None:
            key = (report.gateway, report.item_id)
            return key in self.by_id, self.by_id.get(key)
        if report.gateway_item_id:
            gkey = (report.gateway, report.gateway_item_id)
            return gkey in self.by_gateway_id, self.by_gateway_id.get(gkey)
        return True, None

    def forget(self, item_id: int, gateway_key: tuple[str, str] | None = None) -> None:
        """Drops the item's entries; ``gateway_key`` too, when this write gives the item
        that gateway id (looked up earlier in the group, it was found to be no item)."""
        if gateway_key is not None:
            self.by_gateway_id.pop(gateway_key, None)
        for key in [k for k, row in self.by_id.items() if row is not None and row.id == item_id]:
            del self.by_id[key]
        for gkey in [
            k for k, row in self.by_gateway_id.items() if row is not None and row.id == item_id
        ]:
            del self.by_gateway_id[gkey]


def find_items(conn: Connection, reports: Iterable[StatusReport]) -> KnownItems:
    """Every item the reports name, in one query, as ``_find_item`` would find each."""
    ids, gateway_ids, known = _items_wanted(reports)
    if not ids and not gateway_ids:
        return known
    rows: Iterable[Any]
    if _items_plain(conn):
        rows = _find_items_sql(conn, ids, gateway_ids)
    else:
        wanted = [
            sa.and_(payout_batches.c.method == g, payout_items.c.id.in_(sorted(v)))
            for g, v in ids.items()
        ] + [
            sa.and_(payout_batches.c.method == g, payout_items.c.gateway_item_id.in_(sorted(v)))
            for g, v in gateway_ids.items()
        ]
        rows = conn.execute(
            sa.select(payout_items, payout_batches.c.method.label("batch_method"))
            .join(payout_batches, payout_batches.c.id == payout_items.c.batch_id)
            .where(sa.or_(*wanted))
            .order_by(payout_items.c.id.desc())  # the lowest id last: it wins a shared id
        )
    _fill(known, ids, gateway_ids, rows)
    return known


def stored_and_items(
    conn: Connection, keys: Iterable[tuple[str, str]], reports: Iterable[StatusReport]
) -> tuple[set[tuple[str, str]], KnownItems]:
    """``stored_among(keys)`` and ``find_items(reports)``, the same two queries and answers.

    On PostgreSQL both go in one pipeline flush (psycopg's pipeline mode) and come back
    in one answer: one round trip a group instead of two. Read in the caller's
    transaction, under its writer lock, in this order, exactly as one after the other.
    """
    wanted = sorted({(g, e[:128]) for g, e in keys})
    reports = list(reports)
    if conn.dialect.name != "postgresql" or not wanted or not _items_plain(conn):
        return stored_among(conn, wanted), find_items(conn, reports)
    ids, gateway_ids, known = _items_wanted(reports)
    if not ids and not gateway_ids:
        return stored_among(conn, wanted), known
    from psycopg.rows import namedtuple_row

    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as held, driver.cursor(row_factory=namedtuple_row) as items:
        with driver.pipeline():
            held.execute(*_stored_sql("%s", wanted))
            items.execute(*_items_sql("%s", ids, gateway_ids))
        seen = {(str(g), str(e)) for g, e in held.fetchall()}
        # Rows answer to the column names as _find_items_sql's do, with the same values.
        _fill(known, ids, gateway_ids, items.fetchall())
    return seen, known


def _items_wanted(
    reports: Iterable[StatusReport],
) -> tuple[dict[str, set[int]], dict[str, set[str]], KnownItems]:
    ids: dict[str, set[int]] = {}
    gateway_ids: dict[str, set[str]] = {}
    for r in reports:
        if r.item_id is not None:
            ids.setdefault(r.gateway, set()).add(r.item_id)
        elif r.gateway_item_id:
            gateway_ids.setdefault(r.gateway, set()).add(r.gateway_item_id)
    known = KnownItems()
    for g, v in ids.items():
        known.by_id.update({(g, i): None for i in v})
    for g, w in gateway_ids.items():
        known.by_gateway_id.update({(g, i): None for i in w})
    return ids, gateway_ids, known


def _fill(
    known: KnownItems,
    ids: Mapping[str, set[int]],
    gateway_ids: Mapping[str, set[str]],
    rows: Iterable[Any],
) -> None:
    for row in rows:
        if row.id in ids.get(row.batch_method, ()):
            known.by_id[(row.batch_method, row.id)] = row
        if row.gateway_item_id in gateway_ids.get(row.batch_method, ()):
            known.by_gateway_id[(row.batch_method, row.gateway_item_id)] = row


_PLAIN: dict[str, bool] = {}


def _items_plain(conn: Connection) -> bool:
    """Whether Core would convert none of payout_items' columns on this dialect (text and
    integers), so the driver's values are the ones Core would give."""
    dialect = conn.dialect
    if dialect.name not in _PLAIN:
        _PLAIN[dialect.name] = all(
            c.type.dialect_impl(dialect).result_processor(dialect, None) is None
            for c in payout_items.columns
        )
    return _PLAIN[dialect.name]


def _find_items_sql(
    conn: Connection, ids: Mapping[str, set[int]], gateway_ids: Mapping[str, set[str]]
) -> Iterable[Any]:
    """``find_items``'s query as driver SQL: built and compiled once per group, Core's
    statement cost more than the lookup. Rows still answer to the column names."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    return conn.exec_driver_sql(*_items_sql(mark, ids, gateway_ids))


def _items_sql(
    mark: str, ids: Mapping[str, set[int]], gateway_ids: Mapping[str, set[str]]
) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, wanted in (("id", ids), ("gateway_item_id", gateway_ids)):
        for gateway, values in wanted.items():
            marks = ", ".join([mark] * len(values))
            clauses.append(f"(b.method = {mark} AND i.{column} IN ({marks}))")
            params += [gateway, *sorted(values)]
    columns = ", ".join(f"i.{c.name}" for c in payout_items.columns)
    return (
        f"SELECT {columns}, b.method AS batch_method FROM payout_items AS i"
        " JOIN payout_batches AS b ON b.id = i.batch_id"
        f" WHERE {' OR '.join(clauses)} ORDER BY i.id DESC",  # lowest id last: it wins
        tuple(params),
    )


def apply_report(
    conn: Connection, report: StatusReport, actor: str, known: KnownItems | None = None
) -> str:
    """Applies one report inside the caller's write transaction; returns its outcome.

    ``known``: the group's items read beforehand (``find_items``), so the item is not
    looked up again; an item it does not answer for is read as usual.

    ``applied``: the item moved (postings, earnings and log through the state
    machine) and its batch was derived again. ``unchanged``: the item is
    already there. ``ignored``: the report would move the item back or sideways;
    logged as ``item_status_ignored``, the books otherwise unchanged.
    ``unknown_status``: the provider's word is not in the mapping.
    ``unknown_item``: no item of this gateway matches, or it has not been
    submitted yet (a webhook can overtake our own record of the submission).
    """
    target = item_status_for(report.gateway, report.provider_status)
    answered, item = known.lookup(report) if known is not None else (False, None)
    if not answered:
        item = _find_item(conn, report)
    if item is None or item.status == "pending":
        return "unknown_item"
    if target is None:
        _log_ignored(conn, item, report, actor, "status not in the mapping")
        return "unknown_status"
    if report.gateway_item_id and item.gateway_item_id not in (None, report.gateway_item_id):
        _log_ignored(conn, item, report, actor, "gateway item id differs from the one recorded")
        return "ignored"
    values: dict[str, Any] = {"provider_status": report.provider_status[:32]}
    gateway_key = None
    if report.gateway_item_id and item.gateway_item_id is None:
        values["gateway_item_id"] = report.gateway_item_id
        gateway_key = (report.gateway, report.gateway_item_id)
    if target == item.status:
        if any(getattr(item, k) != v for k, v in values.items()):
            if known is not None:
                known.forget(int(item.id), gateway_key)
            conn.execute(
                sa.update(payout_items).where(payout_items.c.id == item.id).values(**values)
            )
        return "unchanged"
    if target not in state_machine.ITEM_TRANSITIONS[item.status]:
        _log_ignored(conn, item, report, actor, f"{item.status} cannot become {target}")
        return "ignored"
    if known is not None:
        known.forget(int(item.id), gateway_key)
    conn.execute(sa.update(payout_items).where(payout_items.c.id == item.id).values(**values))
    state_machine.move_item(
        conn,
        int(item.id),
        target,
        actor,
        reason=f"{report.source}: {report.gateway} {report.provider_status}",
    )
    derive_batch(conn, item.batch_id, actor)
    return "applied"


def derive_batch(conn: Connection, batch_id: str, actor: str) -> str:
    """Moves a submitted (or finished) batch to the status its items derive; returns it."""
    status: str = conn.execute(
        sa.select(payout_batches.c.status).where(payout_batches.c.id == batch_id)
    ).scalar_one()
    items: list[str] = list(
        conn.execute(
            sa.select(payout_items.c.status).where(payout_items.c.batch_id == batch_id)
        ).scalars()
    )
    derived = derived_batch_status(items)
    if derived is None or derived == status:
        return status
    if derived in state_machine.BATCH_TRANSITIONS.get(status, frozenset()):
        state_machine.move_batch(conn, batch_id, derived, actor, reason="derived from its items")
        return derived
    return status


def _find_item(conn: Connection, report: StatusReport) -> Row[Any] | None:
    query = (
        sa.select(payout_items)
        .join(payout_batches, payout_batches.c.id == payout_items.c.batch_id)
        .where(payout_batches.c.method == report.gateway)
    )
    if report.item_id is not None:
        return conn.execute(query.where(payout_items.c.id == report.item_id)).first()
    if report.gateway_item_id:
        return conn.execute(
            query.where(payout_items.c.gateway_item_id == report.gateway_item_id)
        ).first()
    return None


def _log_ignored(
    conn: Connection, item: Row[Any], report: StatusReport, actor: str, why: str
) -> None:
    audit_log.log(
        conn,
        "item_status_ignored",
        "payout_item",
        str(item.id),
        actor=actor,
        detail={
            "batch_id": item.batch_id,
            "status": item.status,
            "provider_status": report.provider_status[:64],
            "source": report.source,
            "event_row_id": report.event_row_id,
            "event_id": report.event_id,
            "why": why,
        },
    )


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping with an event: everything but credentials, names lower-cased."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _SECRET_HEADERS or any(word in key for word in _SECRET_WORDS):
            continue
        kept[key] = value[:1024]
    return dict(sorted(kept.items()))


def refused_event_id() -> str:
    """A refused webhook's own id: never the id it claims, which a forgery could spend."""
    return f"refused:{uuid.uuid4()}"


@dataclass(frozen=True)
class EventRow:
    """One received event, as ``store_events`` keeps it."""

    gateway: str
    event_id: str
    event_type: str
    resource_id: str | None
    body: str
    headers: Mapping[str, str]
    signature_valid: bool
    outcome: str | None = None
    processed: bool = False


def store_event(
    conn: Connection,
    *,
    gateway: str,
    event_id: str,
    event_type: str,
    resource_id: str | None,
    body: str,
    headers: Mapping[str, str],
    signature_valid: bool,
    outcome: str | None = None,
    processed: bool = False,
    known_new: bool = False,
) -> int | None:
    """Keeps one received event; returns its row id, or None when it is already held.

    ``known_new``: the caller asked :func:`is_stored` in this same transaction (the
    writer lock held), so the question is not asked twice.
    """
    if not known_new and is_stored(conn, gateway, event_id):
        return None
    row = EventRow(
        gateway,
        event_id,
        event_type,
        resource_id,
        body,
        headers,
        signature_valid,
        outcome,
        processed,
    )
    [row_id] = store_events(conn, [row])
    return row_id


def store_events(conn: Connection, rows: Sequence[EventRow]) -> list[int]:
    """Keeps events known to be new (``stored_among`` asked, the writer lock held) in one
    multi-row insert; returns their row ids in the order given."""
    if not rows:
        return []
    now = clock.now()
    values = [
        {
            "gateway": r.gateway,
            "event_id": r.event_id[:128],
            "event_type": r.event_type[:64],
            "resource_id": r.resource_id[:128] if r.resource_id else None,
            "payload": r.body,
            "headers": json.dumps(safe_headers(r.headers), sort_keys=True),
            "signature_valid": r.signature_valid,
            "received_at": now,
            "processed_at": now if r.processed else None,
            "outcome": r.outcome[:64] if r.outcome else None,
        }
        for r in rows
    ]
    # executemany with RETURNING: SQLAlchemy sends it as one INSERT ... VALUES (...), (...)
    # ("insertmanyvalues"), the ids sorted back into the order of the rows.
    # The new keys come back from RETURNING and go to the seals as they are (KEYS_RETURNED):
    # no query for the key range before and after.
    result = conn.execute(
        sa.insert(gateway_events)
        .returning(gateway_events.c.id, sort_by_parameter_order=True)
        .execution_options(**{seals.KEYS_RETURNED: True}),
        values,
    )
    ids: list[int] = list(result.scalars())
    seals.touch_inserted(conn, gateway_events, (str(i) for i in ids))
    return ids


def stored_among(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (gateway, event id) are already held, in one query."""
    wanted = sorted({(g, e[:128]) for g, e in keys})
    if not wanted:
        return set()
    # Driver SQL: two text columns come back as they are, and a statement built and
    # compiled per group cost more than the lookup (the unique index answers it).
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    rows = conn.exec_driver_sql(*_stored_sql(mark, wanted))
    return {(str(g), str(e)) for g, e in rows}


def _stored_sql(mark: str, wanted: Sequence[tuple[str, str]]) -> tuple[str, tuple[str, ...]]:
    pairs = ", ".join([f"({mark}, {mark})"] * len(wanted))
    return (
        f"SELECT gateway, event_id FROM gateway_events WHERE (gateway, event_id) IN ({pairs})",
        tuple(v for pair in wanted for v in pair),
    )


def is_stored(conn: Connection, gateway: str, event_id: str) -> bool:
    """Whether this provider's event is already held (a duplicate delivery)."""
    row = conn.execute(
        sa.select(gateway_events.c.id).where(
            gateway_events.c.gateway == gateway, gateway_events.c.event_id == event_id[:128]
        )
    ).first()
    return row is not None


def mark_processed(conn: Connection, event_row_id: int, outcome: str) -> None:
    """Records what an event came to; it is not looked at again."""
    conn.execute(
        sa.update(gateway_events)
        .where(gateway_events.c.id == event_row_id)
        .values(processed_at=clock.now(), outcome=outcome[:64])
    )


def note_outcome(conn: Connection, event_row_id: int, outcome: str) -> None:
    """Records why an event is still waiting (e.g. unknown_item) without closing it."""
    conn.execute(
        sa.update(gateway_events)
        .where(gateway_events.c.id == event_row_id)
        .values(outcome=outcome[:64])
    )


def unprocessed_events(conn: Connection, gateway: str | None = None) -> list[Row[Any]]:
    """Accepted webhooks not yet applied, oldest first."""
    query = (
        sa.select(gateway_events)
        .where(gateway_events.c.processed_at.is_(None), gateway_events.c.signature_valid)
        .order_by(gateway_events.c.id)
    )
    if gateway is not None:
        query = query.where(gateway_events.c.gateway == gateway)
    return list(conn.execute(query))
