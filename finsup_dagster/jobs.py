"""Jobs: named selections of assets, and the op job that submits one approved batch."""

from functools import partial
from pathlib import Path

import dagster as dg

from finsup_dagster import queues, submission
from finsup_dagster.executors import executor_for
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.verification import ensure_intact
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.gateways import (
    BankOutboxResource,
    PayoneerResource,
    PayPalPayoutsResource,
    payout_gateway,
)

# The main job: land the day's files, reconcile them, confirm what settled, and
# work out what is available. Earnings and payouts are their own jobs.
nightly_reconciliation_job = dg.define_asset_job(
    "nightly_reconciliation",
    selection=dg.AssetSelection.groups("ingestion", "reconciliation", "balances"),
    executor_def=executor_for("nightly_reconciliation"),
    description=(
        "Land the day's revenue and settlement files, reconcile them with dbt, confirm "
        "settled revenue with fee postings, and compute the available balance."
    ),
)


create_payout_batches_job = dg.define_asset_job(
    "create_payout_batches",
    selection=dg.AssetSelection.assets(["ledger", "earnings"], ["ledger", "payout_batches"]),
    executor_def=executor_for("create_payout_batches"),
    description="Take in landed earnings, then build payout batches from accrued earnings, pending approval.",
)


class SubmitBatchConfig(dg.Config):
    batch_id: str
    approval_version: int
    # A gateway that could not be reached leaves the batch submitting: the step is tried
    # again this many times, this long apart, and each try asks the gateway first.
    resume_retries: int = 3
    resume_wait_seconds: int = 60


@dg.op(
    description=(
        "Sends one approved payout batch to its gateway exactly once: idempotency key and "
        "payload hash stored first, the gateway asked what it holds before anything is "
        "sent, its ids recorded; a refusal leaves the batch submission_failed, reserved."
    ),
    tags=queues.GATEWAY_TAGS,
)
def submit_batch(
    context: dg.OpExecutionContext,
    config: SubmitBatchConfig,
    ledger: LedgerResource,
    paypal_payouts: PayPalPayoutsResource,
    payoneer: PayoneerResource,
    bank_outbox: BankOutboxResource,
) -> dg.Output[str]:
    ensure_intact(
        ledger.engine,
        Path(ledger.home),
        ledger.checkpoint_key(),
        f"submitting batch {config.batch_id}",
    )
    try:
        result = submission.submit(
            ledger.engine,
            partial(payout_gateway, paypal=paypal_payouts, payoneer=payoneer, bank=bank_outbox),
            config.batch_id,
            config.approval_version,
            actor=f"dagster:{context.run.run_id[:8]}",
        )
    except submission.SubmissionInterrupted as exc:
        if context.retry_number >= config.resume_retries:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        context.log.warning(str(exc))
        raise dg.RetryRequested(
            max_retries=config.resume_retries, seconds_to_wait=config.resume_wait_seconds
        ) from exc
    text = dg.MetadataValue.text
    metadata: dict[str, dg.MetadataValue] = {
        "batch_id": text(result.batch_id),
        "status": text(result.status),
        "method": text(result.method),
        "total": text(f"{format_minor(result.total_minor, result.currency)} {result.currency}"),
        "items": dg.MetadataValue.int(result.items),
        "idempotency_key": text(result.idempotency_key),
        "gateway_batch_id": text(result.gateway_batch_id or ""),
        "attempts": dg.MetadataValue.int(result.attempts),
        "read_back": dg.MetadataValue.bool(result.read_back),
    }
    if result.status == "submission_failed":
        raise dg.Failure(
            description=f"batch {result.batch_id} is submission_failed: {result.reason}",
            metadata=metadata,
            allow_retries=False,
        )
    context.log.info(
        f"batch {result.batch_id} submitted as {result.gateway_batch_id} "
        f"({result.items} items, {metadata['total'].value})"
    )
    return dg.Output(result.status, metadata=metadata)


@dg.job(
    description="Submit one approved payout batch to its gateway (PayPal, Payoneer or a bank file).",
    executor_def=executor_for("submit_payout_batch"),
)
def submit_payout_batch() -> None:
    submit_batch()
