"""Reconciliation: the dbt models, then matched revenue confirmed in the books."""

import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)
from dagster_duckdb import DuckDBResource

from finsup_dagster import queues
from finsup_dagster.assets.dbt_output import quietly
from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.assets.partitions import daily
from finsup_dagster.assets.raw import WAREHOUSE_POOL
from finsup_dagster.ledger.confirmations import confirm_matches
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.resources import LedgerResource, ReconciliationPolicyResource
from finsup_dagster.resources.dbt import manifest_path
from finsup_dagster.warehouse import raw, replica, reports

OWNERS = ["team:finance-engineering"]
MATCHES = dg.AssetKey(["warehouse", "reconciliation_matches"])
EXCEPTIONS = dg.AssetKey(["warehouse", "reconciliation_exceptions"])
SUMMARY = dg.AssetKey(["warehouse", "reconciliation_summary"])


class FinsupDbtTranslator(DagsterDbtTranslator):
    """dbt models are warehouse assets in the reconciliation group; sources keep their meta keys."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "model":
            return spec
        return spec.replace_attributes(
            key=dg.AssetKey(["warehouse", props["name"]]),
            group_name="reconciliation",
            owners=OWNERS,
        )


TRANSLATOR = FinsupDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


@dbt_assets(
    manifest=manifest_path(),
    dagster_dbt_translator=TRANSLATOR,
    partitions_def=daily,
    pool=WAREHOUSE_POOL,
    op_tags=queues.WAREHOUSE_TAGS,
    name="reconciliation_models",
    # run_date is one day: a backfill runs each day on its own, in order.
    backfill_policy=dg.BackfillPolicy.multi_run(1),
)
def reconciliation_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, duckdb: DuckDBResource
) -> Iterator[Any]:
    """dbt build for the day: staging views, matches, exceptions, summary, and their tests."""
    # Sources exist even before anything landed; a warehouse of another schema
    # version is refused here, before dbt touches it.
    with duckdb.get_connection() as conn:
        raw.ensure_schema(conn)
        replica.ensure_schema(conn)
    # The dbt profile takes the warehouse path from the vars (dbt_project/profiles.yml),
    # so dbt opens the very file the duckdb resource names.
    run_vars = json.dumps({"run_date": context.partition_key, "warehouse_path": duckdb.database})
    # A scratch target per run: dbt's compiled SQL and run results are kept by
    # Dagster as events, and a folder per night would otherwise pile up.
    with tempfile.TemporaryDirectory(prefix="finsup-dbt-") as target:
        invocation = dbt.cli(
            ["build", "--vars", run_vars], context=context, target_path=Path(target)
        )
        yield from quietly(invocation.stream(), context)


@dg.asset(
    key=["ledger", "revenue_confirmations"],
    deps=[MATCHES, EXCEPTIONS, SUMMARY],
    group_name="reconciliation",
    code_version="1",
    kinds={"python", "sql"},
    owners=OWNERS,
    partitions_def=daily,
    pool=WAREHOUSE_POOL,
    op_tags=queues.WAREHOUSE_TAGS,
    description=(
        "The day's matches applied to the books: projected events become confirmed, gateway "
        "fees are posted. Events never matched stay projected. Metadata: match rate and a "
        "preview of the day's exceptions."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "unmatched_rate",
            asset=["ledger", "revenue_confirmations"],
            description="Share of due revenue events still unsettled, against "
            "FINSUP_UNMATCHED_RATE_THRESHOLD.",
        ),
        dg.AssetCheckSpec(
            "stale_projected_events",
            asset=["ledger", "revenue_confirmations"],
            description="Projected events unsettled for longer than stale_after_days.",
        ),
        dg.AssetCheckSpec(
            "fees_agree",
            asset=["ledger", "revenue_confirmations"],
            description="Every fee of tonight's matches is in the books as settled: none "
            "already posted with another amount.",
        ),
    ],
)
def revenue_confirmations(
    context: dg.AssetExecutionContext,
    ledger: LedgerResource,
    duckdb: DuckDBResource,
    reconciliation_policy: ReconciliationPolicyResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    day = context.partition_key
    with duckdb.get_connection() as conn:
        matches = reports.matches_for(conn, day)
        rep = reports.report(conn, day)
        exceptions = reports.exceptions(conn, day)
    open_items, matched_total, rate = reports.unmatched_rate(rep)
    preview = exceptions[:25]
    stale = [e for e in exceptions if e["exception_kind"] == "stale_projected"]
    result = confirm_matches(
        ledger.engine,
        matches,
        actor=f"dagster:{context.run.run_id[:8]}",
        run_label=f"reconciliation:{day}",
    )
    counts = [
        {"category": k, "items": rep[k]}
        for k in ("matched", *reports.EXCEPTION_KINDS, "awaiting_settlement")
    ]
    yield dg.MaterializeResult(
        metadata={
            "matched": dg.MetadataValue.int(rep["matched"]),
            "confirmed": dg.MetadataValue.int(result.confirmed),
            "already_confirmed": dg.MetadataValue.int(result.already_confirmed),
            "fees_posted": dg.MetadataValue.int(result.fees_posted + result.fee_credits_posted),
            "exceptions": dg.MetadataValue.int(sum(rep[k] for k in reports.EXCEPTION_KINDS)),
            "match_rate": dg.MetadataValue.float(round(1.0 - rate, 4)),
            **money_by_currency("confirmed", dict(result.confirmed_minor)),
            **money_by_currency("fees", dict(result.fees_minor)),
            "by_category": dg.MetadataValue.md(markdown_table(counts, ["category", "items"])),
            "exceptions_preview": dg.MetadataValue.md(_exceptions_md(preview)),
        }
    )
    for conflict in result.fee_conflicts:
        context.log.error(f"fee not posted: {conflict}")
    yield dg.AssetCheckResult(
        check_name="fees_agree",
        passed=not result.fee_conflicts,
        severity=dg.AssetCheckSeverity.ERROR,
        description="fees agree"
        if not result.fee_conflicts
        else f"{len(result.fee_conflicts)} fee(s) differ from the books: {result.fee_conflicts[0]}",
        metadata={
            "conflicts": dg.MetadataValue.md(
                "\n".join(f"- {c}" for c in result.fee_conflicts) or "none"
            )
        },
    )
    threshold = reconciliation_policy.threshold
    yield dg.AssetCheckResult(
        check_name="unmatched_rate",
        passed=rate <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{open_items} of {open_items + matched_total} due events unsettled "
        f"({rate:.1%}; threshold {threshold:.1%})",
        metadata={
            "unmatched_rate": dg.MetadataValue.float(round(rate, 4)),
            "threshold": dg.MetadataValue.float(threshold),
        },
    )
    yield dg.AssetCheckResult(
        check_name="stale_projected_events",
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        description="none"
        if not stale
        else f"{len(stale)} projected events unsettled "
        f"for more than the stale window (oldest {max(e['age_days'] for e in stale)} days)",
        metadata={
            "stale_events": dg.MetadataValue.int(len(stale)),
            "preview": dg.MetadataValue.md(_exceptions_md(stale[:25])),
        },
    )


def _exceptions_md(rows: list[dict[str, Any]]) -> str:
    shown = []
    for r in rows:
        currency = r.get("currency") or r.get("revenue_currency")
        minor = (
            r.get("gross_minor")
            if r.get("gross_minor") is not None
            else r.get("revenue_amount_minor")
        )
        amount = (
            ""
            if minor is None or currency is None
            else (f"{format_minor(int(minor), str(currency))} {currency}")
        )
        shown.append(
            {
                "kind": r["exception_kind"],
                "reference": r.get("external_id") or r.get("gateway_txn_id") or r.get("record_ref"),
                "amount": amount,
                "file": r.get("file_name") or "",
                "detail": r["detail"],
            }
        )
    return markdown_table(shown, ["kind", "reference", "amount", "file", "detail"])
