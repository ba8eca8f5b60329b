"""A failed money job told to people: the run, the job, the one-line error.

Sent first, recorded second: a job often fails because the books are
unreachable, and then the alert matters most; recording it is best effort.
Each run is told once (key ``job:run:<run id>``); PagerDuty opens one
incident per failed run, resolved by a person once the job has run cleanly.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from finsup_dagster.alerts import state as alert_state
from finsup_dagster.alerts.dispatch import Dispatcher
from finsup_dagster.alerts.message import TRIGGER, Alert
from finsup_dagster.alerts.state import AlertState
from finsup_dagster.ledger import clock, db
from finsup_dagster.ledger.errors import LedgerError
from finsup_dagster.text import one_line

# The jobs that move or prove money (finsup_dagster/jobs.py; sync_payout_statuses by name).
MONEY_JOBS = frozenset({"submit_payout_batch", "sync_payout_statuses", "nightly_reconciliation"})
KIND = "job_failure"
ERROR_MAX = 300
NO_MESSAGE = "no error message"

log = logging.getLogger("finsup.alerts")


def job_failure_alert(
    run_id: str, job_name: str, error: str, batch_id: str | None, now: str
) -> Alert:
    fields = [("Job", job_name), ("Run", run_id), ("Error", error)]
    if batch_id:
        fields.append(("Batch", batch_id))
    fields.append(("Next step", "open the run in the Dagster UI; runbook in docs/alerts.md"))
    return Alert(
        key=f"job:run:{run_id}",
        kind=KIND,
        action=TRIGGER,
        title=f"{job_name} failed (run {run_id[:8]}): {one_line(error, 120, NO_MESSAGE)}",
        severity="critical",
        fields=tuple(fields),
        detail={"run_id": run_id, "job_name": job_name, "error": error, "batch_id": batch_id},
        occurred_at=now,
    )


def alert_job_failure(
    engine: Engine | None,
    dispatcher: Dispatcher,
    run_id: str,
    job_name: str,
    error: str,
    batch_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, str | None]:
    """Sends the alert of one failed run, then records it; channel -> error or None."""
    stamp = clock.canonical(now or datetime.now(UTC))
    alert = job_failure_alert(
        run_id, job_name, one_line(error, ERROR_MAX, NO_MESSAGE), batch_id, stamp
    )
    if engine is not None:
        try:
            with db.read(engine) as conn:
                known = alert_state.get(conn, alert.key)
            if known is not None and known.last_error is None:
                return {}  # told already (a sensor tick evaluated twice)
        except (SQLAlchemyError, LedgerError) as exc:
            log.warning(f"alert {alert.key}: the books could not be read ({type(exc).__name__})")
    outcome = dispatcher.send(alert)
    if engine is not None:
        _record(engine, alert, outcome, stamp)
    return outcome


def _record(engine: Engine, alert: Alert, outcome: dict[str, str | None], stamp: str) -> None:
    ok = sorted(c for c, err in outcome.items() if err is None)
    failed = {c: err for c, err in outcome.items() if err is not None}
    row = AlertState(
        key=alert.key,
        kind=KIND,
        subject_id=str(alert.detail["run_id"]),
        opened_at=stamp,
        last_sent_at=stamp if ok else None,
        resolved_at=None,
        send_count=1 if ok else 0,
        last_error=alert_state.errors_line(failed),
        subject=dict(alert.detail),
        delivered=ok,
        pending=sorted(failed),
    )
    try:
        with db.write(engine) as conn:
            alert_state.save(conn, row)
    except (SQLAlchemyError, LedgerError) as exc:
        log.warning(f"alert {alert.key}: sent, but not recorded ({type(exc).__name__})")
