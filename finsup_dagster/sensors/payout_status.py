"""payout_status_sensor: one status poll per interval while submitted batches are open.

Every ``FINSUP_STATUS_POLL_SECONDS`` (default 300) the sensor reads which
batches are submitted and not final (bank batches excepted: a bank file has
no status API). If there are any, it asks for one ``sync_payout_statuses``
run keyed ``poll:<time bucket>:<digest of the open batch ids>``, the bucket
being the UTC epoch divided by the interval. Ticks are at least one interval
apart, so each tick falls in a new bucket and polls once; a tick repeated
within the bucket (or a lost cursor) asks again under the same key, which
Dagster never launches twice, so ticks cannot storm the gateways. A batch
submitted within the bucket changes the digest: it is polled without waiting.

The cursor is the last request made (bucket and open batches), as JSON.
"""

from __future__ import annotations

import hashlib
import json
import time

import dagster as dg

from finsup_dagster import settings
from finsup_dagster.jobs_statuses import sync_payout_statuses
from finsup_dagster.ledger import db
from finsup_dagster.resources import LedgerResource
from finsup_dagster.statuses import open_batch_ids

POLL_SECONDS = settings.status_poll_seconds()


def _now() -> float:
    """The tick's epoch time (a function, so a test can pin the bucket)."""
    return time.time()


def poll_request(
    open_ids: list[str], now: float, interval: int, cursor: str | None
) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    """The tick's decision for ``open_ids`` at epoch ``now``, and the cursor after it."""
    if not open_ids:
        return dg.SkipReason("no submitted batch is waiting for a status"), cursor
    bucket = int(now // interval)
    digest = hashlib.sha256(",".join(sorted(open_ids)).encode()).hexdigest()[:16]
    last = json.loads(cursor) if cursor else {}
    if last.get("bucket") == bucket and last.get("digest") == digest:
        return dg.SkipReason(f"these {len(open_ids)} batches were polled in this interval"), cursor
    request = dg.RunRequest(
        run_key=f"poll:{bucket}:{digest}",
        tags={"finsup/trigger": "payout_status_sensor", "finsup/open_batches": str(len(open_ids))},
    )
    after = {"bucket": bucket, "digest": digest, "open": sorted(open_ids)}
    return request, json.dumps(after, sort_keys=True)


@dg.sensor(
    job=sync_payout_statuses,
    minimum_interval_seconds=POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts one sync_payout_statuses run per FINSUP_STATUS_POLL_SECONDS while "
        "submitted batches are not final."
    ),
)
def payout_status_sensor(
    context: dg.SensorEvaluationContext, ledger: LedgerResource
) -> dg.SensorResult:
    with db.read(ledger.engine) as conn:
        open_ids = open_batch_ids(conn)
    decision, cursor = poll_request(open_ids, _now(), POLL_SECONDS, context.cursor)
    if isinstance(decision, dg.SkipReason):
        return dg.SensorResult(skip_reason=decision, cursor=cursor)
    return dg.SensorResult(run_requests=[decision], cursor=cursor)
