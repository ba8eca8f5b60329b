"""Real books for property tests, and ways to read them.

``FreshBooks`` hands out empty, migrated books on SQLite or PostgreSQL, one set
per hypothesis example: a copy of a freshly migrated SQLite file, or on
PostgreSQL every table emptied back to its freshly migrated rows. The readers
below take what the invariants compare.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import balance, db, journal, migrate, revenue
from finsup_dagster.ledger.schema import (
    earnings,
    journal_entries,
    metadata,
    payout_batches,
    payout_items,
    revenue_events,
    transaction_log,
)


class FreshBooks:
    """Hands out empty, migrated books on one backend, a new set per call.

    SQLite: a copy of a file migrated once, in a temporary folder. PostgreSQL:
    the throw-away database is migrated once; each call then empties every
    table, restarts the id sequences and puts back the rows the migration
    seeded (about 15 ms, against 80 ms to migrate again or to TRUNCATE).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg_engine: Engine | None = None
        self._seed: dict[str, list[dict[str, Any]]] = {}
        self._sequences: list[str] = []
        self._folder = tempfile.mkdtemp(prefix="finsup-prop-")
        self._template = f"{self._folder}/template.db"
        if url.startswith("sqlite"):
            template = db.make_engine(f"sqlite:///{self._template}")
            migrate.upgrade(template)
            template.dispose()  # the last connection closing folds the WAL into the file
            return
        # Durability is not under test: do not wait for the WAL flush on each commit.
        engine = db.make_engine(url, connect_args={"options": "-c synchronous_commit=off"})
        migrate.upgrade(engine)
        with engine.connect() as conn:
            self._sequences = list(
                conn.execute(
                    sa.text(
                        "SELECT relname FROM pg_class WHERE relkind = 'S'"
                        " AND relnamespace = 'public'::regnamespace"
                    )
                ).scalars()
            )
            for table in metadata.sorted_tables:
                self._seed[table.name] = [
                    dict(r) for r in conn.execute(sa.select(table)).mappings()
                ]
        self._pg_engine = engine
        # Emptying and re-seeding the tables puts their seals back too: a plain engine
        # (no seals listener) does it, as a restore from backup would.
        self._reset_engine = sa.create_engine(db.normalise_url(url))

    @contextmanager
    def __call__(self) -> Iterator[Engine]:
        if self._pg_engine is None:
            path = shutil.copy(self._template, f"{self._folder}/{uuid.uuid4().hex}.db")
            engine = db.make_engine(f"sqlite:///{path}")
            try:
                yield engine
            finally:
                engine.dispose()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        with self._reset_engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(sa.delete(table))
            for sequence in self._sequences:
                conn.exec_driver_sql(f'ALTER SEQUENCE "{sequence}" RESTART')
            for table in metadata.sorted_tables:
                if self._seed[table.name]:
                    conn.execute(sa.insert(table), self._seed[table.name])
        yield self._pg_engine

    def close(self) -> None:
        if self._pg_engine is not None:
            self._pg_engine.dispose()
            self._reset_engine.dispose()
        shutil.rmtree(self._folder, ignore_errors=True)


@contextmanager
def fresh_books(url: str) -> Iterator[FreshBooks]:
    """``FreshBooks`` on ``url``, closed afterwards (the test modules' fixture)."""
    books = FreshBooks(url)
    try:
        yield books
    finally:
        books.close()


def event_rows(conn: Connection) -> set[tuple[Any, ...]]:
    t = revenue_events.c
    cols = (
        t.event_hash,
        t.source,
        t.external_id,
        t.kind,
        t.amount_minor,
        t.currency,
        t.occurred_at,
        t.status,
    )
    return {tuple(r) for r in conn.execute(sa.select(*cols))}


def nonzero_balances(conn: Connection) -> dict[tuple[str, str], int]:
    return {k: v for k, v in journal.account_balances(conn).items() if v != 0}


def count(conn: Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def statuses_of(conn: Connection, table: sa.Table) -> dict[Any, str]:
    return {key: status for key, status in conn.execute(sa.select(table.c.id, table.c.status))}


def books_state(conn: Connection) -> dict[str, Any]:
    """Everything a refused action must leave as it was."""
    return {
        "batches": statuses_of(conn, payout_batches),
        "items": statuses_of(conn, payout_items),
        "balances": journal.account_balances(conn),
        "events": event_rows(conn),
        "entries": count(conn, journal_entries),
        "log_rows": count(conn, transaction_log),
    }


def assert_journal_balanced(
    conn: Connection, sums: Mapping[tuple[str, str], int] | None = None
) -> None:
    """Every entry balances, and so does each currency over all accounts (``sums``: the
    account balances, if already read)."""
    assert journal.unbalanced_entries(conn) == []
    totals = journal.totals_by_currency(journal.account_balances(conn) if sums is None else sums)
    assert {c: t for c, t in totals.items() if t != 0} == {}


def revenue_from_events(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """(confirmed sales, confirmed deductions) per currency, from ``revenue_events`` alone."""
    sales: dict[str, int] = defaultdict(int)
    deductions: dict[str, int] = defaultdict(int)
    t = revenue_events.c
    rows = conn.execute(
        sa.select(t.kind, t.currency, t.amount_minor).where(t.status == "confirmed")
    )
    for kind, currency, amount in rows:
        (sales if kind == "sale" else deductions)[currency] += int(amount)
    return dict(sales), dict(deductions)


def balance_report(conn: Connection) -> dict[str, balance.Balance]:
    return {b.currency: b for b in balance.available_balances(conn)}


def assert_balances_match_events(
    conn: Connection, report: Mapping[str, balance.Balance] | None = None
) -> None:
    """The balance report's confirmed revenue and deductions are the confirmed events'
    (``report``: the balance report by currency, if already read)."""
    sales, deductions = revenue_from_events(conn)
    report = balance_report(conn) if report is None else report
    for currency in set(sales) | set(deductions) | set(report):
        b = report.get(currency)
        assert (b.confirmed_revenue_minor if b else 0) == sales.get(currency, 0), currency
        assert (b.deductions_minor if b else 0) == deductions.get(currency, 0), currency


def ingest(engine: Engine, raws: Iterable[dict[str, str]], chunk_size: int) -> revenue.IngestResult:
    events = [(row, revenue.parse_event(raw)) for row, raw in enumerate(raws, start=1)]
    result = revenue.ingest(engine, events, chunk_size=chunk_size)
    assert result.rejected == []
    return result


@dataclass(frozen=True)
class Snapshot:
    """The rows whose statuses the invariants follow from one step to the next; each row
    tuple starts with its status."""

    revenue: dict[str, str]
    batches: dict[str, tuple[Any, ...]]
    items: dict[int, tuple[Any, ...]]
    earnings: dict[str, tuple[str, int | None, int]]


def read_snapshot(conn: Connection) -> Snapshot:
    b, i, e = payout_batches.c, payout_items.c, earnings.c
    batches = sa.select(
        b.id,
        b.status,
        b.total_minor,
        b.item_count,
        b.required_approvals,
        b.approval_version,
        b.idempotency_key,
        b.created_by,
    )
    items = sa.select(i.id, i.status, i.batch_id, i.amount_minor, i.beneficiary_id)
    return Snapshot(
        revenue=dict(
            conn.execute(sa.select(revenue_events.c.event_hash, revenue_events.c.status)).all()
        ),
        batches={r[0]: tuple(r[1:]) for r in conn.execute(batches)},
        items={int(r[0]): tuple(r[1:]) for r in conn.execute(items)},
        earnings={
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                sa.select(e.external_id, e.status, e.payout_item_id, e.amount_minor)
            )
        },
    )


def follows_edges(
    what: str,
    before: Mapping[Any, tuple[Any, ...]],
    after: Mapping[Any, tuple[Any, ...]],
    edges: Mapping[str, frozenset[str]],
) -> None:
    """Statuses (the first column) changed since ``before`` only along one edge each."""
    for key, row in after.items():
        old = before.get(key)
        if old is not None and old[0] != row[0]:
            assert row[0] in edges[old[0]], f"{what} {key}: {old[0]} -> {row[0]}"
