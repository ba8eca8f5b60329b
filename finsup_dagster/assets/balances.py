"""The available balance per currency, and the checks that guard the books."""

from pathlib import Path

import dagster as dg

from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.assets.reconciliation import revenue_confirmations
from finsup_dagster.assets.revenue import OWNERS, revenue_events
from finsup_dagster.ledger import audit_log, checkpoints, db, verification
from finsup_dagster.ledger.balance import available_balances
from finsup_dagster.ledger.journal import account_balances, totals_by_currency, unbalanced_entries
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.resources import LedgerResource


@dg.asset(
    key=["ledger", "available_balance"],
    deps=[revenue_events, revenue_confirmations],
    group_name="balances",
    code_version="3",
    kinds={"python", "sql"},
    owners=OWNERS,
    description=(
        "Available balance per currency: confirmed sales − refunds, chargebacks and fees − "
        "reserve − everything committed to payouts − clawbacks owed back. Derived from journal postings only, "
        "after the night's confirmations and fee postings."
    ),
)
def available_balance(ledger: LedgerResource) -> dg.MaterializeResult:
    with db.read(ledger.engine) as conn:
        balances = available_balances(conn)
        chain = audit_log.verify(conn)
    rows = [
        {
            "currency": b.currency,
            "available": format_minor(b.available_minor, b.currency),
            "confirmed_revenue": format_minor(b.confirmed_revenue_minor, b.currency),
            "deductions": format_minor(b.deductions_minor, b.currency),
            "reserve": format_minor(b.reserve_minor, b.currency),
            "committed": format_minor(b.committed_minor, b.currency),
            "clawbacks_owed": format_minor(b.clawback_receivable_minor, b.currency),
        }
        for b in balances
    ]
    return dg.MaterializeResult(
        metadata={
            "currencies": dg.MetadataValue.int(len(balances)),
            **money_by_currency("available", {b.currency: b.available_minor for b in balances}),
            "balances": dg.MetadataValue.md(
                markdown_table(
                    rows,
                    [
                        "currency",
                        "available",
                        "confirmed_revenue",
                        "deductions",
                        "reserve",
                        "committed",
                        "clawbacks_owed",
                    ],
                )
            ),
            # Recorded outside the ledger on purpose: an anchor to compare the chain against.
            "audit_chain_rows": dg.MetadataValue.int(chain.rows),
            "audit_chain_head": dg.MetadataValue.text(chain.head_hash),
        }
    )


@dg.asset_check(
    asset=available_balance,
    blocking=True,
    description="Every journal entry, and so the whole journal, sums to zero per currency.",
)
def journal_balanced(ledger: LedgerResource) -> dg.AssetCheckResult:
    with db.read(ledger.engine) as conn:
        bad = unbalanced_entries(conn)
        overall = {c: t for c, t in totals_by_currency(account_balances(conn)).items() if t}
    return dg.AssetCheckResult(
        passed=not bad and not overall,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "unbalanced_entries": dg.MetadataValue.int(len(bad)),
            "journal_off_by": dg.MetadataValue.json(overall),
            "first_unbalanced": dg.MetadataValue.md(
                markdown_table([b.__dict__ for b in bad], ["entry_id", "currency", "off_by_minor"])
            ),
        },
    )


@dg.asset_check(
    asset=available_balance,
    blocking=True,
    description=(
        "The books prove themselves: the transaction log's hash chain, every row of every money "
        "table against its seal, the signed checkpoint under FINSUP_HOME/audit/ and the chain "
        "head this asset recorded last time. Tampered books stop batch creation and submission."
    ),
)
def audit_chain_intact(
    context: dg.AssetCheckExecutionContext, ledger: LedgerResource
) -> dg.AssetCheckResult:
    # The chain is hashed from the last checkpoint on; rows and seals always in full.
    report = verification.verify_and_checkpoint(
        ledger.engine, Path(ledger.home), ledger.checkpoint_key(), incremental=True
    )
    anchor = _recorded_head(context)
    if anchor is not None:
        with db.read(ledger.engine) as conn:
            wrong = checkpoints.compare(conn, anchor)
        if wrong:
            report.checkpoint_problems.append(f"RECORDED HEAD MISMATCH: {wrong}")
    problems = report.problems()
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows": dg.MetadataValue.int(report.chain.rows),
            "head_hash": dg.MetadataValue.text(report.chain.head_hash),
            "first_bad_row": dg.MetadataValue.int(report.chain.first_bad_seq or 0),
            "problem": dg.MetadataValue.text(problems[0] if problems else "none"),
            "sealed_rows": dg.MetadataValue.int(report.seals.rows),
            "seals": dg.MetadataValue.int(report.seals.seals),
            "tampered_rows": dg.MetadataValue.md(
                markdown_table(
                    [p.__dict__ for p in report.seals.problems[:20]], ["table", "key", "message"]
                )
            ),
            "chain_verified_from": dg.MetadataValue.int(report.incremental_from or 0),
        },
    )


def _recorded_head(context: dg.AssetCheckExecutionContext) -> checkpoints.Checkpoint | None:
    """The chain head the last ``available_balance`` materialisation wrote into Dagster's event log."""
    event = context.instance.get_latest_materialization_event(available_balance.key)
    if event is None or event.asset_materialization is None:
        return None
    meta = event.asset_materialization.metadata
    rows, head = meta.get("audit_chain_rows"), meta.get("audit_chain_head")
    if rows is None or head is None:
        return None
    return checkpoints.Checkpoint(
        int(rows.value), str(head.value), "the last materialisation", "dagster event log"
    )
