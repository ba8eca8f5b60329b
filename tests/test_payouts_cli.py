"""The payout workflow through the `finsup` command, as an operator and approvers run it."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import dagster as dg
import pyotp
import pytest

from finsup_dagster.ledger.revenue import event_hash
from finsup_dagster.ledger.secret_box import generate_key
from tests.helpers.cli import assert_one_line_error, run, run_json
from tests.helpers.files import write_csv

PEOPLE_COLUMNS = [
    "external_id",
    "name",
    "payout_method",
    "destination",
    "country",
    "kyc_status",
    "sanctions_status",
]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def payout_env(finsup_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FINSUP_SECRET_KEY", generate_key())
    monkeypatch.setenv("DAGSTER_HOME", str(finsup_env / "dagster_home"))
    monkeypatch.setenv("FINSUP_DUAL_APPROVAL_OVER", "USD=100.00")
    assert run("init").returncode == 0
    return finsup_env


def enrol(name: str, limit: str) -> str:
    proc = run("add-approver", name, "--limit", limit, "--currency", "USD")
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"otpauth://totp/[^\s]*secret=([A-Z2-7]+)", proc.stdout)
    assert match, proc.stdout
    assert "█" in proc.stdout or "▀" in proc.stdout, "a QR code is printed"
    return match.group(1)


def wrong_code(secret: str) -> str:
    valid = {pyotp.TOTP(secret).at(time.time() + d) for d in (-30, 0, 30, 60)}
    return next(c for c in ("000000", "000001", "000002", "000003", "000004") if c not in valid)


def test_operator_and_approvers_end_to_end(payout_env: Path, tmp_path: Path) -> None:
    revenue = write_csv(
        tmp_path / "rev.csv",
        [
            ["paypal", "S1", "150.00", "USD", "2026-11-20T10:00:00Z", "sale", "confirmed"],
            ["paypal", "S2", "50.00", "USD", "2026-11-20T11:00:00Z", "sale", "confirmed"],
        ],
    )
    assert run("ingest-revenue", str(revenue)).returncode == 0

    h1 = event_hash("paypal", "S1", 15000, "USD", "2026-11-20T10:00:00.000000Z", "sale")
    h2 = event_hash("paypal", "S2", 5000, "USD", "2026-11-20T11:00:00.000000Z", "sale")

    people = write_rows(
        tmp_path / "people.csv",
        [*PEOPLE_COLUMNS, "tax_id"],
        [
            ["ann", "Ann", "paypal", "ann@example.com", "US", "verified", "clear", "123-45-6789"],
            ["bob", "Bob", "paypal", "bob@example.com", "US", "pending", "clear", ""],
            ["bad", "Bad", "paypal", "not-an-email", "US", "verified", "clear", "999-99-1234"],
        ],
    )
    proc = run("import-beneficiaries", str(people), "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["created"] == 2
    rejects = (tmp_path / "people.csv.rejects.csv").read_text()
    assert (
        "not an email address" in rejects and "****1234" in rejects and "999-99-1234" not in rejects
    )

    work = write_rows(
        tmp_path / "earnings.csv",
        ["external_id", "beneficiary", "amount", "currency", "event_hashes"],
        [
            ["E1", "ann", "120.00", "USD", h1],
            ["E2", "ann", "40.00", "USD", f"{h1};{h2}"],
            ["E3", "bob", "10.00", "USD", h2],
            ["E4", "ann", "60.00", "USD", h2],
        ],
    )
    proc = run("ingest-earnings", str(work), "--json")
    assert proc.returncode == 1
    [summary] = json.loads(proc.stdout)
    assert (summary["created"], summary["rejected"]) == (3, 1)
    assert "exceeds the 30.00 USD" in (tmp_path / "earnings.csv.rejects.csv").read_text()

    batches = run_json("create-payout-batches")
    assert [
        (b["method"], b["currency"], b["total_minor"], b["item_count"], b["required_approvals"])
        for b in batches
    ] == [("paypal", "USD", 16000, 1, 2)]
    batch = batches[0]["batch_id"]
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    assert [r.job_name for r in instance.get_runs()] == ["create_payout_batches"], (
        "the run shows in the UI"
    )
    assert run_json("create-payout-batches") == [], "building again creates nothing"

    [pending] = run_json("report-pending-approval")
    [item] = pending["items"]
    assert (item["beneficiary"], item["destination"], item["amount_minor"]) == (
        "ann",
        "a***@example.com",
        16000,
    )
    assert {f["event_hash"]: f["amount_minor"] for f in item["funded_by"]} == {h1: 15000, h2: 1000}

    assert_one_line_error(
        run(
            "add-approver",
            "x",
            "--limit",
            "1",
            "--currency",
            "USD",
            env={k: v for k, v in os.environ.items() if k != "FINSUP_SECRET_KEY"},
        ),
        "FINSUP_SECRET_KEY is not set",
    )
    carol, dave, erin = enrol("carol", "500.00"), enrol("dave", "500.00"), enrol("erin", "500.00")
    code = pyotp.TOTP(carol).now()
    out = run("approve-payout-batch", batch, "--approver", "carol", "--code", code)
    assert out.returncode == 0 and "a second approver is needed" in out.stdout
    assert_one_line_error(
        run("approve-payout-batch", batch, "--approver", "carol", "--code", code), "already used"
    )
    assert_one_line_error(
        run("approve-payout-batch", batch, "--approver", "dave", "--code", wrong_code(dave)),
        "wrong or expired",
    )
    assert_one_line_error(
        run(
            "approve-payout-batch",
            "pb_nope",
            "--approver",
            "erin",
            "--code",
            pyotp.TOTP(erin).now(),
        ),
        "no payout batch 'pb_nope'",
    )

    assert run("freeze-payouts", "--reason", "audit").returncode == 0
    assert_one_line_error(run("create-payout-batches"), "payouts are frozen")
    unfreeze = run(
        "unfreeze-payouts",
        "--approver",
        "carol",
        "--code",
        pyotp.TOTP(carol).at(
            pyotp.TOTP(carol).timecode(__import__("datetime").datetime.now()) * 30 + 30
        ),
    )
    assert unfreeze.returncode == 0, unfreeze.stderr

    approved = run_json(
        "approve-payout-batch", batch, "--approver", "dave", "--code", pyotp.TOTP(dave).now()
    )
    assert approved["status"] == "approved" and approved["approval_version"] == 1
    assert run_json("report-pending-approval") == []
    assert_one_line_error(
        run("cancel-payout-batch", batch, "--reason", "oops"), "needs --approver and --code"
    )

    log = run("report-transaction-logs", "--json", "--limit", "1000").stdout
    assert carol not in log and dave not in log and code not in log
    actions = [r["action"] for r in json.loads(log)]
    for expected in (
        "beneficiary_created",
        "earning_accrued",
        "batch_created",
        "batch_approval_recorded",
        "batch_approval_refused",
        "payouts_frozen",
        "payouts_unfrozen",
        "batch_approved",
    ):
        assert expected in actions
    assert run("verify-audit-chain").returncode == 0


def test_held_earnings_through_the_command(payout_env: Path, tmp_path: Path) -> None:
    """A sale reversed after it funded an earning: held, reported, then released or cancelled."""
    sales = [
        ["paypal", f"S{n}", "80.00", "USD", "2026-11-20T10:00:00Z", "sale", "confirmed"]
        for n in (1, 2)
    ]
    assert run("ingest-revenue", str(write_csv(tmp_path / "rev.csv", sales))).returncode == 0
    h1, h2 = (
        event_hash("paypal", f"S{n}", 8000, "USD", "2026-11-20T10:00:00.000000Z", "sale")
        for n in (1, 2)
    )
    people = write_rows(
        tmp_path / "people.csv",
        PEOPLE_COLUMNS,
        [["ann", "Ann", "paypal", "ann@example.com", "US", "verified", "clear"]],
    )
    assert run("import-beneficiaries", str(people)).returncode == 0
    work = write_rows(
        tmp_path / "earnings.csv",
        ["external_id", "beneficiary", "amount", "currency", "event_hashes"],
        [["E1", "ann", "50.00", "USD", h1], ["E2", "ann", "30.00", "USD", h2]],
    )
    assert run("ingest-earnings", str(work)).returncode == 0
    assert run_json("report-held-earnings") == {"held": [], "clawbacks": []}

    gone = write_csv(
        tmp_path / "gone.csv",
        [
            ["paypal", "S1", "80.00", "USD", "2026-11-20T10:00:00Z", "sale", "reversed"],
            ["paypal", "S2", "80.00", "USD", "2026-11-21T09:00:00Z", "chargeback", "confirmed"],
        ],
    )
    proc = run("ingest-revenue", str(gone), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["earnings_held"] == 2
    report = run_json("report-held-earnings")
    assert [(h["earning"], h["status"], h["amount_minor"]) for h in report["held"]] == [
        ("E1", "on_hold", 5000),
        ("E2", "on_hold", 3000),
    ]
    assert (
        "reversed" in report["held"][0]["reason"] and "charged back" in report["held"][1]["reason"]
    )
    table = run("report-held-earnings")
    assert "E1" in table.stdout and "50.00 USD" in table.stdout

    carol, dave, erin = enrol("carol", "500.00"), enrol("dave", "500.00"), enrol("erin", "500.00")
    assert_one_line_error(
        run(
            "release-earning",
            "E1",
            "--approver",
            "carol",
            "--code",
            wrong_code(carol),
            "--reason",
            "ok",
        ),
        "wrong or expired",
    )
    assert_one_line_error(
        run(
            "release-earning",
            "E9",
            "--approver",
            "erin",
            "--code",
            pyotp.TOTP(erin).now(),
            "--reason",
            "ok",
        ),
        "no earning 'E9'",
    )
    released = run(
        "release-earning",
        "E1",
        "--approver",
        "carol",
        "--code",
        pyotp.TOTP(carol).now(),
        "--reason",
        "paid from other revenue",
    )
    assert released.returncode == 0, released.stderr
    assert "E1 released by carol; it is accrued" in released.stdout
    cancelled = run(
        "cancel-earning",
        "E2",
        "--approver",
        "dave",
        "--code",
        pyotp.TOTP(dave).now(),
        "--reason",
        "charged back",
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert run_json("report-held-earnings")["held"] == []
    logs = run_json("report-transaction-logs", "--entity", "earning")
    assert [r["action"] for r in logs if r["action"] != "earning_accrued"] == [
        "earning_held",
        "earning_held",
        "earning_release_refused",
        "earning_release_refused",
        "earning_released",
        "earning_cancelled",
    ]
    joined = json.dumps(logs)
    assert all(secret not in joined for secret in (carol, dave, erin))  # secrets stay out
