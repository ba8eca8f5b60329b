"""Earnings from the swarm and the payout batches built from them."""

import json
from pathlib import Path

import dagster as dg

from finsup_dagster.assets.balances import available_balance
from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.assets.revenue import OWNERS, revenue_events
from finsup_dagster.landing import landed_files
from finsup_dagster.ledger import earnings as earnings_lib
from finsup_dagster.ledger.batching import build_batches
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.verification import ensure_intact
from finsup_dagster.resources import LedgerResource, PayoutPolicyResource


@dg.asset(
    key=["ledger", "earnings"],
    deps=[revenue_events],
    group_name="payouts",
    code_version="1",
    kinds={"python", "sql"},
    owners=OWNERS,
    description=(
        "Earnings the agent swarm reports, from FINSUP_HOME/landing/earnings: each names a "
        "beneficiary, an amount and the confirmed revenue events that fund it. Refused rows "
        "(unknown beneficiary or event, more than the cited revenue has left) go to a rejects file."
    ),
)
def earnings(context: dg.AssetExecutionContext, ledger: LedgerResource) -> dg.MaterializeResult:
    rows = []
    for path in landed_files(ledger.landing, "earnings"):
        res = earnings_lib.ingest_file(
            ledger.engine, path, actor=f"dagster:{context.run.run_id[:8]}"
        )
        rows.append({"file": path.name, **res.summary()})
        for r in res.rejected:
            context.log.warning(f"{path.name} row {r.row}: {r.reason}")
    return dg.MaterializeResult(
        metadata={
            "files": dg.MetadataValue.int(len(rows)),
            "created": dg.MetadataValue.int(sum(r["created"] for r in rows)),
            "unchanged": dg.MetadataValue.int(sum(r["unchanged"] for r in rows)),
            "rejected": dg.MetadataValue.int(sum(r["rejected"] for r in rows)),
            "per_file": dg.MetadataValue.md(
                markdown_table(rows, ["file", "created", "unchanged", "rejected", "rejects_file"])
            ),
        }
    )


@dg.asset(
    key=["ledger", "payout_batches"],
    deps=[earnings, available_balance],
    group_name="payouts",
    code_version="2",
    kinds={"python", "sql"},
    owners=OWNERS,
    description=(
        "Payout batches pending approval, built from accrued earnings of eligible beneficiaries "
        "(KYC verified, sanctions clear, not blocked), grouped by method and currency, within the "
        "minimum item, maximum batch total and the available balance, reserved in the same "
        "transaction; earnings whose funding revenue was reversed are held, clawbacks owed are "
        "netted. Building again never duplicates a batch or an item."
    ),
)
def payout_batches(
    context: dg.AssetExecutionContext, ledger: LedgerResource, payout_policy: PayoutPolicyResource
) -> dg.MaterializeResult:
    actor = context.run.tags.get("finsup/actor", f"dagster:{context.run.run_id[:8]}")
    # Tampered books never decide how much money leaves: verify them first.
    ensure_intact(
        ledger.engine, Path(ledger.home), ledger.checkpoint_key(), "building payout batches"
    )
    report = build_batches(ledger.engine, payout_policy.policy(), created_by=actor)
    shown = [
        {**b, "total": f"{format_minor(b['total_minor'], b['currency'])} {b['currency']}"}
        for b in report.batches
    ]
    totals: dict[str, int] = {}
    for b in report.batches:
        totals[b["currency"]] = totals.get(b["currency"], 0) + b["total_minor"]
    held_totals: dict[str, int] = {}
    for h in report.held:
        held_totals[h["currency"]] = held_totals.get(h["currency"], 0) + h["amount_minor"]
    return dg.MaterializeResult(
        metadata={
            "batches_created": dg.MetadataValue.int(len(report.batches)),
            "items_created": dg.MetadataValue.int(sum(b["item_count"] for b in report.batches)),
            **money_by_currency("committed", totals),
            "batches": dg.MetadataValue.md(
                markdown_table(
                    shown,
                    [
                        "batch_id",
                        "method",
                        "currency",
                        "total",
                        "item_count",
                        "required_approvals",
                        "netted_minor",
                    ],
                )
            ),
            "ineligible": dg.MetadataValue.md(
                markdown_table(
                    report.ineligible, ["beneficiary", "currency", "amount_minor", "reason"]
                )
            ),
            "waiting": dg.MetadataValue.md(
                markdown_table(
                    report.waiting, ["beneficiary", "method", "currency", "amount_minor", "reason"]
                )
            ),
            "earnings_on_hold": dg.MetadataValue.int(len(report.held)),
            **money_by_currency("on_hold", held_totals),
            "held": dg.MetadataValue.md(
                markdown_table(
                    report.held,
                    ["earning", "beneficiary", "status", "currency", "amount_minor", "reason"],
                )
            ),
            # Machine-readable, for `finsup create-payout-batches --json`.
            "batches_json": dg.MetadataValue.json(json.loads(json.dumps(report.batches))),
        }
    )
