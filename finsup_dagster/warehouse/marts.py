"""One-off upgrades of the reconciliation marts' tables, run before dbt builds them.

dbt owns the marts (``dbt_project/models/marts``); this module only carries
tables written by an earlier version of the models forward, so a night after an
upgrade goes on from the nights before it instead of failing on a changed
schema or re-matching the whole history as one night.

- Matches were stored wide, with text ids, in a table ``reconciliation_matches``;
  they are now ``reconciliation_match_keys`` (the integer keys of the event and
  the line, the rule, the night) and ``reconciliation_matches`` is a view. The
  old rows are converted, each keeping its night; a match filed under
  ``batch_reference`` gets back the rule that made it (the line named the event's
  id, else amount and date window), which the view shows as ``batch_reference``
  again.
- The open-item slices gain the keys of their lines and events.
"""

from __future__ import annotations

import duckdb

from finsup_dagster.warehouse.connection import has_column, one, run, transaction
from finsup_dagster.warehouse.raw import SETTLEMENT_TABLES

SCHEMA = "main"  # where dbt builds the marts (dbt_project/profiles.yml)


def upgrade(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Brings mart tables of earlier versions to the current shape; returns what it did."""
    done: list[str] = []
    with transaction(conn):
        if _base_table(conn, "reconciliation_matches"):
            if _base_table(conn, "reconciliation_match_keys"):
                raise RuntimeError(
                    "upgrading reconciliation_matches: reconciliation_match_keys exists beside"
                    " it; move one of them aside and run the night again"
                )
            # On an error the transaction rolls back, the temp table with it.
            run(conn, f"CREATE TEMP TABLE upgrade_lines AS {_line_ids()}")
            done.append(_match_keys(conn))
            done += _slice_keys(conn)
            run(conn, "DROP TABLE upgrade_lines")
    return done


def _line_ids() -> str:
    return " UNION ALL ".join(
        f"SELECT content_sha256 || ':' || CAST(row_number AS VARCHAR) AS settlement_line_id,"
        f" line_key, nullif(trim(gateway_txn_id), '') AS gateway_txn_id FROM raw.{table}"
        for table in SETTLEMENT_TABLES
    )


def _match_keys(conn: duckdb.DuckDBPyConnection) -> str:
    old = f"{SCHEMA}.reconciliation_matches"
    run(
        conn,
        f"CREATE TABLE {SCHEMA}.reconciliation_match_keys AS"
        " SELECT events.event_key, lines.line_key,"
        " CASE WHEN old.match_rule <> 'batch_reference' THEN old.match_rule"
        "  WHEN lines.gateway_txn_id = old.external_id THEN 'gateway_txn_id'"
        "  ELSE 'amount_date_window' END AS match_rule,"
        " old.run_date"
        f" FROM {old} AS old"
        " JOIN ledger.revenue_events AS events ON events.event_hash = old.event_hash"
        " JOIN upgrade_lines AS lines ON lines.settlement_line_id = old.settlement_line_id",
    )
    before = _count(conn, old)
    after = _count(conn, f"{SCHEMA}.reconciliation_match_keys")
    if after != before:  # the transaction rolls back: nothing changes
        raise RuntimeError(
            f"upgrading {old}: {before - after} of {before} matches name an event or a"
            " settlement line the warehouse no longer has"
        )
    run(conn, f"DROP TABLE {old}")
    return f"reconciliation_matches: {before} matches kept as reconciliation_match_keys"


def _slice_keys(conn: duckdb.DuckDBPyConnection) -> list[str]:
    done = []
    for table, key, source, text_id in (
        ("reconciliation_open_lines", "line_key", "upgrade_lines", "settlement_line_id"),
        ("reconciliation_open_events", "event_key", "ledger.revenue_events", "event_hash"),
    ):
        if not _base_table(conn, table) or has_column(conn, SCHEMA, table, key):
            continue
        run(conn, f"ALTER TABLE {SCHEMA}.{table} ADD COLUMN {key} BIGINT")
        run(
            conn,
            f"UPDATE {SCHEMA}.{table} SET {key} = source.{key} FROM {source} AS source"
            f" WHERE source.{text_id} = {SCHEMA}.{table}.{text_id}",
        )
        missing = one(conn, f"SELECT count(*) FROM {SCHEMA}.{table} WHERE {key} IS NULL")
        if missing and missing[0]:
            raise RuntimeError(f"upgrading {table}: {missing[0]} open items name nothing known")
        done.append(f"{table}: {key} added")
    return done


def _base_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = one(
        conn,
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
        " AND table_schema = ? AND table_name = ? AND table_type = 'BASE TABLE'",
        [SCHEMA, name],
    )
    return bool(row and row[0])


def _count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    row = one(conn, f"SELECT count(*) FROM {table}")
    return int(row[0]) if row else 0
