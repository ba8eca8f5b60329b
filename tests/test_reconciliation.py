"""The nightly reconciliation, end to end: real files in every format, the PayPal
sandbox over loopback HTTP, DuckDB, dbt and the ledger (SQLite and PostgreSQL).

Nothing is mocked. The scenario (tests/reconciliation_scenario.py) is small
enough to work out the books by hand, so every assertion is an exact number.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_duckdb import DuckDBResource

from finsup_dagster.definitions import defs
from finsup_dagster.gateways.sandbox import create_app, serve_in_thread
from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.balance import available_balances
from finsup_dagster.ledger.schema import revenue_events as revenue_table
from finsup_dagster.resources import (
    LedgerResource,
    PayPalReportingResource,
    ReconciliationPolicyResource,
)
from finsup_dagster.resources.dbt import DBT_PROJECT_DIR
from finsup_dagster.schedules import nightly_reconciliation_schedule
from finsup_dagster.warehouse import reports
from tests.helpers.dbt_runner import dbt_resource
from tests.helpers.nightly import CLIENT, NIGHTLY_ASSETS, checks, metadata, nightly, warehouse
from tests.helpers.reconciliation_scenario import (
    DAY1,
    DAY2,
    EXPECTED_AVAILABLE,
    EXPECTED_EXCEPTIONS,
    EXPECTED_MATCHES,
    EXPECTED_PROJECTED,
    land_scenario,
)


@pytest.fixture
def pipeline(ledger_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    sandbox_dir = tmp_path / "sandbox"
    sandbox_dir.mkdir()
    land_scenario(home, sandbox_dir)
    ledger = LedgerResource(url=ledger_url, home=str(home))
    migrate.upgrade(ledger.engine)
    with serve_in_thread(create_app(sandbox_dir, *CLIENT)) as base_url:
        yield {
            "dbt": dbt_resource(),
            "ledger": ledger,
            "duckdb": DuckDBResource(database=str(tmp_path / "warehouse.duckdb")),
            "paypal": PayPalReportingResource(
                base_url=base_url, client_id=CLIENT[0], client_secret=CLIENT[1]
            ),
            "reconciliation_policy": ReconciliationPolicyResource(unmatched_rate_threshold="0.05"),
        }
    ledger.engine.dispose()


def _dbt_log_files() -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (DBT_PROJECT_DIR / "logs").glob("*")
    }


def test_two_nights_reconcile_every_format_exactly(pipeline: dict[str, Any]) -> None:
    home = Path(pipeline["ledger"].home)
    environment = dict(os.environ)
    stale_logs = _dbt_log_files()
    first = nightly(pipeline, DAY1)
    assert first.success
    # dbt got the warehouse path from the run's vars: no asset rewrote the environment.
    assert dict(os.environ) == environment
    assert _dbt_log_files() == stale_logs, "dbt's logs belong to the run's scratch folder"
    revenue_md = metadata(first, "ledger/revenue_events")
    # 6 CSV rows (PO-5 rejected: 12.345 USD), 4 JSONL rows, 3 from the PayPal API.
    assert (revenue_md["inserted"], revenue_md["rejected"]) == (12, 1)
    rejects = home / "landing" / "revenue" / DAY1 / "payoneer.csv.rejects.csv"
    assert "PO-5" in rejects.read_text() and "3 decimals" in rejects.read_text()
    api_md = metadata(first, "warehouse/raw/paypal_transactions")
    assert (api_md["api_pages_fetched"], api_md["rows_landed"]) == (1, 3)
    conn = warehouse(pipeline)
    assert reports.report(conn, DAY1)["matched"] == 0
    assert {(e["exception_kind"], e["external_id"]) for e in reports.exceptions(conn, DAY1)} == {
        ("unmatched_revenue", "PO-6"),
        ("stale_projected", "AS-4"),
    }
    conn.close()

    second = nightly(pipeline, DAY2)
    assert second.success, [e.message for e in second.all_events if e.is_failure]

    # The re-sent settlement file is the same bytes: landed once.
    csv_md = metadata(second, "warehouse/raw/settlement_csv")
    assert (csv_md["files_landed"], csv_md["files_already_landed"], csv_md["rows_landed"]) == (
        2,
        1,
        6,
    )
    # The STL with a wrong file footer and the truncated statement are quarantined, with reasons.
    results = checks(second)
    footer = results[("warehouse/raw/paypal_stl", "settlement_footer_totals")]
    assert not footer.passed and footer.severity == dg.AssetCheckSeverity.ERROR
    assert "STL-20261121.02.009.CSV" in (footer.description or "")
    assert not results[("warehouse/raw/camt053", "files_parsed")].passed
    assert results[("warehouse/raw/settlement_csv", "files_parsed")].passed
    assert results[("warehouse/raw/paypal_stl", "settlement_expectations")].passed
    assert results[("warehouse/raw/paypal_transactions", "paypal_api_fetched")].passed
    held = home / "quarantine" / "paypal-stl" / DAY2
    assert (held / "STL-20261121.02.009.CSV").exists()
    reason = (held / "STL-20261121.02.009.CSV.reason.txt").read_text()
    assert "error: FooterMismatch" in reason and "FF" in reason
    assert not (home / "landing" / "paypal-stl" / DAY2 / "STL-20261121.02.009.CSV").exists()
    camt_reason = home / "quarantine" / "camt053" / DAY2 / "statement-truncated.xml.reason.txt"
    assert "error: MalformedFile" in camt_reason.read_text()
    # dbt tests ran as asset checks on the models, and passed.
    dbt_checks = [c for (asset, _), c in results.items() if asset.startswith("warehouse/reconc")]
    assert len(dbt_checks) >= 10 and all(c.passed for c in dbt_checks)

    conn = warehouse(pipeline)
    matched = conn.execute(
        "SELECT source, external_id, match_rule FROM reconciliation_matches WHERE run_date <= ?",
        [DAY2],
    ).fetchall()
    assert {(s, x): r for s, x, r in matched} == EXPECTED_MATCHES
    found = sorted(
        (e["exception_kind"], e["external_id"] or e["gateway_txn_id"])
        for e in reports.exceptions(conn, DAY2)
    )
    assert found == EXPECTED_EXCEPTIONS
    report = reports.report(conn, DAY2)
    assert report["matched"] == 8 and report["matched_to_date"] == 8
    assert report["totals"]["matched"]["USD"] == {
        "items": 4,
        "net_amount_minor": 5000 + 2000 - 1000 + 10000,
        "fee_minor": 175 + 88 - 30 + 200,
    }
    conn.close()

    confirm_md = metadata(second, "ledger/revenue_confirmations")
    # PP-1, PP-R (confirmed by the API) and nothing else was confirmed already.
    assert (confirm_md["confirmed"], confirm_md["already_confirmed"]) == (6, 2)
    assert confirm_md["fees_posted"] == 7  # six fees charged, one returned on the refund
    assert confirm_md["match_rate"] == round(1 - 2 / 10, 4)  # PO-6, AS-4 open of 10 due
    assert not results[("ledger/revenue_confirmations", "unmatched_rate")].passed
    stale = results[("ledger/revenue_confirmations", "stale_projected_events")]
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert results[("ledger/available_balance", "journal_balanced")].passed

    engine = pipeline["ledger"].engine
    assert _available(engine) == EXPECTED_AVAILABLE
    assert _projected(engine) == EXPECTED_PROJECTED

    # The same night again changes nothing in the books.
    again = nightly(pipeline, DAY2)
    assert again.success
    again_md = metadata(again, "ledger/revenue_confirmations")
    assert (again_md["confirmed"], again_md["fees_posted"]) == (0, 0)
    assert _available(engine) == EXPECTED_AVAILABLE
    conn = warehouse(pipeline)
    assert reports.report(conn, DAY2)["matched"] == 8
    conn.close()


def _available(engine: sa.Engine) -> dict[str, int]:
    with db.read(engine) as conn:
        return {b.currency: b.available_minor for b in available_balances(conn)}


def _projected(engine: sa.Engine) -> set[str]:
    with db.read(engine) as conn:
        rows = conn.execute(
            sa.select(revenue_table.c.external_id).where(revenue_table.c.status == "projected")
        )
        return {r[0] for r in rows}


def test_the_nightly_job_selects_exactly_these_assets() -> None:
    job = defs.resolve_job_def("nightly_reconciliation")
    in_job = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    tested = {
        k.to_user_string()
        for a in NIGHTLY_ASSETS
        if isinstance(a, dg.AssetsDefinition)
        for k in a.keys
    }
    assert in_job == tested


def test_schedule_runs_yesterday_at_two_in_the_finance_timezone() -> None:
    from datetime import UTC, datetime

    schedule = defs.resolve_schedule_def("nightly_reconciliation_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 22, 2, tzinfo=UTC)
    )
    request = nightly_reconciliation_schedule(context)
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2026-11-21", "nightly-2026-11-21")
