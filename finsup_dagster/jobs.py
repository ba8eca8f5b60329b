"""Jobs: named selections of assets, and the op job that submits one approved batch."""

from pathlib import Path

import dagster as dg

from finsup_dagster.ledger import db
from finsup_dagster.ledger.payouts import start_submission
from finsup_dagster.ledger.verification import ensure_intact
from finsup_dagster.resources import LedgerResource

# The main job: land the day's files, reconcile them, confirm what settled, and
# work out what is available. Earnings and payouts are their own jobs.
nightly_reconciliation_job = dg.define_asset_job(
    "nightly_reconciliation",
    selection=dg.AssetSelection.groups("ingestion", "reconciliation", "balances"),
    description=(
        "Land the day's revenue and settlement files, reconcile them with dbt, confirm "
        "settled revenue with fee postings, and compute the available balance."
    ),
)


create_payout_batches_job = dg.define_asset_job(
    "create_payout_batches",
    selection=dg.AssetSelection.assets(["ledger", "earnings"], ["ledger", "payout_batches"]),
    description="Take in landed earnings, then build payout batches from accrued earnings, pending approval.",
)


class SubmitBatchConfig(dg.Config):
    batch_id: str
    approval_version: int


@dg.op(description="Moves the approved batch to submitting, idempotency key stored first.")
def start_batch_submission(
    context: dg.OpExecutionContext, config: SubmitBatchConfig, ledger: LedgerResource
) -> str:
    ensure_intact(
        ledger.engine,
        Path(ledger.home),
        ledger.checkpoint_key(),
        f"submitting batch {config.batch_id}",
    )
    with db.write(ledger.engine) as conn:
        key = start_submission(
            conn,
            config.batch_id,
            config.approval_version,
            actor=f"dagster:{context.run.run_id[:8]}",
        )
    context.log.info(f"batch {config.batch_id} is submitting with idempotency key {key}")
    return key


@dg.job(
    description="Submit one approved payout batch (the gateway call arrives with the gateway issue)."
)
def submit_payout_batch() -> None:
    start_batch_submission()
