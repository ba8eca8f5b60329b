"""Property: a copy of any row inserted anywhere into a good file never quarantines it.

For any day of good files (an STL, a camt.053 with single entries and batch
bookings, a settlement CSV; EUR, USD and JPY) whose every line settles one
revenue event, copies of any of their rows inserted at any place in the same
file give: every file landed, every event still matched, and exactly one more
``duplicate_settlement`` per copy — nothing else. A copy inside a bank batch is
a detail the bank credited too (the entry amount includes it), so the batch
still adds up.

The nightly job runs for real (files, DuckDB, dbt, the ledger). The ledger is
SQLite only here: what is tested is parsing and matching, which do not depend
on the ledger's database (tests/test_real_files.py runs both backends).
Each example is a whole nightly run, hence few examples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster_duckdb import DuckDBResource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finsup_dagster.formats import write_camt053, write_settlement_csv, write_stl
from finsup_dagster.ledger import migrate
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.resources import (
    LedgerResource,
    PayPalReportingResource,
    ReconciliationPolicyResource,
)
from finsup_dagster.warehouse import reports
from tests.helpers.dbt_runner import dbt_resource
from tests.helpers.nightly import checks, nightly, warehouse

DAY = "2026-11-21"
SOURCES = {"paypal-stl": "paypal", "settlement-csv": "payoneer", "camt053": "appstore"}
PREFIX = {"paypal-stl": "PP", "settlement-csv": "PO", "camt053": "AS"}


@dataclass(frozen=True)
class Sale:
    fmt: str
    n: int
    currency: str
    gross: int
    fee: int
    batch: int | None  # camt053: the batch entry it is a detail of (None: an entry of its own)

    @property
    def txn(self) -> str:
        return f"{PREFIX[self.fmt]}-{self.n}"


@st.composite
def days(draw: st.DrawFn) -> tuple[list[Sale], list[tuple[str, int, int]]]:
    sales: list[Sale] = []
    for fmt in SOURCES:
        count = draw(st.integers(1, 4))
        for n in range(1, count + 1):
            currency = "EUR" if fmt == "camt053" else draw(st.sampled_from(["EUR", "USD", "JPY"]))
            gross = draw(st.integers(100, 50_000))
            batch = draw(st.sampled_from([None, 1, 2])) if fmt == "camt053" else None
            sales.append(Sale(fmt, n, currency, gross, draw(st.integers(0, 99)), batch))
    # (format, index of the row copied in that file, where the copy goes)
    copies = draw(
        st.lists(
            st.tuples(st.sampled_from(list(SOURCES)), st.integers(0, 99), st.integers(0, 99)),
            min_size=1,
            max_size=4,
        )
    )
    return sales, copies


def _row(sale: Sale) -> dict[str, Any]:
    batch_ref = f"B-{sale.batch}" if sale.batch is not None else None
    return {
        "row_number": 0,
        "record_ref": sale.txn if batch_ref is None else f"{batch_ref}/0",
        "settler_ref": batch_ref or sale.txn,
        "gateway": SOURCES[sale.fmt],
        "gateway_txn_id": sale.txn,
        "batch_ref": batch_ref,
        "batch_net_minor": None,
        "event_code": None,
        "kind": "sale",
        "direction": "credit",
        "gross_minor": sale.gross,
        "currency": sale.currency,
        "fee_minor": sale.fee,
        "fee_currency": sale.currency,
        "settled_on": DAY,
        "occurred_at": "2026-11-21T09:00:00Z",
        "description": None,
        "raw": "",
    }


def _camt_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch details grouped (a detail copied into a batch stays in it), entry amounts set."""
    singles = [r for r in rows if r["batch_ref"] is None]
    grouped: list[dict[str, Any]] = []
    for ref in sorted({r["batch_ref"] for r in rows if r["batch_ref"] is not None}):
        members = [dict(r) for r in rows if r["batch_ref"] == ref]
        if len(members) == 1:  # a batch of one is no batch: an entry of its own
            singles.append(
                dict(
                    members[0],
                    batch_ref=None,
                    record_ref=members[0]["gateway_txn_id"],
                    settler_ref=members[0]["gateway_txn_id"],
                )
            )
            continue
        net = sum(r["gross_minor"] - r["fee_minor"] for r in members)
        grouped += [dict(r, batch_net_minor=net) for r in members]
    return grouped + singles


def _files(home: Path, sales: list[Sale], copies: list[tuple[str, int, int]]) -> int:
    """Writes the day's files with the copies inserted; returns how many copies were made."""
    zone = home / "landing"
    revenue = ["source,external_id,amount,currency,occurred_at,kind,status"]
    revenue += [
        f"{SOURCES[s.fmt]},{s.txn},{format_minor(s.gross, s.currency)},{s.currency},"
        f"2026-11-21T08:00:00Z,sale,projected"
        for s in sales
    ]
    (zone / "revenue" / DAY).mkdir(parents=True)
    (zone / "revenue" / DAY / "sales.csv").write_text("\n".join(revenue) + "\n")
    made = 0
    for fmt in SOURCES:
        rows = [_row(s) for s in sales if s.fmt == fmt]
        for copy_fmt, index, where in copies:
            if copy_fmt == fmt:
                rows.insert(where % (len(rows) + 1), dict(rows[index % len(rows)]))
                made += 1
        folder = zone / fmt / DAY
        folder.mkdir(parents=True)
        if fmt == "paypal-stl":
            by_currency = sorted(rows, key=lambda r: r["currency"])  # one section per file
            write_stl(
                folder / "STL-20261121.01.009.CSV",
                by_currency,
                report_date=DAY,
                account_id="FINSUPMERCH01",
            )
        elif fmt == "settlement-csv":
            write_settlement_csv(folder / "settlement.csv", rows, gateway="payoneer")
        else:
            write_camt053(
                folder / "statement.xml",
                _camt_rows(rows),
                statement_id="S-1",
                account_iban="DE89370400440532013000",
            )
    return made


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(day=days())
def test_a_copied_row_is_one_more_duplicate_settlement_never_a_quarantine(
    day: tuple[list[Sale], list[tuple[str, int, int]]],
) -> None:
    sales, copies = day
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = _files(root / "home", sales, copies)
        ledger = LedgerResource(url=f"sqlite:///{root / 'ledger.db'}", home=str(root / "home"))
        migrate.upgrade(ledger.engine)
        resources = {
            "dbt": dbt_resource(),
            "ledger": ledger,
            "duckdb": DuckDBResource(database=str(root / "warehouse.duckdb")),
            "paypal": PayPalReportingResource(base_url="", client_id="x", client_secret="y"),
            "reconciliation_policy": ReconciliationPolicyResource(unmatched_rate_threshold="1"),
        }
        try:
            result = nightly(resources, DAY)
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            assert not (root / "home" / "quarantine").exists()
            results = checks(result)
            for table in ("paypal_stl", "camt053", "settlement_csv"):
                assert results[(f"warehouse/raw/{table}", "files_parsed")].passed
            conn = warehouse(resources)
            matched = {
                r[0]
                for r in conn.execute(
                    "SELECT external_id FROM reconciliation_matches WHERE run_date = ?", [DAY]
                ).fetchall()
            }
            kinds = [e["exception_kind"] for e in reports.exceptions(conn, DAY)]
            conn.close()
        finally:
            ledger.engine.dispose()
    assert matched == {s.txn for s in sales}
    assert kinds == ["duplicate_settlement"] * made
