"""The ledger's incremental copy in the warehouse, which dbt reads."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from finsup_dagster import queues
from finsup_dagster.assets.metadata import markdown_table
from finsup_dagster.assets.raw import WAREHOUSE_POOL
from finsup_dagster.assets.revenue import revenue_events
from finsup_dagster.resources import LedgerResource
from finsup_dagster.warehouse.replica import replicate

OWNERS = ["team:finance-engineering"]


@dg.asset(
    key=["warehouse", "ledger_replica"],
    deps=[revenue_events],
    group_name="ingestion",
    code_version="1",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    op_tags=queues.WAREHOUSE_TAGS,
    description=(
        "revenue_events, journal_entries, postings and transaction_log copied from the ledger "
        "into warehouse schema `ledger`, incrementally: each run copies what changed since "
        "the copy's high-water marks (docs/reconciliation.md)."
    ),
)
def ledger_replica(ledger: LedgerResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as conn:
        stats = replicate(ledger.engine, conn)
    rows = [
        {"table": name, "copied": stats.copied[name], "rows": stats.totals[name]}
        for name in stats.copied
    ]
    return dg.MaterializeResult(
        metadata={
            **{f"copied_{n}": dg.MetadataValue.int(c) for n, c in stats.copied.items()},
            **{f"rows_{n}": dg.MetadataValue.int(c) for n, c in stats.totals.items()},
            "tables": dg.MetadataValue.md(markdown_table(rows, ["table", "copied", "rows"])),
        }
    )
