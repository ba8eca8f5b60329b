"""A failed money job reaches a person: run id, job, the one-line error; other jobs do not.

A real failing run (an in-process job named like a money job) on an ephemeral
instance, the run-failure sensor evaluated on it with
``build_run_status_sensor_context``, alerts to a local receiver.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db
from finsup_dagster.ledger.schema import alerts
from finsup_dagster.resources import LedgerResource
from finsup_dagster.resources.alerts import AlertsResource
from finsup_dagster.sensors.alerts import money_job_failure_alert
from tests.helpers.alert_receiver import Receiver, alert_receiver

KEY = "R0UTINGKEY-never-shown-0123456789"


@dg.op
def reconcile() -> None:
    raise RuntimeError("the settlement file for 2026-12-06 is missing\nsecond line")


@dg.job(name="nightly_reconciliation")
def failing_nightly() -> None:
    reconcile()


@dg.job(name="create_payout_batches")
def failing_other() -> None:
    reconcile()


def failed_run(job: dg.JobDefinition, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = job.execute_in_process(
        instance=instance, raise_on_error=False, tags={"finsup/batch_id": "pb_7"}
    )
    assert not result.success
    return result


def evaluate(
    result: dg.ExecuteInProcessResult,
    instance: dg.DagsterInstance,
    ledger: LedgerResource,
    receiver: Receiver,
) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name="money_job_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={
            "ledger": ledger,
            "alerts": AlertsResource(
                slack_webhook_url=receiver.url("slack"),
                pagerduty_routing_key=KEY,
                pagerduty_url=receiver.url("pagerduty"),
                retry_attempts=1,
            ),
        },
    ).for_run_failure()
    money_job_failure_alert(context)


def test_a_failed_money_job_is_told_once_with_run_job_and_error(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    with dg.DagsterInstance.ephemeral() as instance, alert_receiver() as receiver:
        result = failed_run(failing_nightly, instance)
        run_id = result.run_id
        evaluate(result, instance, ledger, receiver)
        evaluate(result, instance, ledger, receiver)  # the same failure seen twice: told once
        [trigger] = receiver.at("pagerduty")
        [slack] = receiver.at("slack")

        other = failed_run(failing_other, instance)
        evaluate(other, instance, ledger, receiver)  # not a money job: nobody is paged
        assert len(receiver.requests) == 2

    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == f"job:run:{run_id}"
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["summary"].startswith(f"nightly_reconciliation failed (run {run_id[:8]})")
    details = payload["custom_details"]
    assert details["Run"] == run_id and details["Job"] == "nightly_reconciliation"
    assert "settlement file for 2026-12-06 is missing" in details["Error"]
    assert "\n" not in details["Error"] and details["Batch"] == "pb_7"
    assert "nightly_reconciliation failed" in slack["text"]
    with db.read(engine) as conn:
        [row] = conn.execute(sa.select(alerts)).all()
    assert (row.key, row.kind, row.subject_id) == (f"job:run:{run_id}", "job_failure", run_id)
    assert row.send_count == 1 and row.last_error is None


def test_the_alert_goes_out_even_when_the_books_cannot_be_reached(tmp_path: Path) -> None:
    ledger = LedgerResource(url=f"sqlite:///{tmp_path / 'missing' / 'ledger.db'}", home="x")
    with dg.DagsterInstance.ephemeral() as instance, alert_receiver() as receiver:
        result = failed_run(failing_nightly, instance)
        evaluate(result, instance, ledger, receiver)
        assert len(receiver.at("pagerduty")) == 1 and len(receiver.at("slack")) == 1
