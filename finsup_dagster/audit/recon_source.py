"""Copying the reconciliation results from the warehouse into a snapshot.

The live warehouse is only ever opened read-only here, and only when no run
writes it: the CLI opens it read_only=True (DuckDB refuses while a run holds
the write lock, and the command says so in one line); the Dagster asset runs
in the warehouse pool, so no writer runs beside it. Days are UTC run dates; an
as-of snapshot keeps the nights that had ended by then (run_date before the
as-of day).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from finsup_dagster.warehouse.connection import connect

MATCHES = "reconciliation_matches"
EXCEPTIONS = "reconciliation_exceptions"
# What an empty table holds when there is no warehouse yet: the columns the keys need.
_EMPTY = {
    MATCHES: "run_date VARCHAR, event_hash VARCHAR, settlement_line_id VARCHAR, match_rule VARCHAR",
    EXCEPTIONS: "run_date VARCHAR, exception_kind VARCHAR, detail VARCHAR",
}


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main'"
        " AND table_name = ?",
        [name],
    ).fetchall()[:1]
    return bool(row and row[0][0])


def copy_results(duck: duckdb.DuckDBPyConnection, warehouse: Path | None, as_of: str | None) -> str:
    """Creates both tables in the snapshot; returns where they came from (for manifest_info)."""
    if warehouse is None or not warehouse.exists():
        for name, cols in _EMPTY.items():
            duck.execute(f"CREATE TABLE {name} ({cols})")
        return "none: no warehouse" + (f" at {warehouse}" if warehouse else "")
    where = "" if as_of is None else " WHERE CAST(run_date AS VARCHAR) < ?"
    params = [] if as_of is None else [as_of[:10]]
    with connect(warehouse, read_only=True) as wh:
        for name, cols in _EMPTY.items():
            if not has_table(wh, name):
                duck.execute(f"CREATE TABLE {name} ({cols})")
                continue
            data = wh.sql(f"SELECT * FROM {name}{where}", params=params).to_arrow_table()
            duck.register("finsup_recon", data)
            try:
                duck.execute(f"CREATE TABLE {name} AS SELECT * FROM finsup_recon")
            finally:
                duck.unregister("finsup_recon")
    return f"warehouse {warehouse} (read only)"
