"""The auditor's snapshot and the annual tax report, as assets (docs/audit.md).

The snapshot reads the reconciliation results from the warehouse file opened
read-only; it runs in the warehouse pool so that no run writes the file
meanwhile (DuckDB refuses a read-only open beside a writer).
"""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from finsup_dagster import queues
from finsup_dagster.assets.metadata import markdown_table
from finsup_dagster.assets.raw import WAREHOUSE_POOL
from finsup_dagster.assets.revenue import OWNERS
from finsup_dagster.audit.snapshot import export_snapshot
from finsup_dagster.audit.tax_report import tax_rows, write_csv
from finsup_dagster.executors import executor_for
from finsup_dagster.ledger import clock, db
from finsup_dagster.resources import LedgerResource


class SnapshotConfig(dg.Config):
    as_of: str = Field(
        default="", description="ISO 8601 instant with offset: the books then (empty: now)."
    )
    file_name: str = Field(
        default="", description="Name under FINSUP_HOME/snapshots (empty: the export instant)."
    )


@dg.asset(
    key=["audit", "audit_snapshot"],
    group_name="audit",
    code_version="1",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    op_tags=queues.WAREHOUSE_TAGS,
    description=(
        "The auditor's snapshot: every ledger table, the trial balance, the transaction log "
        "with its chain and the reconciliation results in one DuckDB file under "
        "FINSUP_HOME/snapshots, with a manifest of per-table SHA-256 hashes "
        "(`finsup verify-audit-snapshot FILE` checks it from the file alone)."
    ),
)
def audit_snapshot(
    config: SnapshotConfig, ledger: LedgerResource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    as_of = clock.parse_instant(config.as_of, "as_of") if config.as_of else None
    name = config.file_name or clock.now().replace(":", "") + ".duckdb"
    out = Path(ledger.home) / "snapshots" / name
    warehouse = Path(duckdb.database) if duckdb.database else None
    result = export_snapshot(ledger.engine, out, as_of, warehouse)
    manifest = dg.MetadataValue.table(
        records=[
            dg.TableRecord({"table": m["table"], "rows": m["rows"], "sha256": m["sha256"]})
            for m in result.manifest
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("table", "string"),
                dg.TableColumn("rows", "int"),
                dg.TableColumn("sha256", "string"),
            ]
        ),
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "manifest": manifest,
            "size_bytes": dg.MetadataValue.int(result.size_bytes),
            "chain_head_seq": dg.MetadataValue.int(result.chain_head_seq),
            "chain_head_hash": dg.MetadataValue.text(result.chain_head_hash),
            "snapshot_digest": dg.MetadataValue.text(result.digest),
            "as_of": dg.MetadataValue.text(result.as_of or result.exported_at),
        }
    )


# Calendar years in UTC; end_offset=1 lets the year in progress be reported too.
yearly = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 1 1 *", start="2025", fmt="%Y", timezone="UTC", end_offset=1
)


@dg.asset(
    key=["audit", "tax_report"],
    group_name="audit",
    code_version="1",
    kinds={"csv", "python"},
    owners=OWNERS,
    partitions_def=yearly,
    description=(
        "Annual tax report: totals paid per beneficiary and currency (paid items by paid "
        "date), masked tax id, tax form status, country; paid without a received or verified "
        "tax form flagged. FINSUP_HOME/reports/tax_report_YYYY.csv."
    ),
)
def tax_report(context: dg.AssetExecutionContext, ledger: LedgerResource) -> dg.MaterializeResult:
    year = int(context.partition_key)
    with db.read(ledger.engine) as conn:
        rows = tax_rows(conn, year)
    out = Path(ledger.home) / "reports" / f"tax_report_{year}.csv"
    write_csv(rows, out)
    flagged = [r for r in rows if r["tax_form_missing"]]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "rows": dg.MetadataValue.int(len(rows)),
            "paid_without_tax_form": dg.MetadataValue.int(len(flagged)),
            "preview": dg.MetadataValue.md(
                markdown_table(
                    rows,
                    [
                        "beneficiary",
                        "country",
                        "currency",
                        "paid",
                        "items",
                        "tax_id_masked",
                        "tax_form_status",
                        "tax_form_missing",
                    ],
                )
            ),
        }
    )


audit_snapshot_job = dg.define_asset_job(
    "audit_snapshot",
    selection=dg.AssetSelection.assets(audit_snapshot),
    description="Write the auditor's snapshot of the books under FINSUP_HOME/snapshots.",
    executor_def=executor_for("audit_snapshot"),
)
