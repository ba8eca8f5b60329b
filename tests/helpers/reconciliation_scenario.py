"""Two days of real files in every format, with one of each thing that goes wrong.

Day 1 (2026-11-20) only brings revenue; day 2 (2026-11-21) brings the
settlements. ``EXPECTED_*`` is what the books and the reconciliation must say
after both nights, worked out by hand in the comments.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from finsup_dagster.formats import write_camt053, write_stl
from finsup_dagster.gateways.sandbox import append_transactions, transaction_info
from tests.helpers.settlement_rows import sale_line

DAY1, DAY2 = "2026-11-20", "2026-11-21"

REVENUE_CSV = """source,external_id,amount,currency,occurred_at,kind,status
payoneer,PO-1,100.00,USD,2026-11-20T10:00:00Z,sale,projected
payoneer,PO-2,5000,JPY,2026-11-20T11:00:00+09:00,sale,projected
payoneer,PO-3,25.00,USD,2026-11-20T12:00:00Z,sale,projected
payoneer,PO-4,40.00,USD,2026-11-20T13:00:00Z,sale,projected
payoneer,PO-5,12.345,USD,2026-11-20T14:00:00Z,sale,projected
payoneer,PO-6,7.00,USD,2026-11-15T09:00:00Z,sale,confirmed
"""
REVENUE_JSONL = (
    "\n".join(
        [
            '{"source": "appstore", "external_id": "AS-1", "amount": "30.00", "currency": "EUR", '
            '"occurred_at": "2026-11-20T08:00:00Z", "kind": "sale"}',
            '{"source": "appstore", "external_id": "AS-2", "amount": "20.00", "currency": "EUR", '
            '"occurred_at": "2026-11-20T08:30:00Z", "kind": "sale"}',
            '{"source": "appstore", "external_id": "AS-3", "amount": "15.00", "currency": "EUR", '
            '"occurred_at": "2026-11-20T09:00:00Z", "kind": "sale"}',
            '{"source": "appstore", "external_id": "AS-4", "amount": "9.99", "currency": "EUR", '
            '"occurred_at": "2026-11-10T09:00:00Z", "kind": "sale", "status": "projected"}',
        ]
    )
    + "\n"
)

SETTLEMENT_HEADER = (
    "settlement_id,gateway,gateway_txn_id,kind,amount,currency,fee,fee_currency,settled_on,"
    "occurred_at,batch_ref,batch_net_amount,description\n"
)
# Settled on day 1 but delivered with day 2's files: late, not lost.
PAYONEER_SETTLEMENT = SETTLEMENT_HEADER + (
    "S-1,payoneer,PO-1,sale,100.00,USD,2.00,USD,2026-11-20,,,,\n"
    "S-2,payoneer,PO-2,sale,5000,JPY,100,JPY,2026-11-20,,,,\n"
    "S-3,payoneer,PO-3,sale,25.00,EUR,0.50,EUR,2026-11-20,,,,\n"
    "S-4,payoneer,PO-4,sale,39.00,USD,0.80,USD,2026-11-20,,,,\n"
    "S-5,payoneer,PX-9,sale,8.00,USD,0.20,USD,2026-11-20,,,,\n"
)
DUPLICATE_SETTLEMENT = (
    SETTLEMENT_HEADER + "S-9,payoneer,PO-1,sale,100.00,USD,2.00,USD,2026-11-21,,,,\n"
)


def _line(txn: str | None, gross: int, currency: str, fee: int = 0, **kw: Any) -> dict[str, Any]:
    """A line of day 2 the parsers would give (row 1, no instant unless said)."""
    row = sale_line(txn or "x", gross, currency, fee, gateway_txn_id=txn, settled_on=DAY2)
    return row | {"row_number": 1, "occurred_at": None, "raw": "{}"} | kw


STL_ROWS = [
    _line("PP-1", 5000, "USD", 175, occurred_at="2026-11-20T09:00:00.000000Z"),
    _line("PP-2", 2000, "USD", 88, occurred_at="2026-11-20T10:00:00.000000Z"),
    _line(
        "PP-R",
        1000,
        "USD",
        -30,
        kind="refund",
        direction="debit",
        occurred_at="2026-11-20T15:00:00.000000Z",
    ),
]
# One bank credit of 48.50 EUR for two App Store sales, net of their fees; and a credit
# with no reference at all: matched by amount, currency and date.
BATCH = {"batch_ref": "B-77", "batch_net_minor": 4850}
CAMT_ROWS = [
    _line("AS-1", 3000, "EUR", 90, record_ref="B-77/1", **BATCH),
    _line("AS-2", 2000, "EUR", 60, record_ref="B-77/2", **BATCH),
    _line(None, 1500, "EUR", record_ref="N-78"),
]


def land_scenario(home: Path, sandbox_dir: Path) -> None:
    """Writes both days' files into the landing zone and the sandbox's transactions."""
    from datetime import UTC, datetime

    zone = home / "landing"

    def put(rel: str, text: str) -> Path:
        path = zone / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    put(f"revenue/{DAY1}/payoneer.csv", REVENUE_CSV)
    put(f"revenue/{DAY1}/appstore.jsonl", REVENUE_JSONL)
    append_transactions(
        sandbox_dir,
        [
            transaction_info(
                at=datetime(2026, 11, 20, 9, tzinfo=UTC),
                amount_minor=5000,
                transaction_id="PP-1",
                status="S",
            ),
            transaction_info(
                at=datetime(2026, 11, 20, 10, tzinfo=UTC),
                amount_minor=2000,
                transaction_id="PP-2",
                status="P",
            ),
            transaction_info(
                at=datetime(2026, 11, 20, 15, tzinfo=UTC),
                amount_minor=1000,
                transaction_id="PP-R",
                event_code="T1107",
                status="S",
            ),
        ],
    )

    original = put(f"settlement-csv/{DAY2}/payoneer-20261120.csv", PAYONEER_SETTLEMENT)
    shutil.copyfile(original, zone / f"settlement-csv/{DAY2}/payoneer-20261120-resent.csv")
    put(f"settlement-csv/{DAY2}/payoneer-20261121.csv", DUPLICATE_SETTLEMENT)
    stl = zone / f"paypal-stl/{DAY2}/STL-20261121.01.009.CSV"
    stl.parent.mkdir(parents=True, exist_ok=True)
    write_stl(stl, STL_ROWS, report_date=DAY2, account_id="ACCT-1")
    write_stl(
        stl.with_name("STL-20261121.02.009.CSV"),
        STL_ROWS[:1],
        report_date=DAY2,
        account_id="ACCT-1",
        corrupt="FF",
    )
    camt = zone / f"camt053/{DAY2}/statement-1121.xml"
    camt.parent.mkdir(parents=True, exist_ok=True)
    write_camt053(camt, CAMT_ROWS, statement_id="ST-1121", account_iban="DE02100100109307118603")
    camt.with_name("statement-truncated.xml").write_bytes(camt.read_bytes()[:400])


# After day 2. Matched: PP-1, PP-2, PP-R (transaction id, STL), PO-1, PO-2 (transaction
# id, settlement CSV), AS-1, AS-2 (one batch credit), AS-3 (amount and date window).
EXPECTED_MATCHES = {
    ("paypal", "PP-1"): "gateway_txn_id",
    ("paypal", "PP-2"): "gateway_txn_id",
    ("paypal", "PP-R"): "gateway_txn_id",
    ("payoneer", "PO-1"): "gateway_txn_id",
    ("payoneer", "PO-2"): "gateway_txn_id",
    ("appstore", "AS-1"): "batch_reference",
    ("appstore", "AS-2"): "batch_reference",
    ("appstore", "AS-3"): "amount_date_window",
}
# (kind, the reference it is about)
EXPECTED_EXCEPTIONS = sorted(
    [
        ("duplicate_settlement", "PO-1"),  # S-9 settles PO-1 a second time
        ("currency_mismatch", "PO-3"),  # revenue in USD, settled in EUR
        ("amount_mismatch", "PO-4"),  # 40.00 booked, 39.00 settled
        ("unmatched_settlement", "PX-9"),  # nothing in the books by that id
        ("unmatched_revenue", "PO-6"),  # confirmed on 11-15, never settled: 6 days > 3
        ("stale_projected", "AS-4"),  # projected since 11-10: 11 days > 7
    ]
)
# Confirmed sales − refunds − fees, per currency, in minor units:
#   USD: PP-1 5000 + PP-2 2000 + PO-1 10000 + PO-6 700 − PP-R 1000
#        − fees (175 + 88 + 200 − 30 returned on the refund) = 16267
#   JPY: PO-2 5000 − 100 = 4900
#   EUR: AS-1 3000 + AS-2 2000 + AS-3 1500 − fees (90 + 60) = 6350
EXPECTED_AVAILABLE = {"USD": 16267, "JPY": 4900, "EUR": 6350}
# Still projected: never matched (PO-3, PO-4: exceptions; AS-4: stale).
EXPECTED_PROJECTED = {"PO-3", "PO-4", "AS-4"}
