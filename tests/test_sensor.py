"""approved_batches_sensor and the submit job: one submission per approval, never two."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.jobs import submit_payout_batch
from finsup_dagster.ledger import db, reports, submission
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import payout_batches
from finsup_dagster.resources import LedgerResource
from finsup_dagster.sensors.approved_batches import approved_batches_sensor
from tests.helpers.payout_sandbox import payout_sandbox, submission_resources
from tests.helpers.payouts import (
    approve,
    approved_batch,
    approver,
    beneficiary,
    earning,
    retry,
    sale,
)

POLICY = BatchPolicy(dual_approval_over={"*": "1000000"})


def tick(ledger: LedgerResource, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    context = dg.build_sensor_context(cursor=cursor, resources={"ledger": ledger})
    data = approved_batches_sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor


def test_each_approval_gives_one_run_request_and_the_job_submits_once(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    h = sale(engine, "S1", "100.00")
    for name in ("ann", "bob"):
        beneficiary(engine, name)
    earning(engine, "E1", "ann", "10.00", h)
    [first] = build_batches(engine, POLICY, "maker").batches
    carol = approver(engine, "carol")

    requests, cursor = tick(ledger, None)
    assert requests == [], "a pending batch is not submitted"

    approve(engine, carol, first["batch_id"])
    requests, cursor = tick(ledger, cursor)
    assert [r.run_key for r in requests] == [f"{first['batch_id']}:v1"]
    config = requests[0].run_config["ops"]["submit_batch"]["config"]
    assert config == {"batch_id": first["batch_id"], "approval_version": 1}

    again, cursor_after = tick(ledger, cursor)
    assert again == [] and cursor_after == cursor, "a repeated tick asks for nothing new"
    replay, _ = tick(ledger, None)  # a lost cursor asks again, with the same run key
    assert [r.run_key for r in replay] == [f"{first['batch_id']}:v1"]

    earning(engine, "E2", "bob", "20.00", h)
    [second] = build_batches(engine, POLICY, "maker").batches
    approve(engine, carol, second["batch_id"])
    requests, cursor = tick(ledger, cursor)
    assert [r.run_key for r in requests] == [f"{second['batch_id']}:v1"]

    with payout_sandbox(tmp_path) as sandbox:
        resources = submission_resources(sandbox, ledger, tmp_path / "outbox")
        for n in range(2):  # a re-executed run asks the gateway and sends nothing again
            result = submit_payout_batch.execute_in_process(
                run_config=requests[0].run_config, resources=resources
            )
            assert result.success
            assert result.output_for_node("submit_batch") == "submitted"
            [materialization] = [
                e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"
            ]
            metadata = materialization.event_specific_data.metadata  # type: ignore[union-attr]
            assert metadata["read_back"].value is (n == 1)
        creates = sandbox.requests("POST", "/v1/payments/payouts")
    assert len(creates) == 1, "one batch reached the gateway"
    with db.read(engine) as conn:
        statuses = dict(conn.execute(sa.select(payout_batches.c.id, payout_batches.c.status)).all())
        submitting = [
            r for r in reports.transaction_logs(conn) if r["action"] == "batch_submitting"
        ]
    assert statuses == {first["batch_id"]: "approved", second["batch_id"]: "submitted"}
    assert len(submitting) == 1

    requests, _ = tick(ledger, cursor)
    assert requests == [], "a batch already submitted is not requested again"


def test_a_retried_batch_gets_one_run_per_retry_with_the_same_approval_version(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    batch_id, carol = approved_batch(engine, POLICY, "10.00")
    requests, cursor = tick(ledger, None)
    assert [r.run_key for r in requests] == [f"{batch_id}:v1"]

    retry_keys = []
    for attempt in range(2):  # the gateway refuses it twice; carol retries each time
        with db.write(engine) as conn:
            submission.prepare_attempt(conn, batch_id, 1, "ab" * 32, f"run-{attempt}")
            submission.record_submission_failed(conn, batch_id, "refused", f"run-{attempt}")
        requests, cursor = tick(ledger, cursor)
        assert requests == [], "a refused batch waits for an approver"
        retry(engine, carol, batch_id)
        requests, cursor = tick(ledger, cursor)
        [request] = requests
        with db.read(engine) as conn:
            [row] = [
                r
                for r in reports.transaction_logs(conn, limit=10_000)
                if r["action"] == "batch_retry_approved"
            ][attempt:]
        assert request.run_key == f"{batch_id}:v1:retry{row['seq']}"
        config = request.run_config["ops"]["submit_batch"]["config"]
        assert config == {"batch_id": batch_id, "approval_version": 1}
        retry_keys.append(request.run_key)
    assert len(set(retry_keys)) == 2

    # A lost cursor asks once per batch, for its latest decision, under the same key.
    replay, _ = tick(ledger, None)
    assert [r.run_key for r in replay] == [retry_keys[-1]]


def test_a_batch_left_submitting_by_a_dead_process_gets_one_resume_run_per_attempt(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(tmp_path))
    h = sale(engine, "S1", "100.00")
    beneficiary(engine, "ann")
    earning(engine, "E1", "ann", "10.00", h)
    [batch] = build_batches(engine, POLICY, "maker").batches
    batch_id = batch["batch_id"]
    approve(engine, approver(engine, "carol"), batch_id)
    _, cursor = tick(ledger, None)
    with db.write(engine) as conn:  # a run got this far, then its process died
        submission.prepare_attempt(conn, batch_id, 1, "ab" * 32, "run-1")
    requests, cursor = tick(ledger, cursor)
    assert requests == [], "a submission in progress is left alone"

    def go_quiet() -> None:
        with db.write(engine) as conn:
            conn.execute(
                sa.update(payout_batches)
                .where(payout_batches.c.id == batch_id)
                .values(updated_at="2026-01-01T00:00:00.000000Z")
            )

    go_quiet()
    requests, cursor = tick(ledger, cursor)
    assert [r.run_key for r in requests] == [f"{batch_id}:v1:resume1"]
    assert requests[0].run_config["ops"]["submit_batch"]["config"] == {
        "batch_id": batch_id,
        "approval_version": 1,
    }
    again, cursor = tick(ledger, cursor)
    assert [r.run_key for r in again] == [f"{batch_id}:v1:resume1"], "same attempt, same key"
    with db.write(engine) as conn:  # the resumed run died too
        submission.prepare_attempt(conn, batch_id, 1, "ab" * 32, "run-2")
    go_quiet()
    requests, _ = tick(ledger, cursor)
    assert [r.run_key for r in requests] == [f"{batch_id}:v1:resume2"]
