"""One day of real-shaped files with row anomalies: nothing is quarantined, each anomaly is one exception.

The day (EUR, USD and JPY): a revenue file; a PayPal STL listing one
transaction twice; a camt.053.001.02 batch booking whose details all repeat
the entry's own AcctSvcrRef and whose bank charge is stated once for the
entry; a settlement CSV repeating a settlement id. Run through the nightly job
(dg.materialize, real DuckDB, dbt and the ledger on SQLite and PostgreSQL);
every number below is worked out by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster_duckdb import DuckDBResource

from finsup_dagster.formats import write_camt053, write_settlement_csv, write_stl
from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.balance import available_balances
from finsup_dagster.ledger.schema import revenue_events
from finsup_dagster.resources import (
    LedgerResource,
    PayPalReportingResource,
    ReconciliationPolicyResource,
)
from finsup_dagster.warehouse import reports
from tests.helpers.dbt_runner import dbt_resource
from tests.helpers.nightly import checks, metadata, nightly, warehouse
from tests.helpers.settlement_rows import sale_line as _line

DAY = "2026-11-21"
REVENUE = """source,external_id,amount,currency,occurred_at,kind,status
paypal,PP-1,50.00,USD,2026-11-21T09:00:00Z,sale,projected
paypal,PP-2,20.00,USD,2026-11-21T10:00:00Z,sale,projected
paypal,PP-3,15.00,USD,2026-11-21T11:00:00Z,sale,projected
paypal,PP-J,1500,JPY,2026-11-21T12:00:00+09:00,sale,projected
appstore,AS-1,30.00,EUR,2026-11-21T08:00:00Z,sale,projected
appstore,AS-2,20.00,EUR,2026-11-21T08:30:00Z,sale,projected
appstore,AS-3,10.00,EUR,2026-11-21T09:00:00Z,sale,projected
payoneer,PO-1,2400,JPY,2026-11-21T13:00:00+09:00,sale,projected
"""


STL_ROWS = [
    _line("PP-1", 5000, "USD", 175),
    _line("PP-2", 2000, "USD", 88),
    _line("PP-1", 5000, "USD", 175),  # line 7 repeats line 5
    _line("PP-J", 1500, "JPY", 54),
]
# 30.00 + 20.00 + 10.00 gross, one 1.00 EUR charge on the entry: credited 59.00; the
# charge is shared 50 / 33 / 17 cents (in proportion to gross, largest remainder).
BATCH = {
    "batch_ref": "B-1",
    "batch_net_minor": 5900,
    "settler_ref": "B-1",
    "event_code": "PMNT/RCDT/ESCT",
    "occurred_at": None,
}
CAMT_ROWS = [
    _line("AS-1", 3000, "EUR", 50, record_ref="B-1/1", **BATCH),
    _line("AS-2", 2000, "EUR", 33, record_ref="B-1/2", **BATCH),
    _line("AS-3", 1000, "EUR", 17, record_ref="B-1/3", **BATCH),
]
CSV_ROWS = [
    _line("PO-1", 2400, "JPY", 24, record_ref="S-1", gateway="payoneer"),
    _line("PO-1", 2400, "JPY", 24, record_ref="S-1", gateway="payoneer"),  # line 3 repeats 2
]


@pytest.fixture
def day_of_files(ledger_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    zone = home / "landing"
    for fmt in ("revenue", "paypal-stl", "camt053", "settlement-csv"):
        (zone / fmt / DAY).mkdir(parents=True)
    (zone / "revenue" / DAY / "sales.csv").write_text(REVENUE, encoding="utf-8")
    write_stl(
        zone / "paypal-stl" / DAY / "STL-20261121.01.009.CSV",
        STL_ROWS,
        report_date=DAY,
        account_id="FINSUPMERCH01",
    )
    camt = write_camt053(
        zone / "camt053" / DAY / "statement.xml",
        CAMT_ROWS,
        statement_id="STMT-1121",
        account_iban="DE89370400440532013000",
        version="001.02",
        charges_on_entry={"B-1"},
    )
    text = camt.read_text(encoding="utf-8")
    assert text.count("<AcctSvcrRef>B-1</AcctSvcrRef>") == 4  # the entry's and every detail's
    assert text.count("<Chrgs>") == 1  # the charge once, for the entry
    write_settlement_csv(zone / "settlement-csv" / DAY / "payoneer.csv", CSV_ROWS)
    ledger = LedgerResource(url=ledger_url, home=str(home))
    migrate.upgrade(ledger.engine)
    yield {
        "dbt": dbt_resource(),
        "ledger": ledger,
        "duckdb": DuckDBResource(database=str(tmp_path / "warehouse.duckdb")),
        "paypal": PayPalReportingResource(base_url="", client_id="x", client_secret="y"),
        "reconciliation_policy": ReconciliationPolicyResource(unmatched_rate_threshold="0.5"),
    }
    ledger.engine.dispose()


def test_row_anomalies_are_exceptions_and_the_files_all_settle(
    day_of_files: dict[str, Any],
) -> None:
    result = nightly(day_of_files, DAY)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    home = Path(day_of_files["ledger"].home)
    assert not (home / "quarantine").exists()
    results = checks(result)
    for fmt in ("paypal_stl", "camt053", "settlement_csv"):
        assert results[(f"warehouse/raw/{fmt}", "files_parsed")].passed, fmt
    stl_md = metadata(result, "warehouse/raw/paypal_stl")
    assert (stl_md["rows_landed"], stl_md["notes_count"]) == (4, 1)
    assert "line 7: Transaction ID PP-1 repeats line 5" in stl_md["notes"]
    camt_md = metadata(result, "warehouse/raw/camt053")
    assert camt_md["rows_landed"] == 3
    assert "batch B-1: entry charges 1.00 EUR shared over its 3 lines" in camt_md["notes"]
    csv_md = metadata(result, "warehouse/raw/settlement_csv")
    assert "line 3: settlement_id S-1 repeats line 2" in csv_md["notes"]

    conn = warehouse(day_of_files)
    matched = conn.execute(
        "SELECT external_id, match_rule, record_ref, fee_minor FROM reconciliation_matches"
        " WHERE run_date = ? ORDER BY external_id",
        [DAY],
    ).fetchall()
    assert matched == [
        ("AS-1", "batch_reference", "B-1/1", 50),
        ("AS-2", "batch_reference", "B-1/2", 33),
        ("AS-3", "batch_reference", "B-1/3", 17),
        ("PO-1", "gateway_txn_id", "S-1", 24),
        ("PP-1", "gateway_txn_id", "PP-1", 175),
        ("PP-2", "gateway_txn_id", "PP-2", 88),
        ("PP-J", "gateway_txn_id", "PP-J", 54),
    ]
    found = sorted(
        (e["exception_kind"], e["record_ref"], e["file_name"].rsplit("/", 1)[-1])
        for e in reports.exceptions(conn, DAY)
    )
    # The batch adds up (no batch amount_mismatch); PP-3 is awaiting settlement, not late.
    assert found == [
        ("duplicate_settlement", "PP-1#7", "STL-20261121.01.009.CSV"),
        ("duplicate_settlement", "S-1#3", "payoneer.csv"),
    ]
    bank_ref = conn.execute(
        "SELECT DISTINCT settler_ref FROM settlement_lines WHERE settlement_source = 'camt053'"
    ).fetchall()
    assert bank_ref == [("B-1",)]  # the bank's reference kept as written
    conn.close()

    confirm_md = metadata(result, "ledger/revenue_confirmations")
    assert (confirm_md["confirmed"], confirm_md["fees_posted"]) == (7, 7)
    engine = day_of_files["ledger"].engine
    with db.read(engine) as books:
        available = {b.currency: b.available_minor for b in available_balances(books)}
        projected = books.execute(
            sa.select(revenue_events.c.external_id).where(revenue_events.c.status == "projected")
        ).scalars()
        still_projected = set(projected)
    # USD 50.00 + 20.00 − fees 1.75 + 0.88; JPY 1500 + 2400 − 54 − 24; EUR 60.00 − 1.00.
    assert available == {"USD": 6737, "JPY": 3822, "EUR": 5900}
    assert still_projected == {"PP-3"}
