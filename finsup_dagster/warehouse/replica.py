"""An incremental copy of the ledger tables in the warehouse (schema ``ledger``).

The ledger stays the system of record; dbt reads this copy. Each run copies
only what changed since the copy's own high-water marks, so its cost follows
the day's changes, not the size of the books:

- ``revenue_events`` by ``status_changed_at`` (indexed), upserted by
  ``event_hash``. The watermark (``ledger.replica_watermarks``) is the time the
  last copy started, taken back by ``OVERLAP``: a writer that stamped a row
  before that copy may have committed after it, and clocks of different
  machines drift. The upsert makes re-reading those rows harmless. Each copy
  numbers the rows it writes (``replicated_seq``, one number per copy, rising)
  and every row keeps the number of the copy that first brought it
  (``first_replicated_seq``): the nightly reconciliation tells new events from
  changed ones, exactly, against a night's recorded watermark. A row also gets
  an ``event_key`` (sequence ``ledger.event_key``) when first copied and keeps
  it: the integer the reconciliation joins and stores instead of the 64-character
  event hash.
- ``journal_entries`` and ``postings`` are append-only: rows with an id past
  the copy's largest id, less ``ID_OVERLAP`` for the same reason (sequence
  order is not commit order on PostgreSQL), inserted where missing.
- ``transaction_log`` is appended by ``seq``, which the books hand out under a
  lock, so it needs no overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import clock, db
from finsup_dagster.ledger.schema import journal_entries, postings, revenue_events, transaction_log
from finsup_dagster.warehouse import version
from finsup_dagster.warehouse.connection import (
    check_key_sequence,
    key_column,
    one,
    run,
    transaction,
)

OVERLAP = timedelta(minutes=10)
ID_OVERLAP = 1_000

_DUCK_TYPES = {sa.BigInteger: "BIGINT", sa.Integer: "BIGINT", sa.Boolean: "BOOLEAN"}


@dataclass
class ReplicaStats:
    copied: dict[str, int]
    totals: dict[str, int]


# Warehouse-only columns of the copy, after the ledger's own.
_COPY_COLUMNS = {"revenue_events": ("replicated_seq", "first_replicated_seq")}
_KEY_COLUMNS = {"revenue_events": ("event_key", "ledger.event_key")}


def _ddl(table: sa.Table) -> str:
    cols = []
    for col in table.columns:
        kind = next((v for k, v in _DUCK_TYPES.items() if isinstance(col.type, k)), "VARCHAR")
        cols.append(f"{col.name} {kind}")
    cols += [f"{name} BIGINT NOT NULL" for name in _COPY_COLUMNS.get(table.name, ())]
    if table.name in _KEY_COLUMNS:
        cols.append(key_column(*_KEY_COLUMNS[table.name]))
    key = ", ".join(c.name for c in table.primary_key.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS ledger.{table.name} ({', '.join(cols)}, PRIMARY KEY ({key}))"
    )


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    version.ensure(conn)
    with transaction(conn):
        run(conn, "CREATE SCHEMA IF NOT EXISTS ledger")
        run(conn, "CREATE SEQUENCE IF NOT EXISTS ledger.event_key START 1")
        for table in (revenue_events, journal_entries, postings, transaction_log):
            run(conn, _ddl(table))
        run(
            conn,
            "CREATE TABLE IF NOT EXISTS ledger.replica_watermarks"
            " (table_name VARCHAR PRIMARY KEY, watermark VARCHAR NOT NULL)",
        )
    for name, (column, sequence) in _KEY_COLUMNS.items():
        check_key_sequence(conn, sequence, [f"ledger.{name}"], column)


def replicate(engine: Engine, conn: duckdb.DuckDBPyConnection) -> ReplicaStats:
    """Brings the warehouse copy up to date with the ledger; returns rows copied per table."""
    ensure_schema(conn)
    copied = {
        "revenue_events": _copy_revenue_events(engine, conn),
        "journal_entries": _copy_appended(engine, conn, journal_entries, "id", ID_OVERLAP),
        "postings": _copy_appended(engine, conn, postings, "id", ID_OVERLAP),
        "transaction_log": _copy_appended(engine, conn, transaction_log, "seq", 0),
    }
    totals = {name: _count(conn, name) for name in copied}
    return ReplicaStats(copied, totals)


def _frame(table: sa.Table, rows: list[sa.Row[tuple[object, ...]]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=[c.name for c in table.columns])
    for col in table.columns:
        if isinstance(col.type, sa.BigInteger | sa.Integer):
            frame[col.name] = frame[col.name].astype("Int64")
    return frame


def _copy_revenue_events(engine: Engine, conn: duckdb.DuckDBPyConnection) -> int:
    row = one(
        conn,
        "SELECT watermark FROM ledger.replica_watermarks WHERE table_name = ?",
        ["revenue_events"],
    )
    started = clock.now()  # before reading: a change stamped after this is read next time
    query = sa.select(revenue_events)
    if row is not None:
        query = query.where(revenue_events.c.status_changed_at >= str(row[0]))
    with db.read(engine) as ledger:
        rows = list(ledger.execute(query))
    frame = _frame(revenue_events, rows)
    with transaction(conn):
        if rows:
            mark = one(
                conn, "SELECT coalesce(max(replicated_seq), 0) + 1 FROM ledger.revenue_events"
            )
            seq = int(mark[0]) if mark else 1
            conn.register("changed_events", frame)
            try:
                # Replaced rows keep the number of the copy that first brought them,
                # and their key.
                run(
                    conn,
                    "CREATE TEMP TABLE replica_first AS"
                    " SELECT event_hash, first_replicated_seq, event_key FROM ledger.revenue_events"
                    " WHERE event_hash IN (SELECT event_hash FROM changed_events)",
                )
                run(
                    conn,
                    "DELETE FROM ledger.revenue_events"
                    " WHERE event_hash IN (SELECT event_hash FROM changed_events)",
                )
                run(
                    conn,
                    "INSERT INTO ledger.revenue_events BY NAME"
                    f" SELECT c.*, {seq} AS replicated_seq,"
                    f" coalesce(f.first_replicated_seq, {seq}) AS first_replicated_seq,"
                    " coalesce(f.event_key, nextval('ledger.event_key')) AS event_key"
                    " FROM changed_events AS c LEFT JOIN replica_first AS f USING (event_hash)",
                )
                run(conn, "DROP TABLE replica_first")
            finally:
                conn.unregister("changed_events")
        run(
            conn,
            "INSERT OR REPLACE INTO ledger.replica_watermarks VALUES (?, ?)",
            ["revenue_events", _earlier(started, OVERLAP)],
        )
    return len(rows)


def _copy_appended(
    engine: Engine, conn: duckdb.DuckDBPyConnection, table: sa.Table, key: str, overlap: int
) -> int:
    mark = one(conn, f"SELECT max({key}) FROM ledger.{table.name}")
    after = None if mark is None or mark[0] is None else int(mark[0]) - overlap
    query = sa.select(table).order_by(table.c[key])
    if after is not None:
        query = query.where(table.c[key] > after)
    with db.read(engine) as ledger:
        rows = list(ledger.execute(query))
    if not rows:
        return 0
    frame = _frame(table, rows)
    with transaction(conn):
        conn.register("appended_rows", frame)
        try:
            before = _count(conn, table.name)
            run(
                conn,
                f"INSERT INTO ledger.{table.name} BY NAME SELECT * FROM appended_rows"
                f" WHERE {key} NOT IN (SELECT {key} FROM ledger.{table.name} WHERE {key} > ?)",
                [after if after is not None else -1],
            )
            added = _count(conn, table.name) - before
        finally:
            conn.unregister("appended_rows")
    return added


def _count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    row = one(conn, f"SELECT count(*) FROM ledger.{name}")
    return int(row[0]) if row else 0


def _earlier(instant: str, delta: timedelta) -> str:
    parsed = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return clock.canonical(parsed - delta)
