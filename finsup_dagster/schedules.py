"""Schedules: when the jobs run without anyone asking."""

from datetime import timedelta

import dagster as dg

from finsup_dagster.assets.partitions import daily
from finsup_dagster.jobs import nightly_reconciliation_job


@dg.schedule(
    job=nightly_reconciliation_job,
    cron_schedule="0 2 * * *",
    execution_timezone=daily.timezone or "UTC",
    description="02:00 in FINSUP_TIMEZONE: reconcile the day that just ended.",
)
def nightly_reconciliation_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    scheduled = context.scheduled_execution_time
    if scheduled is None:
        return dg.SkipReason("no scheduled time")
    day = (scheduled.date() - timedelta(days=1)).isoformat()
    return dg.RunRequest(run_key=f"nightly-{day}", partition_key=day)
