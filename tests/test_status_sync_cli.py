"""`finsup sync-payout-statuses` and `finsup report-payouts`, run as a user's terminal runs them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db
from finsup_dagster.resources import LedgerResource
from tests.helpers.cli import assert_one_line_error, run, run_json
from tests.helpers.payout_sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    payout_sandbox,
    submission_resources,
)
from tests.helpers.payouts import BOX_KEY
from tests.helpers.status_sync import gateways, submitted_batch


@pytest.fixture
def books(finsup_env: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("FINSUP_SECRET_KEY", BOX_KEY)  # approvers enrolled by the helpers
    monkeypatch.setenv("DAGSTER_HOME", str(finsup_env / "dagster_home"))
    assert run("init").returncode == 0
    eng = db.make_engine(ledger_url)
    yield eng
    eng.dispose()


def test_sync_by_hand_books_the_statuses_and_report_payouts_shows_items_and_funding(
    books: Engine,
    finsup_env: Path,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(finsup_env))
    with payout_sandbox(tmp_path) as sandbox:
        monkeypatch.setenv("FINSUP_PAYPAL_PAYOUTS_BASE_URL", sandbox.base_url)
        monkeypatch.setenv("FINSUP_PAYPAL_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("FINSUP_PAYPAL_CLIENT_SECRET", CLIENT_SECRET)
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        payees = {
            "ann": ("ann@example.com", "100.00"),
            "bob": ("bob+failed@example.com", "25.00"),
        }
        batch_id = submitted_batch(books, gateway_for, payees)

        proc = run("sync-payout-statuses", "--batch", batch_id)
        assert proc.returncode == 0, proc.stderr
        assert f"batch {batch_id} (paypal): submitted → partially_completed" in proc.stdout
        assert "paid (SUCCESS, applied)" in proc.stdout and "failed (FAILED" in proc.stdout
        assert CLIENT_SECRET not in proc.stdout + proc.stderr

        assert_one_line_error(
            run("sync-payout-statuses", "--batch", "pb_nope"), "no payout batch 'pb_nope'"
        )

    report = run_json("report-payouts", "--batch", batch_id)
    assert (report["batch_id"], report["status"]) == (batch_id, "partially_completed")
    by_payee = {item["beneficiary"]: item for item in report["items"]}
    ann, bob = by_payee["ann"], by_payee["bob"]
    assert (ann["status"], ann["provider_status"]) == ("paid", "SUCCESS")
    assert (bob["status"], bob["provider_status"]) == ("failed", "FAILED")
    assert ann["destination"] == "a***@example.com", "destinations are masked"
    assert ann["gateway_item_id"] and ann["gateway_batch_id"] == report["gateway_batch_id"]
    assert (ann["amount_minor"], ann["amount"], ann["currency"]) == (10_000, "100.00", "USD")
    assert ann["earnings"] == [
        {"external_id": "E-ann", "amount_minor": 10_000, "currency": "USD", "status": "paid"}
    ]
    [funding] = ann["funding"]
    assert {k: funding[k] for k in ("source", "external_id", "funded_minor", "status")} == {
        "source": "paypal",
        "external_id": "S-paypal-USD",
        "funded_minor": 10_000,
        "status": "confirmed",
    }
    assert funding["occurred_at"].startswith("2026-11-20")
    assert bob["earnings"] == [], "a failed item's earning went back to the pool"

    table = run("report-payouts", "--batch", batch_id, env={**os.environ, "COLUMNS": "250"})
    assert table.returncode == 0 and "a***@example.com" in table.stdout
    assert_one_line_error(run("report-payouts", "--batch", "pb_nope"), "no payout batch 'pb_nope'")


def test_sync_by_hand_with_the_gateway_down_says_so_in_one_line(
    books: Engine,
    finsup_env: Path,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = LedgerResource(url=ledger_url, home=str(finsup_env))
    with payout_sandbox(tmp_path) as sandbox:
        gateway_for = gateways(submission_resources(sandbox, ledger, tmp_path / "outbox"))
        batch_id = submitted_batch(books, gateway_for, {"ann": ("ann@example.com", "10.00")})
    # The sandbox is gone: nothing answers at its address any more.
    monkeypatch.setenv("FINSUP_PAYPAL_PAYOUTS_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("FINSUP_PAYPAL_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("FINSUP_PAYPAL_CLIENT_SECRET", CLIENT_SECRET)
    proc = run("sync-payout-statuses", "--json")
    assert proc.returncode == 1
    assert_one_line_error(proc, f"polling payout statuses: batch {batch_id}: ")
    result = json.loads(proc.stdout)
    assert not result["succeeded"] and result["applied"] == 0
    [polled] = result["batches"]
    assert polled["batch_id"] == batch_id and polled["status_after"] == "submitted"
    assert polled["error"] and result["errors"] == [f"batch {batch_id}: {polled['error']}"]
    assert CLIENT_SECRET not in proc.stdout + proc.stderr
    assert run_json("report-payouts", "--batch", batch_id)["status"] == "submitted"
