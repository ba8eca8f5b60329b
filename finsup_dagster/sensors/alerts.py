"""Sensors that reach a person: stuck payouts, and failed money jobs.

``stuck_payouts_sensor`` starts no run: each tick reads the books, sends what
is due (``alerts.stuck_alerts``) and reports a one-line summary as its skip
reason, visible in the tick history. A dead channel is a warning in the tick's
log and a ``last_error`` in the ``alerts`` table, never a failed tick.

``money_job_failure_alert`` watches every run of this code location and tells
the failures of the money jobs (``alerts.job_failure.MONEY_JOBS``, by name:
``sync_payout_statuses`` lives in another module).
"""

from __future__ import annotations

import dagster as dg
from sqlalchemy.engine import Engine

from finsup_dagster import settings
from finsup_dagster.alerts.job_failure import ERROR_MAX, MONEY_JOBS, alert_job_failure
from finsup_dagster.alerts.stuck_alerts import check_stuck
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.resources.alerts import AlertsResource
from finsup_dagster.resources.ledger import LedgerResource
from finsup_dagster.text import one_line


@dg.sensor(
    minimum_interval_seconds=settings.stuck_sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once per payout stuck at its provider, reminds, resolves when it moves.",
)
def stuck_payouts_sensor(
    context: dg.SensorEvaluationContext, ledger: LedgerResource, alerts: AlertsResource
) -> dg.SkipReason:
    with alerts.dispatcher(context.log) as dispatcher:
        if not dispatcher.channels:
            return dg.SkipReason(
                "no alert channel configured (FINSUP_ALERT_*): `finsup report-stuck-payouts` "
                "still lists stuck payouts"
            )
        summary = check_stuck(ledger.engine, dispatcher, alerts.stuck_after, alerts.remind_after)
    # Each failed channel was one warning line already (the dispatcher's), not one per alert.
    return dg.SkipReason(summary.line())


def failure_line(context: dg.RunFailureSensorContext) -> str:
    """The first failed step's own error (the innermost cause: Dagster wraps user code's
    exceptions), first line, class without its module; else the run's own message."""
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None and error.message.strip():
            first = error.message.strip().splitlines()[0]
            name, sep, rest = first.partition(": ")
            return one_line(f"{name.rsplit('.', 1)[-1]}: {rest}" if sep else first, ERROR_MAX)
    return one_line(context.failure_event.message or "the run failed", ERROR_MAX)


def _engine_or_none(ledger: LedgerResource, context: dg.RunFailureSensorContext) -> Engine | None:
    """The books, if they can be reached: the alert goes out either way."""
    try:
        return ledger.engine
    except LedgerError as exc:
        context.log.warning(f"the failure alert is not recorded in the books: {exc}")
        return None


@dg.run_failure_sensor(
    name="money_job_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when submit_payout_batch, sync_payout_statuses or nightly_reconciliation fail.",
)
def money_job_failure_alert(
    context: dg.RunFailureSensorContext, ledger: LedgerResource, alerts: AlertsResource
) -> None:
    run = context.dagster_run
    if run.job_name not in MONEY_JOBS:
        return
    with alerts.dispatcher(context.log) as dispatcher:
        if not dispatcher.channels:
            context.log.warning(
                f"{run.job_name} run {run.run_id} failed; no alert channel is configured"
            )
            return
        outcome = alert_job_failure(
            _engine_or_none(ledger, context),
            dispatcher,
            run.run_id,
            run.job_name,
            failure_line(context),
            batch_id=run.tags.get("finsup/batch_id"),
        )
    failed = {c: e for c, e in outcome.items() if e}
    if failed:
        context.log.warning(f"{run.job_name} run {run.run_id}: alert not delivered: {failed}")
