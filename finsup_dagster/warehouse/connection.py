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
    """A connection that turns DuckDB's lock and missing-file errors into one line, to a
    warehouse of this finsup's schema version (``version.check``)."""
    from finsup_dagster.warehouse import version  # it uses this module's helpers

    target = Path(path)
    if read_only and not target.exists():
        raise WarehouseUnavailable(
            f"no warehouse at {target}: run `finsup reconcile --date YYYY-MM-DD` first"
        )
    if not read_only:
        target.parent.mkdir(parents=True, exist_ok=True)
    conn = open_file(target, read_only=read_only)
    try:
        version.check(conn, target)
        yield conn
    finally:
        conn.close()


def open_file(
    target: Path, *, read_only: bool = False, then: str = "try again when the run has finished"
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, with another process's write lock said in one line."""
    try:
        return duckdb.connect(str(target), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseUnavailable(
                f"the warehouse at {target} is busy (a Dagster run is writing it): {then}"
            ) from None
        raise


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


def key_column(column: str, sequence: str) -> str:
    """DDL of a ``BIGINT NOT NULL`` key column that numbers rows from ``sequence``."""
    return f"{column} BIGINT DEFAULT nextval('{sequence}') NOT NULL"


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
