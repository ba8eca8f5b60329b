"""The finance team's exports: the reconciliation file and the annual tax report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.audit.tax_report import tax_rows, write_csv
from finsup_dagster.cli import main
from finsup_dagster.ledger import clock, db, state_machine
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from tests.helpers import payouts as p
from tests.helpers.audit_books import fake_warehouse


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = fake_warehouse(tmp_path / "warehouse.duckdb")
    monkeypatch.setenv("FINSUP_WAREHOUSE_PATH", str(path))
    return path


def _export(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(["export-reconciliation", *args])
    code = exit_.value.code
    assert isinstance(code, int)
    return code


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_reconciliation_export_is_one_file_with_a_kind_column(
    warehouse: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"recon.{fmt}"
    assert (
        _export("--date", "2026-11-20", "--to", "2026-11-21", "--format", fmt, "--out", str(out))
        == 0
    )
    reader = {"csv": "read_csv", "parquet": "read_parquet", "json": "read_json"}[fmt]
    rows = duckdb.sql(
        f"SELECT kind, CAST(run_date AS VARCHAR), rule, detail FROM {reader}('{out}') ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("amount_mismatch", "2026-11-21", None, "off by 10"),
        ("matched", "2026-11-20", "exact_id", None),
        ("matched", "2026-11-21", "amount_date", None),
        ("unmatched_settlement", "2026-11-20", None, "no revenue event"),
    ]
    assert not list(tmp_path.glob(".*.tmp"))


def test_one_night_and_a_refusal(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "night.json"
    assert _export("--date", "2026-11-22", "--format", "json", "--out", str(out)) == 0
    [row] = json.loads(out.read_text())
    assert row["kind"] == "stale_projected" and row["detail"] == "projected 9 days"
    assert _export("--date", "2026-11-22", "--format", "xlsx", "--out", str(out)) == 2
    assert "xlsx" in capsys.readouterr().err


def _paid_books(engine: Engine) -> None:
    """ann (tax form verified) and bob (none on file) paid in one batch; carol approves."""
    h = p.sale(engine, "S1", "500.00")
    p.beneficiary(engine, "ann", tax_id="123-45-6789", tax_form_status="verified")
    p.beneficiary(engine, "bob", country="DE", tax_form_status="missing")
    p.earning(engine, "E1", "ann", "100.00", h)
    p.earning(engine, "E2", "bob", "50.00", h)
    [batch] = build_batches(engine, BatchPolicy(), "maker").batches
    items = p.submitted_batch(engine, batch["batch_id"], p.approver(engine, "carol"))
    with db.write(engine) as conn:
        for item in items:
            state_machine.move_item(conn, item.id, "paid", "gateway")


def test_tax_report_totals_paid_items_with_masked_ids_and_flags(
    engine: Engine, tmp_path: Path
) -> None:
    _paid_books(engine)
    year = int(clock.now()[:4])
    with db.read(engine) as conn:
        rows = tax_rows(conn, year)
        assert tax_rows(conn, year + 1) == []
    assert [
        (r["beneficiary"], r["currency"], r["paid_minor"], r["paid"], r["items"]) for r in rows
    ] == [
        ("ann", "USD", 10000, "100.00", 1),
        ("bob", "USD", 5000, "50.00", 1),
    ]
    ann, bob = rows
    assert (ann["tax_id_masked"], ann["tax_form_status"], ann["tax_form_missing"]) == (
        "****6789",
        "verified",
        False,
    )
    assert (bob["country"], bob["tax_form_status"], bob["tax_form_missing"]) == (
        "DE",
        "missing",
        True,
    )
    out = tmp_path / "tax.csv"
    write_csv(rows, out)
    text = out.read_text()
    assert "123-45-6789" not in text and "6789" in text
    assert [r["tax_form_missing"] for r in csv.DictReader(text.splitlines())] == ["false", "true"]


def test_tax_report_from_the_cli(engine: Engine, finsup_env: Path, tmp_path: Path) -> None:
    _paid_books(engine)
    out = tmp_path / "tax.csv"
    with pytest.raises(SystemExit) as exit_:
        main(["export-tax-report", "--year", clock.now()[:4], "--out", str(out)])
    assert exit_.value.code == 0
    assert len(out.read_text().splitlines()) == 3
