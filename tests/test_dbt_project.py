"""The dbt project's own checks, on a fresh DuckDB warehouse made the way the project
makes one (``raw.ensure_schema`` and ``replica.ensure_schema``), with dbt invoked as
Dagster invokes it (``--vars`` with ``warehouse_path`` and ``run_date``).

- The unit tests beside the models (``dbt_project/models/**/<model>.unit.yml``: the
  matching rules' corner cases, the exception kinds, the open items) all pass. They
  mock every input, but dbt reads the inputs' column types from the warehouse, so the
  models are built first (on no rows).
- A yml test's ``where`` naming ``__run_date__`` is filled in with the night
  (``dbt_project/macros/get_where_subquery.sql``): the filtered tests on
  ``settlement_lines`` run and pass on the night's lines even though another night
  holds a line they would fail on; without a ``run_date`` the filter is dropped and
  that line fails them. Without the macro, dbt pastes ``__run_date__`` verbatim and
  the filtered tests error.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from finsup_dagster.resources.dbt import DBT_PROJECT_DIR, dbt_command
from finsup_dagster.warehouse import raw, replica
from tests.helpers.warehouse_rows import insert_raw_line

RUN_DATE = "2026-11-21"


class Dbt:
    """dbt on one warehouse file, each invocation with a target folder of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "warehouse.duckdb"
        self.runs = 0

    def __call__(self, *args: str, run_date: str | None = RUN_DATE) -> list[dict[str, Any]]:
        """``dbt <args>``; returns run_results.json's results (whatever their status)."""
        self.runs += 1
        target = self.folder / f"target-{self.runs}"
        variables: dict[str, Any] = {"warehouse_path": str(self.path)}
        if run_date is not None:
            variables["run_date"] = run_date
        done = subprocess.run(
            dbt_command(*args, "--quiet", target=target, variables=variables),
            env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
            capture_output=True,
            text=True,
            check=False,
        )
        results_file = target / "run_results.json"
        assert results_file.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        results: list[dict[str, Any]] = json.loads(results_file.read_text(encoding="utf-8"))[
            "results"
        ]
        return results


def _land(path: Path) -> None:
    """Two good lines landed tonight and, landed the night before, a line with no gross
    and a repeated line id: the night's filtered tests must not see it."""
    rows = [
        (RUN_DATE, "a", 1, 1000),
        (RUN_DATE, "a", 2, 2000),
        ("2026-11-20", "b", 1, None),
        ("2026-11-20", "b", 1, 3000),
    ]
    with duckdb.connect(str(path)) as conn:
        for partition_date, sha, row_number, gross in rows:
            line = {"partition_date": partition_date, "file_name": f"{partition_date}/{sha}.csv"}
            line |= {"content_sha256": sha.ljust(64, "0"), "row_number": row_number}
            line |= {"gateway": "paypal", "gateway_txn_id": None, "kind": "sale"}
            line |= {"gross_minor": gross, "currency": "EUR", "settled_on": partition_date}
            insert_raw_line(conn, "settlement_csv", line)


@pytest.fixture(scope="module")
def dbt(tmp_path_factory: pytest.TempPathFactory) -> Dbt:
    """A fresh warehouse with a few landed lines and every model built for RUN_DATE."""
    runner = Dbt(tmp_path_factory.mktemp("dbt_project"))
    with duckdb.connect(str(runner.path)) as conn:
        raw.ensure_schema(conn)
        replica.ensure_schema(conn)
    _land(runner.path)
    built = runner("run")
    assert built and all(r["status"] == "success" for r in built), built
    return runner


def _unit_test_names() -> set[str]:
    """The unit tests the project declares, by name, from the <model>.unit.yml files."""
    names = set()
    for spec in (DBT_PROJECT_DIR / "models").rglob("*.unit.yml"):
        doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
        names |= {test["name"] for test in doc["unit_tests"]}
    return names


def test_every_unit_test_passes(dbt: Dbt) -> None:
    results = dbt("test", "--select", "test_type:unit")
    statuses = {r["unique_id"].rsplit(".", 1)[-1]: r["status"] for r in results}
    assert all(r["unique_id"].startswith("unit_test.") for r in results)
    assert set(statuses) == _unit_test_names()
    failed = {r["unique_id"]: r["message"] for r in results if r["status"] != "pass"}
    assert not failed, failed


def _filtered_tests(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The results of settlement_lines' tests, by test name."""
    return {
        r["unique_id"].split(".")[2]: r
        for r in results
        if r["unique_id"].startswith("test.") and "settlement_lines" in r["unique_id"]
    }


def test_a_where_naming_the_night_checks_the_nights_rows(dbt: Dbt) -> None:
    results = dbt("build", "--select", "+settlement_lines")
    tests = _filtered_tests(results)
    # unique and not_null on the line id, not_null on gross and currency, kinds, directions.
    assert len(tests) == 6, sorted(tests)
    for name, result in tests.items():
        assert result["status"] == "pass", (name, result["message"])
        assert f"partition_date = strftime(cast('{RUN_DATE}' as date)" in result["compiled_code"]
    models = [r for r in results if r["unique_id"].startswith("model.")]
    assert models and all(r["status"] == "success" for r in models), models


def test_without_a_night_the_filter_is_dropped_and_every_row_is_checked(dbt: Dbt) -> None:
    tests = _filtered_tests(dbt("test", "--select", "settlement_lines", run_date=None))
    assert len(tests) == 6, sorted(tests)
    failing = {name for name, r in tests.items() if r["status"] == "fail"}
    # The night before's line with no gross, and its repeated line id.
    assert failing == {
        name for name in tests if name.startswith(("not_null_settlement_lines_gross", "unique_"))
    }, {name: r["status"] for name, r in tests.items()}
    for name, result in tests.items():
        assert "__run_" not in result["compiled_code"], name
        assert "partition_date =" not in result["compiled_code"], name
