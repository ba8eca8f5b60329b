"""Raw revenue rows (files and the PayPal API) become canonical events in the ledger."""

import math
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from finsup_dagster import queues
from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.assets.partitions import daily
from finsup_dagster.assets.raw import WAREHOUSE_POOL, raw_key
from finsup_dagster.ledger import db
from finsup_dagster.ledger.files import Rejected
from finsup_dagster.ledger.reports import revenue_counts
from finsup_dagster.ledger.revenue import FIELDS, IngestResult
from finsup_dagster.ledger.revenue_files import ingest_records
from finsup_dagster.resources import LedgerResource
from finsup_dagster.warehouse import raw

OWNERS = ["team:finance-engineering"]


@dg.asset(
    key=["ledger", "revenue_events"],
    deps=[raw_key("revenue"), raw_key("paypal-transactions")],
    group_name="ingestion",
    code_version="2",
    kinds={"python", "sql"},
    owners=OWNERS,
    partitions_def=daily,
    pool=WAREHOUSE_POOL,
    op_tags=queues.WAREHOUSE_TAGS,
    description=(
        "Canonical revenue events in the ledger, from the day's raw revenue rows (revenue "
        "files and PayPal API pages). Idempotent by event_hash; status only moves forward; "
        "rejected rows go to a rejects file beside the landed file."
    ),
)
def revenue_events(
    context: dg.AssetExecutionContext, ledger: LedgerResource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    day = context.partition_key
    with duckdb.get_connection() as conn:
        raw.ensure_schema(conn)
        rows = raw.revenue_rows(conn, day)
    total = IngestResult()
    per_file = []
    actor = f"dagster:{context.run.run_id[:8]}"
    for (file_name, sha), group in rows.groupby(["file_name", "content_sha256"], sort=True):
        rejected: list[Rejected] = []
        path = ledger.landing / str(file_name)
        res = ingest_records(
            ledger.engine,
            str(sha),
            path,
            _records(group, rejected),
            rejected,
            actor=actor,
            label=str(file_name),
        )
        total.merge(res.result)
        per_file.append(
            {
                "file": file_name,
                **res.result.summary(),
                "rejects_file": res.rejects_path.name if res.rejects_path else "",
            }
        )
        if res.result.rejected:
            context.log.warning(
                f"{file_name}: {len(res.result.rejected)} rows rejected, see {res.rejects_path}"
            )
    with db.read(ledger.engine) as conn:
        counts = revenue_counts(conn)
    confirmed: dict[str, int] = {}
    for row in counts:
        if row["status"] == "confirmed":
            sign = 1 if row["kind"] == "sale" else -1
            confirmed[row["currency"]] = (
                confirmed.get(row["currency"], 0) + sign * row["amount_minor"]
            )
    summary = total.summary()
    return dg.MaterializeResult(
        metadata={
            "files": dg.MetadataValue.int(len(per_file)),
            "inserted": dg.MetadataValue.int(summary["inserted"]),
            "unchanged": dg.MetadataValue.int(summary["unchanged"]),
            "status_advanced": dg.MetadataValue.int(summary["status_advanced"]),
            "rejected": dg.MetadataValue.int(summary["rejected"]),
            "events_in_ledger": dg.MetadataValue.int(sum(r["events"] for r in counts)),
            **money_by_currency("newly_confirmed", dict(total.confirmed_minor)),
            **money_by_currency("confirmed_net", confirmed),
            "per_file": dg.MetadataValue.md(
                markdown_table(
                    per_file,
                    [
                        "file",
                        "inserted",
                        "unchanged",
                        "status_advanced",
                        "rejected",
                        "rejects_file",
                    ],
                )
            ),
            "ledger_by_status": dg.MetadataValue.md(
                markdown_table(counts, ["currency", "kind", "status", "events", "amount_minor"])
            ),
        }
    )


def _records(
    group: pd.DataFrame, rejected: list[Rejected]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Raw rows back as the records the ledger validates; rows unreadable on landing are refused."""
    for rec in group.to_dict("records"):
        row = int(rec["row_number"])
        record = {k: _text(rec.get(k)) for k in FIELDS}
        problem = _text(rec.get("problem"))
        if problem:
            rejected.append(Rejected(row, problem, record))
        else:
            yield row, record


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)
