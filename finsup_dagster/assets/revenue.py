"""Revenue landed as files becomes canonical events in the ledger."""

import dagster as dg

from finsup_dagster.assets.landing import landed_files
from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.ledger import db
from finsup_dagster.ledger.reports import revenue_counts
from finsup_dagster.ledger.revenue import IngestResult
from finsup_dagster.ledger.revenue_files import ingest_file
from finsup_dagster.resources import LedgerResource

OWNERS = ["team:finance-engineering"]


@dg.asset(
    key=["ledger", "revenue_events"],
    group_name="ingestion",
    code_version="1",
    kinds={"python", "sql"},
    owners=OWNERS,
    description=(
        "Canonical revenue events in the ledger, from every CSV/JSONL file under "
        "FINSUP_HOME/landing/revenue. Idempotent by event_hash; status only moves "
        "forward; rejected rows go to a rejects file beside their input."
    ),
)
def revenue_events(
    context: dg.AssetExecutionContext, ledger: LedgerResource
) -> dg.MaterializeResult:
    total = IngestResult()
    per_file = []
    for path in landed_files(ledger.landing, "revenue"):
        res = ingest_file(ledger.engine, path, actor=f"dagster:{context.run.run_id[:8]}")
        total.merge(res.result)
        per_file.append({"file": path.name, **res.result.summary(),
                         "rejects_file": res.rejects_path.name if res.rejects_path else ""})  # fmt: skip
        if res.result.rejected:
            context.log.warning(
                f"{path.name}: {len(res.result.rejected)} rows rejected, see {res.rejects_path}"
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
            **money_by_currency("confirmed_net", confirmed),
            "per_file": dg.MetadataValue.md(
                markdown_table(per_file, ["file", "inserted", "unchanged", "status_advanced",
                                          "rejected", "rejects_file"])
            ),
            "ledger_by_status": dg.MetadataValue.md(
                markdown_table(counts, ["currency", "kind", "status", "events", "amount_minor"])
            ),
        }
    )  # fmt: skip
