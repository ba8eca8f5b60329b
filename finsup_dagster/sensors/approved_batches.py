"""approved_batches_sensor: one submission run per newly approved batch.

The cursor is the last transaction-log sequence number read, so each tick
reads only what was logged since. The run key is ``<batch id>:v<approval
version>``: Dagster never launches two runs with one key, so a tick repeated
(or a cursor lost) cannot submit a batch twice.
"""

import json

import dagster as dg
import sqlalchemy as sa

from finsup_dagster.jobs import submit_payout_batch
from finsup_dagster.ledger import db
from finsup_dagster.ledger.schema import payout_batches, transaction_log
from finsup_dagster.resources import LedgerResource


@dg.sensor(
    job=submit_payout_batch,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def approved_batches_sensor(
    context: dg.SensorEvaluationContext, ledger: LedgerResource
) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {"last_seq": 0}
    t, b = transaction_log.c, payout_batches.c
    with db.read(ledger.engine) as conn:
        rows = conn.execute(
            sa.select(t.seq, b.id, b.status, b.approval_version)
            .join(payout_batches, b.id == t.entity_id)
            .where(
                t.seq > cursor["last_seq"],
                t.action == "batch_approved",
                t.entity_type == "payout_batch",
            )
            .order_by(t.seq)
        ).all()
    # Only as far as what was read: on PostgreSQL a later statement could see newer rows.
    last = max([cursor["last_seq"], *(seq for seq, *_ in rows)])
    requests = [
        dg.RunRequest(
            run_key=f"{batch_id}:v{version}",
            run_config={
                "ops": {
                    "start_batch_submission": {
                        "config": {"batch_id": batch_id, "approval_version": version}
                    }
                }
            },
            tags={"finsup/batch_id": batch_id},
        )
        for _, batch_id, status, version in rows
        if status == "approved"
    ]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({"last_seq": int(last)}))
