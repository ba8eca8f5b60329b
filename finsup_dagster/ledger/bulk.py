"""Bulk reads and writes where the per-row cost of the general path shows.

Ingestion moves hundreds of thousands of rows; through SQLAlchemy's
executemany each row costs parameter processing, and on PostgreSQL a round
trip. Here: ``COPY`` on PostgreSQL and the driver's own executemany on
SQLite, both inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import seals
from finsup_dagster.ledger.db import is_sqlite

SQLITE_IN_LIMIT = 900  # well under SQLite's bound-variable limit on every version we meet


def insert_rows(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    if not rows:
        return
    if table.name in seals.BY_NAME:
        # Bypasses Core, so the seals listener cannot see it: say which rows are new.
        at = [columns.index(c.name) for c in table.primary_key.columns]
        seals.touch_inserted(conn, table, ("/".join(str(r[i]) for i in at) for r in rows))
    names = ", ".join(columns)
    if is_sqlite(conn):
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({names}) VALUES ({marks})", list(map(tuple, rows))
        )
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def select_where_in(
    conn: Connection, table: sa.Table, columns: Sequence[str], key: str, values: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table WHERE key IN values``, in as few statements as the database allows."""
    if not values:
        return []
    names = ", ".join(columns)
    if not is_sqlite(conn):
        result = conn.exec_driver_sql(
            f"SELECT {names} FROM {table.name} WHERE {key} = ANY(%s)", (list(values),)
        )
        return [tuple(r) for r in result]
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(values), SQLITE_IN_LIMIT):
        part = values[start : start + SQLITE_IN_LIMIT]
        marks = ", ".join("?" for _ in part)
        out.extend(
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT {names} FROM {table.name} WHERE {key} IN ({marks})", tuple(part)
            )
        )
    return out


class TableStats:
    """Keeps PostgreSQL's planner statistics fresh while a bulk load grows a table.

    Without statistics (autovacuum off, or not yet run after a big load) the
    planner scans the whole table for each chunk's lookup instead of using the
    index; ``ANALYZE`` after every 10% of growth keeps the lookups on the index.
    """

    def __init__(self, engine: Engine, table: sa.Table) -> None:
        self.engine, self.table = engine, table
        self.enabled = engine.dialect.name == "postgresql"
        self.since = 0
        self.rows = 0
        if self.enabled:
            with engine.connect() as conn:  # the planner's own estimate: free, unlike count(*)
                estimate = conn.exec_driver_sql(
                    "SELECT reltuples FROM pg_class WHERE relname = %s", (table.name,)
                ).scalar()
            self.rows = max(int(estimate or 0), 0)

    def grew(self, inserted: int) -> None:
        if not self.enabled:
            return
        self.since += inserted
        if self.since >= max(10_000, self.rows // 10):
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE {self.table.name}")
            self.rows += self.since
            self.since = 0
