"""Books that touch every table a snapshot holds, with the instants an as-of test needs.

One beneficiary (ann) is paid, then the sale that funded her is reversed, so a
clawback is recorded; bob's batch is approved only after ``before_approval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import clock, controls, db, journal, revenue, state_machine
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.schema import gateway_events, ingested_files
from tests.helpers import payouts as p


@dataclass
class AuditBooks:
    paid_batch: str
    late_batch: str
    before_approval: str  # an instant while late_batch was pending approval
    balances_then: dict[tuple[str, str], int]


def build(engine: Engine) -> AuditBooks:
    h = p.sale(engine, "S1", "500.00")
    p.sale(engine, "S2", "80.00", currency="EUR")
    p.beneficiary(engine, "ann", tax_id="123-45-6789", tax_form_status="verified")
    p.beneficiary(engine, "bob", country="DE", tax_form_status="missing")
    p.earning(engine, "E1", "ann", "100.00", h)
    carol = p.approver(engine, "carol")
    with db.write(engine) as conn:
        controls.set_reserve(conn, "USD", 1000, "cfo", "keep a little back")
        controls.set_payouts_frozen(conn, False, "ops", "open for business")
        conn.execute(
            sa.insert(ingested_files).values(
                content_sha256="ab" * 32,
                kind="revenue",
                path="day1.csv",
                rows=1,
                ingested_at=clock.now(),
            )
        )
    [first] = build_batches(engine, BatchPolicy(), "maker").batches
    items = p.submitted_batch(engine, first["batch_id"], carol)
    with db.write(engine) as conn:
        conn.execute(
            sa.insert(gateway_events).values(
                gateway="paypal",
                event_id="WH-1",
                event_type="PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
                resource_id="item-1",
                payload='{"ok": true}',
                signature_valid=True,
                received_at=clock.now(),
                processed_at=clock.now(),
                outcome="applied",
            )
        )
        for item in items:
            state_machine.move_item(conn, item.id, "paid", "gateway")
    p.earning(engine, "E2", "bob", "40.00", h)
    [late] = build_batches(engine, BatchPolicy(), "maker").batches
    with db.read(engine) as conn:
        balances = journal.account_balances(conn)
    before = clock.now()
    p.approve(engine, carol, late["batch_id"])
    # S1 reversed after ann was paid: her earning is clawed back.
    ev = revenue.parse_event(
        {
            "source": "paypal",
            "external_id": "S1",
            "amount": "500.00",
            "currency": "USD",
            "occurred_at": "2026-11-20T10:00:00Z",
            "kind": "sale",
            "status": "reversed",
        }
    )
    revenue.ingest(engine, [(1, ev)])
    return AuditBooks(first["batch_id"], late["batch_id"], before, balances)


def fake_warehouse(path: Path) -> Path:
    """A warehouse of this schema version holding two nights of reconciliation results, in
    the marts' shape (the columns the exports and the snapshot read)."""
    import duckdb

    from finsup_dagster.warehouse import version

    conn = duckdb.connect(str(path))
    try:
        version.ensure(conn)
        conn.execute(
            "CREATE TABLE reconciliation_matches (event_hash VARCHAR, source VARCHAR,"
            " external_id VARCHAR, revenue_amount_minor BIGINT, revenue_currency VARCHAR,"
            " settlement_line_id VARCHAR, settled_on VARCHAR, gross_minor BIGINT,"
            " fee_minor BIGINT, match_rule VARCHAR, run_date VARCHAR)"
        )
        conn.execute(
            "INSERT INTO reconciliation_matches VALUES"
            " ('h1', 'paypal', 'S1', 50000, 'USD', 'L1', '2026-11-20', 50000, 150,"
            "  'exact_id', '2026-11-20'),"
            " ('h2', 'paypal', 'S2', 8000, 'EUR', 'L2', '2026-11-21', 8000, 20,"
            "  'amount_date', '2026-11-21')"
        )
        conn.execute(
            "CREATE TABLE reconciliation_exceptions (run_date VARCHAR, exception_kind VARCHAR,"
            " event_hash VARCHAR, external_id VARCHAR, revenue_amount_minor BIGINT,"
            " record_ref VARCHAR, gross_minor BIGINT, detail VARCHAR)"
        )
        conn.execute(
            "INSERT INTO reconciliation_exceptions VALUES"
            " ('2026-11-20', 'unmatched_settlement', NULL, NULL, NULL, 'R9', 700,"
            "  'no revenue event'),"
            " ('2026-11-21', 'amount_mismatch', 'h3', 'S3', 1000, 'R10', 990, 'off by 10'),"
            " ('2026-11-22', 'stale_projected', 'h4', 'S4', 300, NULL, NULL, 'projected 9 days')"
        )
    finally:
        conn.close()
    return path
