"""Schedules: when the jobs run without anyone asking."""

from datetime import date, timedelta

import dagster as dg

from finsup_dagster.assets.audit import audit_snapshot_job
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


@dg.schedule(
    job=audit_snapshot_job,
    cron_schedule="0 3 1 * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Off by default. 03:00 UTC on the 1st: the month just ended, as of 00:00 UTC, "
    "to FINSUP_HOME/snapshots/YYYY-MM.duckdb.",
)
def monthly_audit_snapshot_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    scheduled = context.scheduled_execution_time
    if scheduled is None:
        return dg.SkipReason("no scheduled time")
    first = date(scheduled.year, scheduled.month, 1)
    month = (first - timedelta(days=1)).strftime("%Y-%m")
    config = {"as_of": f"{first.isoformat()}T00:00:00+00:00", "file_name": f"{month}.duckdb"}
    return dg.RunRequest(
        run_key=f"audit-snapshot-{month}",
        run_config={"ops": {"audit__audit_snapshot": {"config": config}}},
    )
