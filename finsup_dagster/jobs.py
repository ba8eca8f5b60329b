"""Jobs: named selections of assets, and the op job that submits one approved batch."""

import dagster as dg

from finsup_dagster.ledger import db
from finsup_dagster.ledger.payouts import start_submission
from finsup_dagster.resources import LedgerResource

# The main job: land revenue in the books and work out what is available.
books_job = dg.define_asset_job(
    "books",
    selection=dg.AssetSelection.groups("ingestion", "balances"),
    description="Ingest landed revenue into the ledger and compute the available balance.",
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
