"""`finsup reconcile` and `finsup report-reconciliation` as an operator uses them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dagster as dg

from finsup_dagster.formats import write_stl
from finsup_dagster.warehouse.reports import EXCEPTION_KINDS
from tests.helpers.cli import FINSUP, assert_one_line_error

DAY = "2026-11-21"


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINSUP_", "DAGSTER_"))}
    env["FINSUP_HOME"] = str(home)  # everything else: the embedded defaults (SQLite, DuckDB)
    return env


def finsup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FINSUP, *args], env=env, capture_output=True, text=True, timeout=300)


def test_reconcile_a_day_through_the_instance_and_fail_on_a_bad_footer(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = env_for(home)
    assert finsup(env, "init").returncode == 0
    revenue = home / "landing" / "revenue" / DAY / "sales.csv"
    revenue.parent.mkdir(parents=True)
    revenue.write_text(
        "source,external_id,amount,currency,occurred_at,kind,status\n"
        "paypal,PP-1,10.00,USD,2026-11-21T09:00:00Z,sale,projected\n"
    )
    stl_dir = home / "landing" / "paypal-stl" / DAY
    stl_dir.mkdir(parents=True)
    line = {
        "row_number": 1,
        "record_ref": "PP-1",
        "gateway_txn_id": "PP-1",
        "batch_ref": None,
        "batch_net_minor": None,
        "event_code": None,
        "kind": "sale",
        "direction": "credit",
        "gross_minor": 1000,
        "currency": "USD",
        "fee_minor": 59,
        "fee_currency": "USD",
        "settled_on": DAY,
        "occurred_at": None,
        "description": None,
        "raw": "{}",
    }
    write_stl(stl_dir / "STL-20261121.01.009.CSV", [line], report_date=DAY, account_id="A")
    write_stl(
        stl_dir / "STL-20261121.02.009.CSV",
        [{**line, "gateway_txn_id": "PP-2"}],
        report_date=DAY,
        account_id="A",
        corrupt="SC",
    )

    proc = finsup(env, "reconcile", "--date", DAY)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"nightly_reconciliation for {DAY}: succeeded" in proc.stdout
    assert (
        "ERROR: warehouse/raw/paypal_stl settlement_footer_totals: STL-20261121.02" in proc.stdout
    )
    assert "matched to date: 1" in proc.stdout
    # The summary and the failed checks, each file named once; dbt's lines and
    # Dagster's warnings stay in the run's log.
    assert proc.stderr == ""
    assert "dbt" not in proc.stdout.lower() and len(proc.stdout.splitlines()) < 25
    footer = next(ln for ln in proc.stdout.splitlines() if "settlement_footer_totals" in ln)
    assert footer.count("STL-20261121.02.009.CSV") == 1

    report = json.loads(finsup(env, "report-reconciliation", "--date", DAY, "--json").stdout)
    assert report["date"] == DAY and report["matched"] == 1
    assert {k: report[k] for k in EXCEPTION_KINDS} == dict.fromkeys(EXCEPTION_KINDS, 0)
    assert report["totals"]["matched"] == {
        "USD": {"items": 1, "net_amount_minor": 1000, "fee_minor": 59}
    }
    latest = json.loads(finsup(env, "report-reconciliation", "--json").stdout)
    assert latest == report

    balance = json.loads(finsup(env, "available-balance", "--json").stdout)
    assert {b["currency"]: b["available_minor"] for b in balance} == {"USD": 941}  # 10.00 − 0.59

    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    runs = instance.get_runs()
    assert [(r.job_name, r.tags.get("dagster/partition")) for r in runs] == [
        ("nightly_reconciliation", DAY)
    ]

    assert_one_line_error(finsup(env, "reconcile", "--date", "2026-13-01"), "not a calendar date")
    assert_one_line_error(
        finsup(env, "reconcile", "--date", "2024-12-31"), "not a reconciliation day"
    )
    assert_one_line_error(
        finsup(env, "report-reconciliation", "--date", "2026-11-19"), "has not been reconciled"
    )


def test_report_before_any_reconciliation_says_what_to_do(tmp_path: Path) -> None:
    env = env_for(tmp_path / "home")
    assert_one_line_error(finsup(env, "report-reconciliation"), "finsup reconcile --date")
