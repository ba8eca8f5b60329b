"""approved_batches_sensor: one submission run per approval, and one per retry.

The cursor is the last transaction-log sequence number read, so each tick
reads only what was logged since. The run key is ``<batch id>:v<approval
version>`` for an approval (``batch_approved``) and ``<batch id>:v<approval
version>:retry<seq>`` for an approver's retry of a batch the gateway refused
(``batch_retry_approved``, ``seq`` its log row): a retry keeps the approval
version (and so the gateway idempotency key), and the log row tells one retry
from the next. Dagster never launches two runs with one key, so a tick
repeated (or a cursor lost) cannot submit a batch twice for one decision.

A batch left ``submitting`` and unchanged for ``RESUME_AFTER_SECONDS`` (its run's
process died) gets one more run, key ``<batch id>:v<version>:resume<attempts>``:
that attempt asks the gateway what it holds before sending anything. After
``MAX_ATTEMPTS_RESUMED`` attempts it is left for a person.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from finsup_dagster.jobs import submit_payout_batch
from finsup_dagster.ledger import clock, db
from finsup_dagster.ledger.schema import payout_batches, transaction_log
from finsup_dagster.resources import LedgerResource

# A batch submitting this long with no change is taken as abandoned by its process.
RESUME_AFTER_SECONDS = 15 * 60
# Attempts after which the sensor stops resuming: the batch needs a person (the stuck list).
MAX_ATTEMPTS_RESUMED = 6

# The log actions that ask for a submission run, and the run key's suffix for each.
RUN_KEY_SUFFIX = {"batch_approved": "", "batch_retry_approved": ":retry{seq}"}


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
            sa.select(t.seq, b.id, b.status, b.approval_version, t.action)
            .join(payout_batches, b.id == t.entity_id)
            .where(
                t.seq > cursor["last_seq"],
                t.action.in_(RUN_KEY_SUFFIX),
                t.entity_type == "payout_batch",
            )
            .order_by(t.seq)
        ).all()
    # Only as far as what was read: on PostgreSQL a later statement could see newer rows.
    last = max([cursor["last_seq"], *(seq for seq, *_ in rows)])
    # One request per batch, for its latest decision: an approval and a retry read in
    # one tick (or again, after a lost cursor) are one submission to make, not two.
    latest = {row.id: row for row in rows}
    requests = [
        _request(row.id, row.approval_version, RUN_KEY_SUFFIX[row.action].format(seq=row.seq))
        for row in latest.values()
        if row.status == "approved"
    ]
    # A submission whose process died (a killed run worker, a lost machine) leaves its
    # batch submitting with nothing to resume it: after a quiet while, one more run asks
    # the gateway and finishes it. Keyed by the attempts so far: one run per attempt.
    quiet_since = clock.canonical(datetime.now(UTC) - timedelta(seconds=RESUME_AFTER_SECONDS))
    with db.read(ledger.engine) as conn:
        stuck = conn.execute(
            sa.select(b.id, b.approval_version, b.submission_attempts).where(
                b.status == "submitting",
                b.updated_at < quiet_since,
                b.submission_attempts < MAX_ATTEMPTS_RESUMED,
            )
        ).all()
    requests += [
        _request(row.id, row.approval_version, f":resume{row.submission_attempts}") for row in stuck
    ]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({"last_seq": int(last)}))


def _request(batch_id: str, approval_version: int, suffix: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{batch_id}:v{approval_version}{suffix}",
        run_config={
            "ops": {
                "submit_batch": {
                    "config": {"batch_id": batch_id, "approval_version": approval_version}
                }
            }
        },
        tags={"finsup/batch_id": batch_id},
    )
