"""The Dagster layer: real in-process runs over real ledgers, checks that can fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_duckdb import DuckDBResource

from finsup_dagster.assets.balances import audit_chain_intact, available_balance, journal_balanced
from finsup_dagster.assets.raw import raw_assets, raw_key
from finsup_dagster.assets.revenue import revenue_events
from finsup_dagster.definitions import defs
from finsup_dagster.demo import SAMPLE_DATA, SAMPLE_START, sample_days
from finsup_dagster.ledger import db, migrate
from finsup_dagster.resources import LedgerResource, PayPalReportingResource
from finsup_dagster.sample_data.generate import generate_sample
from finsup_dagster.warehouse.reports import EXCEPTION_KINDS
from tests.helpers.cli import FINSUP

# Revenue from files only: the raw landing assets, the ledger, the balance and its checks.
ASSETS = [
    *[a for a in raw_assets if a.key in (raw_key("revenue"), raw_key("paypal-transactions"))],
    revenue_events,
    available_balance,
    journal_balanced,
    audit_chain_intact,
]
SAMPLE_DAYS = ("2026-11-20", "2026-11-21")


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path) -> Iterator[LedgerResource]:
    home = tmp_path / "home"
    shutil.copytree(SAMPLE_DATA / "revenue", home / "landing" / "revenue")
    resource = LedgerResource(url=ledger_url, home=str(home))
    migrate.upgrade(resource.engine)
    yield resource
    resource.engine.dispose()


def materialize(ledger: LedgerResource) -> list[dg.ExecuteInProcessResult]:
    """Both sample days in order, as the nightly job would land them."""
    resources = {
        "ledger": ledger,
        "duckdb": DuckDBResource(database=str(Path(ledger.home) / "warehouse.duckdb")),
        "paypal": PayPalReportingResource(),  # no base URL: files only
    }
    return [
        dg.materialize(ASSETS, resources=resources, partition_key=day, raise_on_error=False)
        for day in SAMPLE_DAYS
    ]


def total(results: list[dg.ExecuteInProcessResult], node: str, key: str) -> int:
    return sum(
        int(r.asset_materializations_for_node(node)[0].metadata[key].value)  # type: ignore[arg-type]
        for r in results
    )


def test_sample_days_land_in_the_books_and_compute_balances(ledger: LedgerResource) -> None:
    results = materialize(ledger)
    assert all(r.success for r in results)
    assert total(results, "ledger__revenue_events", "inserted") == 12
    assert total(results, "ledger__revenue_events", "rejected") == 2  # 12.345 USD; a JSON number
    assert (
        total(results, "ledger__revenue_events", "status_advanced") == 1
    )  # PP-5TY0004, a day later
    ingest_md = results[-1].asset_materializations_for_node("ledger__revenue_events")[0].metadata
    assert ingest_md["confirmed_net_USD_minor"].value == 48990 - 3075
    balance_md = (
        results[-1].asset_materializations_for_node("ledger__available_balance")[0].metadata
    )
    assert balance_md["available_JPY_minor"].value == 15000
    assert balance_md["available_KWD"].value == "34.750 KWD"
    assert balance_md["available_EUR_minor"].value == 7550
    assert "| USD | 459.15 |" in str(balance_md["balances"].value)
    checks = {e.check_name: e.passed for r in results for e in r.get_asset_check_evaluations()}
    assert checks["journal_balanced"] and checks["audit_chain_intact"]
    assert checks["files_parsed"]

    again = materialize(ledger)  # the same days again: files already landed, nothing changes
    assert total(again, "ledger__revenue_events", "inserted") == 0
    assert total(again, "ledger__revenue_events", "status_advanced") == 0
    raw_md = again[0].asset_materializations_for_node("raw_revenue_files")[0].metadata
    assert (raw_md["files_landed"].value, raw_md["files_already_landed"].value) == (0, 2)
    again_md = again[-1].asset_materializations_for_node("ledger__available_balance")[0].metadata
    assert again_md["available_USD_minor"].value == balance_md["available_USD_minor"].value


def test_unbalanced_journal_fails_the_blocking_check(ledger: LedgerResource) -> None:
    assert all(r.success for r in materialize(ledger))
    with db.read(ledger.engine) as conn:
        entry = conn.execute(sa.text("SELECT min(id) FROM journal_entries")).scalar_one()
    with ledger.engine.begin() as conn:  # an edit outside the books' API, as a bad actor would
        conn.execute(
            sa.text(
                "UPDATE postings SET amount_minor = amount_minor + 1 WHERE id = "
                "(SELECT min(id) FROM postings WHERE entry_id = :e)"
            ),
            {"e": entry},
        )
    result = materialize(ledger)[-1]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["journal_balanced"].passed is False
    assert checks["journal_balanced"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["journal_balanced"].metadata["unbalanced_entries"].value == 1


def test_definitions_load_with_env_resources() -> None:
    job = defs.resolve_job_def("nightly_reconciliation")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {
        "ledger/revenue_events",
        "warehouse/raw/paypal_stl",
        "warehouse/ledger_replica",
        "warehouse/reconciliation_matches",
        "ledger/revenue_confirmations",
        "ledger/available_balance",
    } <= keys
    assert not any(k.startswith("ledger/earnings") or "payout" in k for k in keys)
    payout_keys = {
        k.to_user_string()
        for k in defs.resolve_job_def("create_payout_batches").asset_layer.executable_asset_keys
    }
    assert payout_keys == {"ledger/earnings", "ledger/payout_batches"}
    for spec in defs.resolve_all_asset_specs():
        assert spec.code_version, spec.key
        assert spec.owners and spec.description and spec.kinds, spec.key


def test_finsup_demo_runs_the_main_job_through_the_instance(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINSUP_", "DAGSTER_"))}
    env["FINSUP_HOME"] = str(tmp_path / ".finsup")
    proc = subprocess.run(
        [FINSUP, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    days = sample_days()
    for day in days:
        assert f"nightly_reconciliation {day}: succeeded" in proc.stdout
    assert "create_payout_batches: succeeded" in proc.stdout
    assert "audit chain intact" in proc.stdout
    assert "chen" in proc.stdout and "DE89 **** 3000" in proc.stdout, "a batch is pending approval"
    home = tmp_path / ".finsup" / "dagster_home"
    assert (home / "dagster.yaml").read_text().count("enabled: false") == 1
    instance = dg.DagsterInstance.from_config(str(home))
    runs = sorted(
        (r.job_name, r.tags.get("dagster/partition"), r.status) for r in instance.get_runs()
    )
    assert runs == sorted(
        [("nightly_reconciliation", day, dg.DagsterRunStatus.SUCCESS) for day in days]
        + [("create_payout_batches", None, dg.DagsterRunStatus.SUCCESS)]
    )
    # The generator worked out each day's reconciliation on its own; the pipeline agrees.
    manifest = generate_sample(
        tmp_path / "again", tmp_path / "again-sandbox", start=SAMPLE_START, days=len(days) - 1
    )
    for day, want in manifest.expected["by_day"].items():
        report = json.loads(
            subprocess.run(
                [FINSUP, "report-reconciliation", "--date", day, "--json"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        assert (report["matched"], report["matched_to_date"]) == (
            want["matched_today"],
            want["matched_total"],
        ), day
        exceptions = dict(want["exceptions"])
        if (
            "batch_amount_mismatch" in exceptions
        ):  # the summary counts a batch under amount_mismatch
            batch = exceptions.pop("batch_amount_mismatch")
            exceptions["amount_mismatch"] = exceptions.get("amount_mismatch", 0) + batch
        assert {k: report[k] for k in EXCEPTION_KINDS if report[k]} == exceptions, day
    held = list((tmp_path / ".finsup" / "quarantine").rglob("*.reason.txt"))
    assert len(held) == len(manifest.broken_files) == 2
