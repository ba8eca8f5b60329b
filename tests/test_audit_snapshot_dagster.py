"""The audit assets and the monthly schedule, in Dagster (one SQLite ledger: the ledger side
is tested on both backends in test_audit_snapshot.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from finsup_dagster.assets.audit import audit_snapshot, tax_report
from finsup_dagster.audit.verify import verify_snapshot
from finsup_dagster.ledger import clock, db, migrate
from finsup_dagster.resources import LedgerResource
from finsup_dagster.schedules import monthly_audit_snapshot_schedule
from tests.helpers.audit_books import build, fake_warehouse


def test_assets_write_a_verifiable_snapshot_and_the_tax_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    build(engine)
    engine.dispose()
    warehouse = fake_warehouse(tmp_path / "warehouse.duckdb")
    resources = {
        "ledger": LedgerResource(url=url, home=str(tmp_path)),
        "duckdb": DuckDBResource(database=str(warehouse)),
    }
    result = dg.materialize(
        [audit_snapshot],
        resources=resources,
        run_config={"ops": {"audit__audit_snapshot": {"config": {"file_name": "2026-11.duckdb"}}}},
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert {"manifest", "size_bytes", "chain_head_hash", "snapshot_digest"} <= set(meta)
    report = verify_snapshot(tmp_path / "snapshots" / "2026-11.duckdb")
    assert report.ok and report.digest == meta["snapshot_digest"].value
    year = clock.now()[:4]
    taxed = dg.materialize([tax_report], resources=resources, partition_key=year)
    assert taxed.success
    assert (tmp_path / "reports" / f"tax_report_{year}.csv").read_text().count("\n") == 2


def test_monthly_schedule_is_off_and_snapshots_the_month_just_ended() -> None:
    assert monthly_audit_snapshot_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    )
    request = monthly_audit_snapshot_schedule.evaluate_tick(context).run_requests
    assert request is not None
    [run] = request
    assert run.run_key == "audit-snapshot-2026-11"
    config = run.run_config["ops"]["audit__audit_snapshot"]["config"]
    assert config == {"as_of": "2026-12-01T00:00:00+00:00", "file_name": "2026-11.duckdb"}
