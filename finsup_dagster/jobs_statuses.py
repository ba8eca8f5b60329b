"""The op job that polls the gateways for payout statuses: ``sync_payout_statuses``.

The work is ``statuses.sync`` (no Dagster there); this module gives it its
resources, its retries and what the run shows: per batch, what changed.
Started by ``payout_status_sensor`` every ``FINSUP_STATUS_POLL_SECONDS`` while
batches are open, or by ``finsup sync-payout-statuses``.
"""

from functools import partial
from pathlib import Path

import dagster as dg

from finsup_dagster import queues, statuses
from finsup_dagster.executors import executor_for
from finsup_dagster.ledger.verification import ensure_intact
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.gateways import (
    PayoneerResource,
    PayPalPayoutsResource,
    payout_gateway,
)


class SyncStatusesConfig(dg.Config):
    # None: every submitted batch not final; an id: that one batch.
    batch_id: str | None = None
    # A gateway that cannot be reached is asked again this many times, this long apart
    # (each client call already retried its own transient faults); then the run fails.
    retries: int = 3
    retry_wait_seconds: int = 60


@dg.op(
    description=(
        "Asks each gateway where the items of every submitted batch are, keeps its raw "
        "answer, and books each status through the one mapping webhooks use (one "
        "transaction per batch); cancels items unclaimed past FINSUP_UNCLAIMED_RELEASE_DAYS "
        "at the provider before releasing them; applies stored webhook events left waiting."
    ),
    tags=queues.GATEWAY_TAGS,
)
def sync_statuses(
    context: dg.OpExecutionContext,
    config: SyncStatusesConfig,
    ledger: LedgerResource,
    paypal_payouts: PayPalPayoutsResource,
    payoneer: PayoneerResource,
) -> dg.Output[int]:
    # A poll moves money between committed, paid and released: never on books that
    # fail verification (as for building and submitting batches).
    ensure_intact(ledger.engine, Path(ledger.home), ledger.checkpoint_key(), "polling statuses")
    result = statuses.sync(
        ledger.engine,
        partial(payout_gateway, paypal=paypal_payouts, payoneer=payoneer),
        config.batch_id,
        actor=f"dagster:{context.run.run_id[:8]}",
    )
    metadata = _metadata(result)
    for line in result.errors:
        context.log.warning(line)
    if result.webhooks:
        context.log.info(f"stored webhook events: {result.webhooks}")
    failures = result.failures
    if failures and result.unreachable and context.retry_number < config.retries:
        # Whatever was booked stays booked; the retry polls again and changes nothing twice.
        raise dg.RetryRequested(
            max_retries=config.retries, seconds_to_wait=config.retry_wait_seconds
        )
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise dg.Failure(
            description=f"polling payout statuses: {failures[0]}{more}",
            metadata=metadata,
            allow_retries=False,
        )
    context.log.info(
        f"{len(result.batches)} batches polled, {result.applied} statuses applied, "
        f"{len(result.releases)} unclaimed items cancelled"
    )
    return dg.Output(result.applied, metadata=metadata)


def _metadata(result: statuses.SyncResult) -> dict[str, dg.MetadataValue]:
    rows = ["| batch | before | after | changed |", "|---|---|---|---|"]
    for b in result.batches:
        changed = ", ".join(f"{c.item_id}→{c.status}" for c in b.applied)
        rows.append(
            f"| {b.batch_id} | {b.status_before} | {b.status_after} | "
            f"{changed or b.error or b.skipped or '-'} |"
        )
    return {
        "batches": dg.MetadataValue.int(len(result.batches)),
        "applied": dg.MetadataValue.int(result.applied),
        "released": dg.MetadataValue.int(sum(1 for r in result.releases if r.outcome == "applied")),
        "errors": dg.MetadataValue.int(len(result.errors)),
        "summary": dg.MetadataValue.md("\n".join(rows)),
        "result": dg.MetadataValue.json(result.as_dict()),
    }


@dg.job(
    description=(
        "Poll the payout gateways for the statuses of submitted batches and book them "
        "(completed, partially_completed, failed), releasing long-unclaimed items."
    ),
    executor_def=executor_for("sync_payout_statuses"),
)
def sync_payout_statuses() -> None:
    sync_statuses()
