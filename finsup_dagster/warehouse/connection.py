"""Opening the warehouse, and transactions that DuckDB 2.0 no longer implies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from finsup_dagster.ledger.errors import LedgerError


class WarehouseUnavailable(LedgerError):
    """The warehouse file is missing, or another process holds its write lock."""


@contextmanager
def connect(path: str | Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that turns DuckDB's lock and missing-file errors into one line."""
    target = Path(path)
    if read_only and not target.exists():
        raise WarehouseUnavailable(
            f"no warehouse at {target}: run `finsup reconcile --date YYYY-MM-DD` first"
        )
    if not read_only:
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = duckdb.connect(str(target), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseUnavailable(
                f"the warehouse at {target} is busy (a Dagster run is writing it): "
                "try again when the run has finished"
            ) from None
        raise
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: several statements commit together or not at all."""
    run(conn, "BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        run(conn, "ROLLBACK")
        raise
    run(conn, "COMMIT")


def run(conn: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> None:
    """Executes a statement and drains its result: DuckDB 2.0 refuses the next
    statement on a connection while a result is unread."""
    conn.execute(sql, params or []).fetchall()


def one(
    conn: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
) -> tuple[Any, ...] | None:
    """The first row of a query (read to the end, for the same reason as ``run``)."""
    rows = conn.execute(sql, params or []).fetchall()
    return tuple(rows[0]) if rows else None


def _column_nullable(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, column: str
) -> str | None:
    """``YES``/``NO`` for this database's ``schema.table.column``; None: no such column."""
    row = one(
        conn,
        "SELECT is_nullable FROM information_schema.columns WHERE table_catalog ="
        " current_database() AND table_schema = ? AND table_name = ? AND column_name = ?",
        [schema, table, column],
    )
    return None if row is None else str(row[0])


def has_column(conn: duckdb.DuckDBPyConnection, schema: str, table: str, column: str) -> bool:
    """Whether this database's ``schema.table`` has ``column`` (for one-off migrations)."""
    return _column_nullable(conn, schema, table, column) is not None


def add_counter_column(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, column: str
) -> None:
    """Adds a ``BIGINT NOT NULL`` numbering column to a table made before it existed, once:
    the rows already there get 0, before any number handed out from then on."""
    if has_column(conn, schema, table, column):
        return
    run(conn, f"ALTER TABLE {schema}.{table} ADD COLUMN {column} BIGINT DEFAULT 0")
    run(conn, f"ALTER TABLE {schema}.{table} ALTER COLUMN {column} DROP DEFAULT")
    run(conn, f"ALTER TABLE {schema}.{table} ALTER COLUMN {column} SET NOT NULL")


def key_column(column: str, sequence: str) -> str:
    """DDL of a ``BIGINT NOT NULL`` key column that numbers rows from ``sequence``."""
    return f"{column} BIGINT DEFAULT nextval('{sequence}') NOT NULL"


def add_key_column(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, column: str, sequence: str
) -> None:
    """Adds a key column (``key_column``) to a table made before it existed: the rows
    already there get numbers of their own. Outside any transaction: DuckDB numbers the
    rows as an update, and only a later transaction may then make the column NOT NULL
    (each step commits, and a step left undone is done on the next call)."""
    if not has_column(conn, schema, table, column):
        with transaction(conn):
            run(conn, f"ALTER TABLE {schema}.{table} ADD COLUMN {column} BIGINT"
                      f" DEFAULT nextval('{sequence}')")  # fmt: skip
    if _column_nullable(conn, schema, table, column) == "YES":
        with transaction(conn):
            run(conn, f"ALTER TABLE {schema}.{table} ALTER COLUMN {column} SET NOT NULL")


def check_key_sequence(
    conn: duckdb.DuckDBPyConnection, sequence: str, tables: list[str], column: str
) -> None:
    """Refuses a warehouse whose key sequence is behind keys already in ``tables`` (rows
    copied in from another warehouse with their keys): the next number handed out would
    name two rows, and a match by key would pair the wrong one."""
    schema, name = sequence.split(".")
    seq = one(
        conn,
        "SELECT coalesce(last_value, start_value - 1) FROM duckdb_sequences()"
        " WHERE database_name = current_database() AND schema_name = ? AND sequence_name = ?",
        [schema, name],
    )
    highest = one(
        conn,
        "SELECT max(k) FROM ("
        + " UNION ALL ".join(f"SELECT max({column}) AS k FROM {t}" for t in tables)
        + ")",
    )
    if seq and highest and highest[0] is not None and int(highest[0]) > int(seq[0]):
        raise RuntimeError(
            f"{sequence} is at {seq[0]} but {column} {highest[0]} is already used in"
            f" {', '.join(tables)}: rows were copied in with their keys; number them again"
            " or restore the warehouse they came from"
        )
