"""The warehouse's schema version: one table, one number, checked whenever it is opened.

The warehouse holds nothing of its own (docs/architecture.md): every table is
derived from the landing zone and the ledger. So its shape is never upgraded in
place; a warehouse written by a finsup of another shape is refused, and
``finsup rebuild-warehouse`` builds a new one from the kept files and the books.
Raise ``SCHEMA_VERSION`` with any change to a raw, replica or mart table's shape.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.warehouse.connection import one, run, transaction

SCHEMA_VERSION = 1
TABLE = "meta.schema_version"


class WarehouseVersionMismatch(LedgerError):
    """The warehouse was written by a finsup whose tables had another shape."""


def found(conn: duckdb.DuckDBPyConnection) -> int | None:
    """The version the warehouse says it is; 0 if it has tables but no version (made
    before versions were kept); None if it is empty."""
    tables = one(
        conn,
        "SELECT count(*) FILTER (WHERE schema_name = 'meta' AND table_name = 'schema_version'),"
        " count(*) FROM duckdb_tables() WHERE database_name = current_database()",
    )
    assert tables is not None
    if tables[0]:
        row = one(conn, f"SELECT max(version) FROM {TABLE}")
        return int(row[0]) if row and row[0] is not None else 0
    views = one(
        conn,
        "SELECT count(*) FROM duckdb_views() WHERE database_name = current_database()"
        " AND NOT internal",
    )
    return 0 if tables[1] or (views and views[0]) else None


def check(conn: duckdb.DuckDBPyConnection, where: str | Path | None = None) -> None:
    """Refuses a warehouse of another version, with the command that fixes it."""
    version = found(conn)
    if version is None or version == SCHEMA_VERSION:
        return
    said = "has no schema version" if version == 0 else f"is schema version {version}"
    place = f"the warehouse at {where}" if where else "the warehouse"
    raise WarehouseVersionMismatch(
        f"{place} {said}; this finsup needs version {SCHEMA_VERSION}: run"
        " `finsup rebuild-warehouse` (it rebuilds it from the landing zone and the books)"
    )


def ensure(conn: duckdb.DuckDBPyConnection) -> None:
    """Stamps an empty warehouse with this version; refuses one of another version."""
    if found(conn) is None:
        with transaction(conn):
            run(conn, "CREATE SCHEMA IF NOT EXISTS meta")
            run(conn, f"CREATE TABLE IF NOT EXISTS {TABLE} (version INTEGER NOT NULL)")
            run(conn, f"INSERT INTO {TABLE} VALUES ({SCHEMA_VERSION})")
        return
    check(conn)
