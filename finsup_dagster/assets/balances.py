"""The available balance per currency, and the checks that guard the books."""

import dagster as dg

from finsup_dagster.assets.metadata import markdown_table, money_by_currency
from finsup_dagster.assets.reconciliation import revenue_confirmations
from finsup_dagster.assets.revenue import OWNERS, revenue_events
from finsup_dagster.ledger import audit_log, db
from finsup_dagster.ledger.balance import available_balances
from finsup_dagster.ledger.journal import account_balances, totals_by_currency, unbalanced_entries
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.resources import LedgerResource


@dg.asset(
    key=["ledger", "available_balance"],
    deps=[revenue_events, revenue_confirmations],
    group_name="balances",
    code_version="2",
    kinds={"python", "sql"},
    owners=OWNERS,
    description=(
        "Available balance per currency: confirmed sales − refunds, chargebacks and fees − "
        "reserve − everything committed to payouts. Derived from journal postings only, "
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
        }
        for b in balances
    ]
    return dg.MaterializeResult(
        metadata={
            "currencies": dg.MetadataValue.int(len(balances)),
            **money_by_currency("available", {b.currency: b.available_minor for b in balances}),
            "balances": dg.MetadataValue.md(
                markdown_table(rows, ["currency", "available", "confirmed_revenue", "deductions",
                                      "reserve", "committed"])
            ),
            # Recorded outside the ledger on purpose: an anchor to compare the chain against.
            "audit_chain_rows": dg.MetadataValue.int(chain.rows),
            "audit_chain_head": dg.MetadataValue.text(chain.head_hash),
        }
    )  # fmt: skip


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
    description="The transaction log's hash chain recomputes from the first row to the head.",
)
def audit_chain_intact(ledger: LedgerResource) -> dg.AssetCheckResult:
    with db.read(ledger.engine) as conn:
        report = audit_log.verify(conn)
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows": dg.MetadataValue.int(report.rows),
            "head_hash": dg.MetadataValue.text(report.head_hash),
            "first_bad_row": dg.MetadataValue.int(report.first_bad_seq or 0),
            "problem": dg.MetadataValue.text(report.problem or "none"),
        },
    )
