"""The warehouse's schema version, and `finsup rebuild-warehouse` (docs/reconciliation.md,
"Rebuilding the warehouse").

Real Dagster runs of the nightly assets, real dbt builds, a real DuckDB file, the
sandbox serving PayPal's API over loopback. The ledger is SQLite only here: the
rebuild reads the books through the same replica code either way, and the
replica's PostgreSQL path is tested in test_warehouse.py.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
from dagster_duckdb import DuckDBResource

from finsup_dagster import cli
from finsup_dagster.demo import SAMPLE_START
from finsup_dagster.gateways.sandbox import create_app, serve_in_thread
from finsup_dagster.ledger import migrate
from finsup_dagster.resources import (
    LedgerResource,
    PayPalReportingResource,
    ReconciliationPolicyResource,
)
from finsup_dagster.sample_data.generate import MIN_DAYS, generate_sample
from finsup_dagster.warehouse import raw, replica, version
from finsup_dagster.warehouse.connection import connect
from tests.helpers.dbt_runner import dbt_resource
from tests.helpers.nightly import CLIENT, mart_rows, nightly

NIGHTS = [(SAMPLE_START + timedelta(days=n)).isoformat() for n in range(MIN_DAYS)]
# What an analyst reads, and what the next night starts from. Keys and build times are
# the warehouse's own numbering (a rebuild numbers lines and events in one pass), so
# rows are compared by everything else, which names each line and event by its ids.
MARTS = (
    "reconciliation_matches",
    "reconciliation_exceptions",
    "reconciliation_summary",
    "reconciliation_open_lines",
    "reconciliation_open_events",
    "settlement_lines",
)
# A night's open events also keep those not due yet, with the status the books gave
# them: a rebuild copies the books as they are now, so it knows events ingested after
# that night and their later status (docs/reconciliation.md says so). What a night
# hands the next, the events due by it, is the same.
WHERE = {"reconciliation_open_events": "WHERE occurred_on <= CAST(run_date AS DATE)"}
SKIP = {"reconciliation_open_events": ("status",)}


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        out = {}
        for table in MARTS:
            out[table] = mart_rows(conn, table, SKIP.get(table, ()), WHERE.get(table, ""))
        return out


HOLD = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
    " print('holding', flush=True); time.sleep(120)"
)


def books(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}
        head = conn.execute(sa.text("SELECT max(seq) FROM transaction_log")).scalar()
    return {"counts": counts, "head": head}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A home with the generated sample, and the environment `finsup` reads."""
    home = tmp_path / "home"
    sandbox_dir = tmp_path / "sandbox"
    generate_sample(home, sandbox_dir, start=SAMPLE_START, days=MIN_DAYS)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    warehouse = tmp_path / "warehouse.duckdb"
    for key in ("FINSUP_PAYPAL_BASE_URL", "FINSUP_PAYPAL_CLIENT_ID", "FINSUP_PAYPAL_CLIENT_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FINSUP_HOME", str(home))
    monkeypatch.setenv("FINSUP_LEDGER_URL", url)
    monkeypatch.setenv("FINSUP_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    ledger = LedgerResource(url=url, home=str(home))
    migrate.upgrade(ledger.engine)
    with serve_in_thread(create_app(sandbox_dir, *CLIENT)) as base_url:
        yield {
            "home": home,
            "warehouse": warehouse,
            "ledger": ledger,
            "resources": {
                "dbt": dbt_resource(),
                "ledger": ledger,
                "duckdb": DuckDBResource(database=str(warehouse)),
                "paypal": PayPalReportingResource(
                    base_url=base_url, client_id=CLIENT[0], client_secret=CLIENT[1]
                ),
                "reconciliation_policy": ReconciliationPolicyResource(
                    unmatched_rate_threshold="0.05"
                ),
            },
        }
    ledger.engine.dispose()


def finsup(*args: str) -> tuple[int, str]:
    """`finsup` in process (the console script's own entry point)."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, buffer.getvalue()


def test_a_rebuilt_warehouse_holds_the_marts_the_nights_built(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for night in NIGHTS:  # the incremental path: one nightly run a day, PayPal by API
        assert nightly(env["resources"], night).success, night
    incremental = snapshot(env["warehouse"])
    assert len(incremental["reconciliation_matches"]) > 20
    assert {r[1] for r in incremental["reconciliation_exceptions"]} >= {"unmatched_settlement"}
    before = books(env["ledger"].engine)
    landing = sorted(p.relative_to(env["home"]) for p in (env["home"] / "landing").rglob("*"))

    # An upgrade of finsup that changed a table's shape: the warehouse says so when opened.
    with duckdb.connect(str(env["warehouse"])) as conn:
        conn.execute("UPDATE meta.schema_version SET version = 0").fetchall()
    capsys.readouterr()  # the nightly runs' own log lines
    code, _ = finsup("report-reconciliation", "--date", NIGHTS[-1])
    refused = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(refused) == 1, refused
    assert "no schema version" in refused[0] and "finsup rebuild-warehouse" in refused[0]

    code, out = finsup("rebuild-warehouse", "--json")
    assert code == 0, capsys.readouterr().err
    report = json.loads(out)
    assert report["nights"] == NIGHTS
    assert report["matches"] == len(incremental["reconciliation_matches"])
    assert report["quarantined"] == []
    # Byte for byte what the nights built, from the kept files (the PayPal pages
    # fetched before included: the sandbox is not asked again) and the books.
    assert snapshot(env["warehouse"]) == incremental
    kept = Path(report["old_warehouse_kept_as"])
    assert kept.parent == env["warehouse"].parent and kept.exists()
    assert books(env["ledger"].engine) == before  # read, never written
    assert sorted(p.relative_to(env["home"]) for p in (env["home"] / "landing").rglob("*")) == (
        landing
    )
    with connect(env["warehouse"], read_only=True) as conn:  # the new one opens
        version.check(conn)

    # And the next night goes on from the rebuilt one.
    following = (SAMPLE_START + timedelta(days=MIN_DAYS)).isoformat()
    assert nightly(env["resources"], following).success


def test_a_warehouse_of_another_version_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as conn:
        raw.ensure_schema(conn)  # a new warehouse is stamped with this version
        assert version.found(conn) == version.SCHEMA_VERSION
        replica.ensure_schema(conn)
        conn.execute("UPDATE meta.schema_version SET version = 99").fetchall()
        for ensure in (raw.ensure_schema, replica.ensure_schema):
            with pytest.raises(version.WarehouseVersionMismatch, match="is schema version 99"):
                ensure(conn)
        tables = conn.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    with (
        pytest.raises(version.WarehouseVersionMismatch, match="finsup rebuild-warehouse"),
        connect(path, read_only=True),
    ):
        pass
    with duckdb.connect(str(path)) as conn:  # nothing was added by the refused opens
        assert conn.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == tables

    # Tables but no version: a warehouse from before versions were kept.
    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as conn:
        conn.execute("CREATE SCHEMA raw").fetchall()
        conn.execute("CREATE TABLE raw.camt053 (x INTEGER)").fetchall()
        with pytest.raises(version.WarehouseVersionMismatch, match="has no schema version"):
            raw.ensure_schema(conn)


def test_rebuild_refuses_a_busy_warehouse_and_an_empty_landing_zone(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert nightly(env["resources"], NIGHTS[0]).success
    original = env["warehouse"].read_bytes()
    capsys.readouterr()
    holder = subprocess.Popen(  # another process holds it, as a Dagster run does
        [sys.executable, "-c", HOLD, str(env["warehouse"])], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        code, _ = finsup("rebuild-warehouse")
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is busy" in err[0], err
    assert env["warehouse"].read_bytes() == original
    assert not list(env["warehouse"].parent.glob("*.rebuilding*"))

    shutil.move(env["home"] / "landing", env["home"] / "elsewhere")
    code, _ = finsup("rebuild-warehouse")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing to rebuild from" in err[0], err
    assert env["warehouse"].read_bytes() == original
