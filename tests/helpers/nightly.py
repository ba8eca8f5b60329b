"""Running the nightly reconciliation's assets in process and reading what they left."""

from __future__ import annotations

from typing import Any

import dagster as dg
import duckdb

from finsup_dagster.assets.balances import audit_chain_intact, available_balance, journal_balanced
from finsup_dagster.assets.ledger_replica import ledger_replica
from finsup_dagster.assets.raw import raw_assets
from finsup_dagster.assets.reconciliation import reconciliation_models, revenue_confirmations
from finsup_dagster.assets.revenue import revenue_events

CLIENT = ("test-client", "test-secret")
# What the nightly_reconciliation job selects (groups ingestion, reconciliation, balances).
NIGHTLY_ASSETS = [
    *raw_assets,
    revenue_events,
    ledger_replica,
    reconciliation_models,
    revenue_confirmations,
    available_balance,
    journal_balanced,
    audit_chain_intact,
]


def nightly(resources: dict[str, Any], day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        NIGHTLY_ASSETS,
        resources=resources,
        partition_key=day,
        raise_on_error=False,
    )


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key
    ]
    assert events, f"{key} was not materialised"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def warehouse(resources: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(resources["duckdb"].database, read_only=True)


def mart_rows(
    conn: duckdb.DuckDBPyConnection, table: str, skip: tuple[str, ...] = (), where: str = ""
) -> list[tuple[Any, ...]]:
    """A mart's rows, sorted, without the columns two warehouses of the same books differ
    in (their own surrogate keys and landing numbers, the build time) or ``skip``."""
    cols = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema ="
            " 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        if not r[0].endswith(("_key", "landing_seq")) and r[0] not in ("built_at", *skip)
    ]
    assert cols, table
    return conn.execute(
        f"SELECT {', '.join(cols)} FROM main.{table} {where} ORDER BY ALL"
    ).fetchall()
