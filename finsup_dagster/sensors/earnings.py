"""earnings_landed_sensor: new earnings -> one ``create_payout_batches`` run, no operator.

Two ways earnings arrive, one trigger: a file dropped in
``FINSUP_HOME/landing/earnings/`` (not in the books until the job's
``ledger/earnings`` step reads it) or ``POST /earnings`` (in the books at
once). The cursor holds what the last request saw of both: ``earning_id``,
the newest accrued earning not yet in a batch, and ``files``, a digest of the
landed earnings files (name, size, modification time). When either moved,
one run of ``create_payout_batches`` (earnings, then ``payout_batches``)
builds batches pending approval within the payout policy's limits
(``PayoutPolicyResource``: minimum item, maximum batch total, dual approval,
the available balance), exactly as an operator's run would.

The run key is derived from that data (``earnings:<earning id>:<files digest>``):
a tick repeated, or a lost cursor, asks for a run Dagster already launched
and gets none. While payouts are frozen the sensor skips and keeps its
cursor, so what landed meanwhile is batched by the first tick after the
unfreeze (``build_batches`` refuses under a freeze anyway).

A run that failed (the ledger unreachable, a deploy mid-run) would otherwise
leave its earnings unbatched until something new lands, since the data and so
the run key are unchanged: the sensor asks again, as ``<key>:retry:<n>``, up
to ``MAX_RETRIES`` times, while unbatched earnings remain, the n-th retry no
sooner than n × ``RETRY_BACKOFF_SECONDS`` after the failed run ended. After that it says
so on every tick until new earnings land (a new key) or an operator runs the
job by hand.
"""

from __future__ import annotations

import hashlib
import json
import time

import dagster as dg

from finsup_dagster.jobs import create_payout_batches_job
from finsup_dagster.landing import landed_files
from finsup_dagster.ledger import db
from finsup_dagster.ledger.controls import freeze_state
from finsup_dagster.ledger.earnings_intake import new_earnings_mark
from finsup_dagster.resources import LedgerResource

ACTOR = "sensor:earnings_landed"
EMPTY = {"earning_id": 0, "files": ""}
KEY_TAG = "finsup/earnings_key"
MAX_RETRIES = 3
RETRY_BACKOFF_SECONDS = 60


def _request(key: str, attempt: int) -> dg.RunRequest:
    run_key = key if attempt == 0 else f"{key}:retry:{attempt}"
    return dg.RunRequest(
        run_key=run_key,
        tags={"finsup/actor": ACTOR, "finsup/trigger": "earnings_landed", KEY_TAG: key},
    )


def _retry(context: dg.SensorEvaluationContext, key: str) -> dg.RunRequest | str | None:
    """A new request when the last run for ``key`` failed; a reason when retries are spent."""
    records = context.instance.get_run_records(filters=dg.RunsFilter(tags={KEY_TAG: key}), limit=1)
    if not records or records[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    last = records[0]
    attempts = context.instance.get_runs_count(filters=dg.RunsFilter(tags={KEY_TAG: key}))
    if attempts > MAX_RETRIES:
        return (
            f"the run for {key} failed {attempts} times; run create_payout_batches by hand "
            f"once the cause is fixed (last: {last.dagster_run.run_id})"
        )
    # Backing off (1, 2, 3 minutes): a short outage must not use up every retry at once.
    due = (last.end_time or time.time()) + RETRY_BACKOFF_SECONDS * attempts
    if time.time() < due:
        return f"the run for {key} failed; asking again in {int(due - time.time()) + 1} s"
    return _request(key, attempts)


def files_digest(ledger: LedgerResource) -> str:
    """What the landed earnings files look like now ("" when there are none)."""
    folder = ledger.landing / "earnings"
    listing = []
    for path in landed_files(ledger.landing, "earnings"):
        stat = path.stat()
        listing.append(f"{path.relative_to(folder)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}")
    if not listing:
        return ""
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]


@dg.sensor(
    job=create_payout_batches_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "New earnings (a file in landing/earnings or POST /earnings) -> one create_payout_batches "
        "run, so the swarm's decisions reach approval without an operator; skips while payouts "
        "are frozen."
    ),
)
def earnings_landed_sensor(
    context: dg.SensorEvaluationContext, ledger: LedgerResource
) -> dg.SensorResult | dg.SkipReason:
    cursor = {**EMPTY, **(json.loads(context.cursor) if context.cursor else {})}
    with db.read(ledger.engine) as conn:
        freeze = freeze_state(conn)
        newest = new_earnings_mark(conn)
    if freeze.frozen:
        # The cursor stays: the first tick after the unfreeze sees everything that landed.
        return dg.SkipReason(f"payouts are frozen (by {freeze.set_by}: {freeze.reason})")
    seen = {"earning_id": newest, "files": files_digest(ledger)}
    # Earnings batched since (by this job or by hand) lower the mark: not news.
    moved = newest > cursor["earning_id"] or seen["files"] != cursor["files"]
    has_work = newest > 0 or seen["files"] != ""
    key = f"earnings:{newest}:{seen['files'] or '-'}"
    if not has_work:
        return dg.SensorResult(skip_reason="no new earnings", cursor=json.dumps(seen))
    if not moved:
        retry = _retry(context, key)
        if isinstance(retry, dg.RunRequest):
            return dg.SensorResult(run_requests=[retry], cursor=json.dumps(seen))
        return dg.SensorResult(skip_reason=retry or "no new earnings", cursor=json.dumps(seen))
    return dg.SensorResult(run_requests=[_request(key, 0)], cursor=json.dumps(seen))
