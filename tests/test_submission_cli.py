"""Retrying and cancelling a batch the gateway refused, and seeing it, through the `finsup` command."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db, submission
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from tests.helpers.cli import assert_one_line_error, run, run_json
from tests.helpers.payout_sandbox import CLIENT_ID, CLIENT_SECRET, payout_sandbox
from tests.helpers.payouts import BOX_KEY, approve, approved_batch, approver, earning, sale

POLICY = BatchPolicy(min_item={"*": "1.00"}, dual_approval_over={"USD": "1000.00"})


@pytest.fixture
def books(finsup_env: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("FINSUP_SECRET_KEY", BOX_KEY)  # approvers enrolled by the helpers
    assert run("init").returncode == 0
    eng = db.make_engine(ledger_url)
    yield eng
    eng.dispose()


def refused_batch(engine: Engine) -> str:
    """One paypal batch of USD 25.00 to ann, approved by carol, refused by the gateway."""
    batch_id, _ = approved_batch(engine, POLICY, "25.00")
    with db.write(engine) as conn:
        submission.prepare_attempt(conn, batch_id, 1, "cd" * 32, "run-1")
        submission.record_submission_failed(
            conn, batch_id, "RECEIVER_UNREGISTERED: receiver is not registered", "run-1"
        )
    return batch_id


def wrong_code(secret: str) -> str:
    valid = {pyotp.TOTP(secret).at(time.time() + d) for d in (-30, 0, 30, 60)}
    return next(c for c in ("000000", "000001", "000002", "000003") if c not in valid)


def test_a_refused_batch_is_reported_retried_once_per_code_and_approved_again(
    books: Engine,
) -> None:
    batch_id = refused_batch(books)
    [row] = run_json("report-payout-batches", "--status", "submission_failed")
    assert row == {
        "batch_id": batch_id,
        "method": "paypal",
        "currency": "USD",
        "total_minor": 2500,
        "total": "25.00",
        "items": 1,
        "status": "submission_failed",
        "status_reason": "RECEIVER_UNREGISTERED: receiver is not registered",
        "gateway_batch_id": None,
        "idempotency_key": f"{batch_id}-v1",
        "attempts": 1,
        "submitted_at": None,
        "updated_at": row["updated_at"],
    }
    table = run("report-payout-batches", env={**os.environ, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    assert "RECEIVER_UNREGISTERED" in table.stdout and "submission_failed" in table.stdout

    dave = approver(books, "dave")
    proc = run(
        "retry-payout-batch", batch_id, "--approver", "dave", "--code", wrong_code(dave.secret)
    )
    assert_one_line_error(proc, "wrong or expired TOTP code")
    assert run_json("report-payout-batches", "--status", "submission_failed")[0]["attempts"] == 1

    code = pyotp.TOTP(dave.secret).now()
    done = run("retry-payout-batch", batch_id, "--approver", "dave", "--code", code)
    assert done.returncode == 0, done.stderr
    assert f"approved again by dave; it is submitted again under {batch_id}-v1" in done.stdout
    [again] = run_json("report-payout-batches", "--status", "approved")
    assert (again["status_reason"], again["idempotency_key"]) == (None, f"{batch_id}-v1")

    replay = run("retry-payout-batch", batch_id, "--approver", "dave", "--code", code)
    assert_one_line_error(replay, "already used")
    assert run_json("report-payout-batches", "--status", "submission_failed") == []
    log = run_json("report-transaction-logs", "--entity", "payout_batch")
    actions = [r["action"] for r in log if r["entity_id"] == batch_id]
    assert actions.count("batch_retry_approved") == 1
    assert actions.count("batch_retry_refused") == 2


def test_a_refused_batch_is_cancelled_with_a_code_and_its_amount_released(books: Engine) -> None:
    batch_id = refused_batch(books)
    [before] = run_json("available-balance", "--currency", "USD")
    plain = run("cancel-payout-batch", batch_id, "--reason", "receiver unknown")
    assert_one_line_error(plain, "submission_failed: cancelling it needs --approver and --code")
    erin = approver(books, "erin")
    code = pyotp.TOTP(erin.secret).now()
    proc = run(
        "cancel-payout-batch",
        batch_id,
        "--reason",
        "receiver unknown",
        "--approver",
        "erin",
        "--code",
        code,
    )
    assert proc.returncode == 0, proc.stderr
    [row] = run_json("report-payout-batches")
    assert row["status"] == "cancelled"
    [after] = run_json("available-balance", "--currency", "USD")
    assert (before["committed_minor"], after["committed_minor"]) == (2500, 0)
    assert after["available_minor"] == before["available_minor"] + 2500
    assert run("report-payout-batches", "--status", "nonsense").returncode == 2


def test_submit_payout_batch_sends_once_through_the_instance_and_says_why_when_refused(
    books: Engine, finsup_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id, _ = approved_batch(books, POLICY, "25.00")
    monkeypatch.setenv("DAGSTER_HOME", str(finsup_env / "dagster_home"))
    with payout_sandbox(tmp_path) as sandbox:
        monkeypatch.setenv("FINSUP_PAYPAL_PAYOUTS_BASE_URL", sandbox.base_url)
        monkeypatch.setenv("FINSUP_PAYPAL_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("FINSUP_PAYPAL_CLIENT_SECRET", CLIENT_SECRET)
        for _ in range(2):  # by hand, again: the gateway is asked, nothing sent twice
            proc = run("submit-payout-batch", batch_id)
            assert proc.returncode == 0, proc.stderr
            assert f"batch {batch_id} submitted to paypal as " in proc.stdout
            assert CLIENT_SECRET not in proc.stdout + proc.stderr
        assert len(sandbox.state.paypal_batches) == 1
        assert_one_line_error(run("submit-payout-batch", "pb_nope"), "no payout batch 'pb_nope'")

        h2 = sale(books, "S2", "100.00")
        earning(books, "E2", "ann", "30.00", h2)
        [second] = build_batches(books, POLICY, "maker").batches
        approve(books, approver(books, "dave"), second["batch_id"])
        sandbox.fault(kind="raw", status=422, body="{not json", path_prefix="/v1/payments/payouts")
        proc = run("submit-payout-batch", second["batch_id"])
        assert_one_line_error(proc, f"batch {second['batch_id']} is submission_failed: ")
        assert len(sandbox.state.paypal_batches) == 1
