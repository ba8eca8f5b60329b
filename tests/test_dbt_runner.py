"""The tests' dbt on a prepared parse (tests/helpers/dbt_runner.py) builds exactly what the
real ``dbt`` builds: the same warehouse, table for table and row for row, over two
nights (a first build, then an incremental one from the previous night's open items),
and the same failure when a data test fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import duckdb

from finsup_dagster.resources import dbt as product_dbt
from finsup_dagster.warehouse import raw, replica
from tests.helpers import dbt_runner
from tests.helpers.warehouse_rows import insert_raw_line, insert_replica_event

NIGHTS = ("2025-03-10", "2025-03-11")


def _fill(path: Path) -> None:
    """A few events and settlement lines: matched by id, by amount and date, an unmatched
    line, an event still waiting, a refund, a second currency."""
    with duckdb.connect(str(path)) as conn:
        raw.ensure_schema(conn)
        replica.ensure_schema(conn)
        events = [
            ("a" * 64, "stripe", "ch_1", "sale", 1250, "EUR", "2025-03-09"),
            ("b" * 64, "stripe", "ch_2", "sale", 990, "EUR", "2025-03-09"),
            ("c" * 64, "paypal", "pp_3", "sale", 4000, "USD", "2025-03-08"),
            ("d" * 64, "stripe", "ch_4", "refund", 1250, "EUR", "2025-03-10"),
            ("e" * 64, "stripe", "ch_5", "sale", 777, "EUR", "2025-03-11"),
        ]
        for event_hash, source, external_id, kind, amount, currency, day in events:
            insert_replica_event(
                conn,
                {
                    "event_hash": event_hash,
                    "source": source,
                    "external_id": external_id,
                    "kind": kind,
                    "amount_minor": amount,
                    "currency": currency,
                    "occurred_at": f"{day}T10:00:00.000000Z",
                    "status": "projected",
                },
            )
        lines = [
            (1, "stripe", "ch_1", "sale", 1250, "EUR", "2025-03-10"),
            (2, "stripe", None, "sale", 990, "EUR", "2025-03-10"),
            (3, "stripe", "ch_9", "sale", 5000, "EUR", "2025-03-10"),
            (4, "stripe", "ch_4", "refund", 1250, "EUR", "2025-03-11"),
        ]
        for row_number, gateway, txn_id, kind, gross, currency, settled in lines:
            insert_raw_line(
                conn,
                "settlement_csv",
                {
                    "partition_date": settled,
                    "file_name": f"settlement_csv/{settled}/settlement.csv",
                    "content_sha256": f"{settled:0<64}",
                    "row_number": row_number,
                    "gateway": gateway,
                    "gateway_txn_id": txn_id,
                    "kind": kind,
                    "gross_minor": gross,
                    "currency": currency,
                    "settled_on": settled,
                },
            )


def _build(command: list[str], warehouse: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FINSUP_WAREHOUSE_PATH": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table and view the models made, rows sorted (their order is not promised),
    without ``built_at`` (the clock when a night was built: the one thing two builds of
    the same night do not share)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall():
            if column != "built_at":
                columns.setdefault(table, []).append(f'"{column}"')
        return {
            table: sorted(
                conn.execute(f'SELECT {", ".join(names)} FROM main."{table}"').fetchall(),
                key=repr,
            )
            for table, names in columns.items()
        }


def test_the_prepared_parse_builds_what_dbt_builds(tmp_path: Path) -> None:
    runs = {"dbt": product_dbt.dbt_command, "prepared": dbt_runner.dbt_command}
    warehouses = {}
    for name, command in runs.items():
        # The same file name in both: dbt names the catalog after it.
        warehouse = tmp_path / name / "warehouse.duckdb"
        warehouse.parent.mkdir()
        _fill(warehouse)
        for night in NIGHTS:
            target = tmp_path / name / f"target-{night}"
            done = _build(command("build", target=target, variables={"run_date": night}), warehouse)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert "Completed successfully" in done.stdout
        warehouses[name] = warehouse
    real, prepared = (_tables(w) for w in warehouses.values())
    assert real.get("reconciliation_matches")
    assert prepared == real


def test_a_failing_data_test_fails_both_the_same_way(tmp_path: Path) -> None:
    """A settlement line of an unknown currency breaks a data test: both exit 1."""
    outcomes = {}
    for name, command in {
        "dbt": product_dbt.dbt_command,
        "prepared": dbt_runner.dbt_command,
    }.items():
        warehouse = tmp_path / name / "warehouse.duckdb"
        warehouse.parent.mkdir()
        _fill(warehouse)
        with duckdb.connect(str(warehouse)) as conn:
            conn.execute("UPDATE raw.settlement_csv SET currency = NULL").fetchall()
        target = tmp_path / name / "target"
        done = _build(command("build", target=target, variables={"run_date": NIGHTS[0]}), warehouse)
        outcomes[name] = (done.returncode, "Completed with" in done.stdout)
    assert outcomes["dbt"][0] == 1, outcomes
    assert outcomes["prepared"] == outcomes["dbt"]
