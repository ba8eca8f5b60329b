"""The Dagster layer: real in-process runs over real ledgers, checks that can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from finsup_dagster.assets.balances import audit_chain_intact, available_balance, journal_balanced
from finsup_dagster.assets.revenue import revenue_events
from finsup_dagster.definitions import defs
from finsup_dagster.demo import SAMPLE_DATA
from finsup_dagster.ledger import db, migrate
from finsup_dagster.resources import LedgerResource
from tests.test_cli import FINSUP

ASSETS = [revenue_events, available_balance, journal_balanced, audit_chain_intact]


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path) -> Iterator[LedgerResource]:
    home = tmp_path / "home"
    shutil.copytree(SAMPLE_DATA / "revenue", home / "landing" / "revenue")
    resource = LedgerResource(url=ledger_url, home=str(home))
    migrate.upgrade(resource.engine)
    yield resource
    resource.engine.dispose()


def materialize(ledger: LedgerResource) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, resources={"ledger": ledger}, raise_on_error=False)


def test_books_job_lands_samples_and_computes_balances(ledger: LedgerResource) -> None:
    result = materialize(ledger)
    assert result.success
    ingest_md = result.asset_materializations_for_node("ledger__revenue_events")[0].metadata
    assert ingest_md["inserted"].value == 12
    assert ingest_md["rejected"].value == 2  # 12.345 USD and a JSON number amount
    assert ingest_md["status_advanced"].value == 1  # PP-5TY0004 confirmed a day later
    assert ingest_md["confirmed_net_USD_minor"].value == 48990 - 3075
    balance_md = result.asset_materializations_for_node("ledger__available_balance")[0].metadata
    assert balance_md["available_JPY_minor"].value == 15000
    assert balance_md["available_KWD"].value == "34.750 KWD"
    assert balance_md["available_EUR_minor"].value == 7550
    assert "| USD | 459.15 |" in str(balance_md["balances"].value)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"journal_balanced": True, "audit_chain_intact": True}

    again = materialize(ledger)  # landed files re-read: nothing changes
    md = again.asset_materializations_for_node("ledger__revenue_events")[0].metadata
    assert (md["inserted"].value, md["status_advanced"].value) == (0, 0)
    again_md = again.asset_materializations_for_node("ledger__available_balance")[0].metadata
    assert again_md["available_USD_minor"].value == balance_md["available_USD_minor"].value


def test_unbalanced_journal_fails_the_blocking_check(ledger: LedgerResource) -> None:
    assert materialize(ledger).success
    with db.read(ledger.engine) as conn:
        entry = conn.execute(sa.text("SELECT min(id) FROM journal_entries")).scalar_one()
    with ledger.engine.begin() as conn:  # an edit outside the books' API, as a bad actor would
        conn.execute(
            sa.text("UPDATE postings SET amount_minor = amount_minor + 1 WHERE id = "
                    "(SELECT min(id) FROM postings WHERE entry_id = :e)"),
            {"e": entry},
        )  # fmt: skip
    result = materialize(ledger)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["journal_balanced"].passed is False
    assert checks["journal_balanced"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["journal_balanced"].metadata["unbalanced_entries"].value == 1


def test_definitions_load_with_env_resources() -> None:
    job = defs.resolve_job_def("books")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == {"ledger/revenue_events", "ledger/available_balance"}
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
        [FINSUP, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "books job: succeeded" in proc.stdout
    assert (
        "229.15" in proc.stdout and "audit chain intact" in proc.stdout
    )  # 459.15 less 230.00 committed
    home = tmp_path / ".finsup" / "dagster_home"
    assert (home / "dagster.yaml").read_text().count("enabled: false") == 1
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs()
    assert sorted((r.job_name, r.status) for r in runs) == [
        ("books", dg.DagsterRunStatus.SUCCESS),
        ("create_payout_batches", dg.DagsterRunStatus.SUCCESS),
    ]
    assert "create_payout_batches job: succeeded" in proc.stdout
    assert "chen" in proc.stdout and "DE89 **** 3000" in proc.stdout, "a batch is pending approval"
