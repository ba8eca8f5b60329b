"""Earnings whose funding revenue is reversed, refunded or charged back, on SQLite and PostgreSQL.

What a finance team relies on: an earning funded by a sale that goes away is
never paid without an approver saying so; an accrued one goes on hold, one in
a batch stops the batch's approval and submission, one already paid becomes a
clawback the beneficiary's next payouts net, never more than was paid; and the
journal balances through all of it.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import (
    approvals,
    balance,
    batching,
    clawbacks,
    db,
    holds,
    journal,
    payouts,
    revenue,
    state_machine,
)
from finsup_dagster.ledger.errors import FundingReversed, InvalidInput
from finsup_dagster.ledger.journal import Account
from finsup_dagster.ledger.schema import earnings, transaction_log
from tests.helpers import payouts as fx

POLICY = batching.BatchPolicy(min_item={"*": "1.00"})


def event(ext: str, amount: str, kind: str = "sale", status: str = "confirmed") -> Any:
    return revenue.parse_event(
        {
            "source": "paypal",
            "external_id": ext,
            "amount": amount,
            "currency": "USD",
            "occurred_at": "2026-11-20T10:00:00Z",
            "kind": kind,
            "status": status,
        }
    )


def ingest(engine: Engine, *events: Any) -> dict[str, Any]:
    return revenue.ingest(engine, list(enumerate(events, 1))).summary()


def status(engine: Engine, external_id: str) -> tuple[str, str | None]:
    with db.read(engine) as conn:
        row = conn.execute(
            sa.select(earnings.c.status, earnings.c.hold_reason).where(
                earnings.c.external_id == external_id
            )
        ).one()
    return row[0], row[1]


def usd(engine: Engine) -> balance.Balance:
    with db.read(engine) as conn:
        return balance.available_balances(conn, "USD")[0]


def balanced(engine: Engine) -> bool:
    with db.read(engine) as conn:
        return journal.unbalanced_entries(conn) == []


def build(engine: Engine) -> batching.BuildReport:
    return batching.build_batches(engine, POLICY, created_by="maker")


def decide(engine: Engine, who: fx.Approver, what: str, key: str, action: Any) -> Any:
    code, now = who.next_code()
    return approvals.authorised(
        engine,
        who.name,
        code,
        fx.BOX,
        approvals.ApprovalPolicy(),
        what,
        ("earning", key),
        action,
        now=now,
    )


def submit(engine: Engine, batch_id: str, approver: fx.Approver) -> list[Any]:
    return fx.submitted_batch(engine, batch_id, approver)


def pay(engine: Engine, batch_id: str, approver: fx.Approver, outcome: str = "paid") -> None:
    """Approve, submit and have the gateway report every item."""
    items = submit(engine, batch_id, approver)
    with db.write(engine) as conn:
        for item in items:
            state_machine.move_item(conn, item.id, outcome, "gateway")


@pytest.fixture
def books(engine: Engine) -> tuple[Engine, fx.Approver]:
    fx.beneficiary(engine, "ana")
    fx.beneficiary(engine, "ben")
    return engine, fx.approver(engine, "carol")


def test_reversed_sale_holds_its_accrued_earning_until_an_approver_decides(
    books: tuple[Engine, fx.Approver],
) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.sale(engine, "S-2", "500.00")  # other money: the balance is not what stops the payout
    fx.earning(engine, "e-ana", "ana", "60.00", s)
    fx.earning(engine, "e-ben", "ben", "40.00", s)

    summary = ingest(engine, event("S-1", "100.00", status="reversed"))
    assert summary["earnings_held"] == 2
    assert status(engine, "e-ana")[0] == "on_hold"
    reason = status(engine, "e-ana")[1] or ""
    assert s[:12] in reason and "reversed" in reason
    with db.read(engine) as conn:
        held = holds.held_earnings(conn)
    assert [(h["earning"], h["status"], h["amount_minor"]) for h in held] == [
        ("e-ana", "on_hold", 6000),
        ("e-ben", "on_hold", 4000),
    ]

    report = build(engine)
    assert report.batches == [] and [h["earning"] for h in report.held] == ["e-ana", "e-ben"]

    assert decide(
        engine,
        carol,
        "earning_release",
        "e-ana",
        lambda conn, a: holds.release(conn, a, "e-ana", "paid from other revenue"),
    )
    assert status(engine, "e-ana")[0] == "accrued"
    decide(
        engine,
        carol,
        "earning_cancellation",
        "e-ben",
        lambda conn, a: holds.cancel(conn, a, "e-ben", "the sale never happened"),
    )
    assert status(engine, "e-ben")[0] == "cancelled"

    report = build(engine)
    assert [b["total_minor"] for b in report.batches] == [6000]  # e-ana only; e-ben never
    assert report.held == []
    # Re-ingesting the reversal changes nothing: the release covers what it was given for.
    assert ingest(engine, event("S-1", "100.00", status="reversed"))["earnings_held"] == 0
    assert status(engine, "e-ana")[0] == "batched"
    assert balanced(engine)

    # A release needs a held earning; a cancellation needs a held one too.
    with pytest.raises(InvalidInput, match="not held: nothing to release"):
        decide(
            engine,
            carol,
            "earning_release",
            "e-ana",
            lambda conn, a: holds.release(conn, a, "e-ana", "again"),
        )
    with pytest.raises(InvalidInput, match="only held earnings can be cancelled"):
        decide(
            engine,
            carol,
            "earning_cancellation",
            "e-ana",
            lambda conn, a: holds.cancel(conn, a, "e-ana", "x"),
        )


def test_a_hold_whose_refund_was_reversed_since_can_still_be_released(
    books: tuple[Engine, fx.Approver],
) -> None:
    # Found by the workflow state machine: the refund that held the earning is itself
    # reversed, so nothing troubles its funding any more; it must not stay held for good.
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.earning(engine, "e-ana", "ana", "60.00", s)
    assert ingest(engine, event("S-1", "30.00", kind="refund"))["earnings_held"] == 1
    assert status(engine, "e-ana")[0] == "on_hold"
    ingest(engine, event("S-1", "30.00", kind="refund", status="reversed"))
    assert status(engine, "e-ana")[0] == "on_hold"  # a person decides, as for any hold
    assert decide(
        engine,
        carol,
        "earning_release",
        "e-ana",
        lambda conn, a: holds.release(conn, a, "e-ana", "the refund was reversed"),
    )
    assert status(engine, "e-ana")[0] == "accrued"
    assert [b["total_minor"] for b in build(engine).batches] == [6000]
    assert balanced(engine)


def test_refund_naming_a_batched_sale_stops_approval_and_cancelling_holds_it(
    books: tuple[Engine, fx.Approver],
) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.sale(engine, "S-2", "500.00")
    fx.earning(engine, "e-ana", "ana", "80.00", s)
    [batch] = build(engine).batches
    batch_id = batch["batch_id"]

    # The refund carries the sale's source and external id: it names the sale.
    summary = ingest(engine, event("S-1", "30.00", kind="refund"))
    assert summary["earnings_held"] == 1
    st, reason = status(engine, "e-ana")
    assert st == "batched" and "refunded" in (reason or "") and "30.00 USD gone" in (reason or "")

    before = usd(engine)
    with pytest.raises(FundingReversed, match=f"batch {batch_id} pays earning e-ana whose"):
        fx.approve(engine, carol, batch_id)
    assert usd(engine) == before
    with db.read(engine) as conn:
        refused = conn.execute(
            sa.select(sa.func.count()).where(transaction_log.c.action == "batch_approval_refused")
        ).scalar_one()
    assert refused == 1

    code, now = carol.next_code()
    approvals.authorised(
        engine,
        "carol",
        code,
        fx.BOX,
        approvals.ApprovalPolicy(),
        "batch_cancellation",
        ("payout_batch", batch_id),
        lambda conn, a: approvals.cancel(conn, a.name, batch_id, "refunded", with_code=True),
        now=now,
    )
    assert status(engine, "e-ana")[0] == "on_hold"
    assert usd(engine).committed_minor == 0
    assert balanced(engine)


def test_submission_rechecks_funding(books: tuple[Engine, fx.Approver]) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.earning(engine, "e-ana", "ana", "50.00", s)
    [batch] = build(engine).batches
    result = fx.approve(engine, carol, batch["batch_id"])
    ingest(engine, event("S-1", "100.00", kind="chargeback"))
    with pytest.raises(FundingReversed, match="charged back"), db.write(engine) as conn:
        payouts.start_submission(conn, batch["batch_id"], result["approval_version"], "submitter")
    # Released by an approver, the same batch goes.
    decide(
        engine,
        carol,
        "earning_release",
        "e-ana",
        lambda conn, a: holds.release(conn, a, "e-ana", "chargeback disputed and won"),
    )
    with db.write(engine) as conn:
        payouts.start_submission(conn, batch["batch_id"], result["approval_version"], "submitter")


def test_paid_earning_is_clawed_back_and_netted_from_the_next_payout(
    books: tuple[Engine, fx.Approver],
) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.earning(engine, "e-1", "ana", "100.00", s)
    [first] = build(engine).batches
    pay(engine, first["batch_id"], carol)
    assert status(engine, "e-1")[0] == "paid"
    assert usd(engine).available_minor == 0

    summary = ingest(engine, event("S-1", "100.00", status="reversed"))
    assert summary["clawed_back_minor"] == {"USD": 10000}
    bal = usd(engine)
    # The money is gone from the gateway and only owed back: nothing more can leave.
    assert (bal.clawback_receivable_minor, bal.committed_minor, bal.available_minor) == (
        10000,
        0,
        -10000,
    )
    with db.read(engine) as conn:
        assert clawbacks.outstanding(conn) != {}
        [claw] = clawbacks.report(conn)
    assert (claw["earning"], claw["amount_minor"], claw["beneficiary_outstanding_minor"]) == (
        "e-1",
        10000,
        10000,
    )
    assert balanced(engine)

    t = fx.sale(engine, "T-1", "300.00")
    fx.earning(engine, "e-2", "ana", "250.00", t)
    [second] = build(engine).batches
    [item] = fx.item_rows(engine, second["batch_id"])
    assert (item.amount_minor, item.netted_minor) == (15000, 10000)  # paid 150.00, 100.00 netted
    assert second["total_minor"] == 15000 and second["netted_minor"] == 10000
    [pending] = batching.pending_batches(engine)
    assert pending["items"][0]["netted_minor"] == 10000
    assert pending["items"][0]["clawback_outstanding_minor"] == 0
    bal = usd(engine)
    assert (bal.clawback_receivable_minor, bal.available_minor) == (0, 30000 - 25000)

    # Denied, the batch gives the netting back: the clawback is owed again.
    code, now = carol.next_code()
    approvals.authorised(
        engine,
        "carol",
        code,
        fx.BOX,
        approvals.ApprovalPolicy(),
        "batch_denial",
        ("payout_batch", second["batch_id"]),
        lambda conn, a: approvals.deny(conn, a, second["batch_id"], "later"),
        now=now,
    )
    bal = usd(engine)
    assert (bal.clawback_receivable_minor, bal.available_minor) == (10000, 30000 - 10000)
    assert status(engine, "e-2")[0] == "accrued"
    assert balanced(engine)


def test_a_clawback_is_never_more_than_what_was_paid(books: tuple[Engine, fx.Approver]) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.sale(engine, "S-2", "500.00")
    fx.earning(engine, "e-paid", "ana", "40.00", s)
    [batch] = build(engine).batches
    pay(engine, batch["batch_id"], carol)
    fx.earning(engine, "e-later", "ben", "60.00", s)

    ingest(engine, event("S-1", "30.00", kind="refund"))  # part of the sale
    with db.read(engine) as conn:
        assert [c["amount_minor"] for c in clawbacks.report(conn)] == [3000]
    assert status(engine, "e-later")[0] == "on_hold"

    ingest(engine, event("S-1", "100.00", status="reversed"))  # then all of it
    ingest(engine, event("S-1", "100.00", status="reversed"))  # and again: nothing more
    with db.read(engine) as conn:
        rows = clawbacks.report(conn)
        sums = journal.account_balances(conn)
    assert sum(c["amount_minor"] for c in rows) == 4000  # topped up to what was paid, no more
    assert sums[(Account.CLAWBACK_RECEIVABLE, "USD")] == 4000
    assert balanced(engine)


def test_returned_payment_clears_its_clawback(books: tuple[Engine, fx.Approver]) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.earning(engine, "e-1", "ana", "70.00", s)
    [batch] = build(engine).batches
    pay(engine, batch["batch_id"], carol)
    ingest(engine, event("S-1", "100.00", status="reversed"))
    assert usd(engine).clawback_receivable_minor == 7000

    [item] = fx.item_rows(engine, batch["batch_id"])
    with db.write(engine) as conn:
        state_machine.move_item(conn, item.id, "returned", "gateway")
    bal = usd(engine)
    assert (bal.clawback_receivable_minor, bal.committed_minor) == (0, 0)
    assert status(engine, "e-1")[0] == "on_hold"  # back with us, and still unfunded
    with db.read(engine) as conn:
        [claw] = clawbacks.report(conn)
    assert claw["cleared_at"] is not None and claw["beneficiary_outstanding_minor"] == 0
    assert balanced(engine)


def test_payment_in_flight_when_funding_goes_is_clawed_back_when_paid(
    books: tuple[Engine, fx.Approver],
) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.earning(engine, "e-1", "ana", "90.00", s)
    [batch] = build(engine).batches
    [item] = submit(engine, batch["batch_id"], carol)
    ingest(engine, event("S-1", "100.00", status="reversed"))
    assert status(engine, "e-1")[0] == "batched"  # at the gateway already: flagged
    assert usd(engine).clawback_receivable_minor == 0
    with db.write(engine) as conn:
        state_machine.move_item(conn, item.id, "paid", "gateway")
    assert usd(engine).clawback_receivable_minor == 9000
    assert balanced(engine)


def test_a_partial_refund_is_clawed_back_once_over_payments_paid_at_different_times(
    books: tuple[Engine, fx.Approver],
) -> None:
    engine, carol = books
    s = fx.sale(engine, "S-1", "100.00")
    fx.earning(engine, "e-first", "ana", "40.00", s)
    [first] = build(engine).batches
    pay(engine, first["batch_id"], carol)
    fx.earning(engine, "e-second", "ben", "60.00", s)
    [second] = build(engine).batches
    [item] = submit(engine, second["batch_id"], carol)  # at the gateway when the refund arrives

    ingest(engine, event("S-1", "30.00", kind="refund"))
    assert usd(engine).clawback_receivable_minor == 3000  # all of it on the paid earning
    with db.write(engine) as conn:
        state_machine.move_item(conn, item.id, "paid", "gateway")
    with db.read(engine) as conn:
        rows = clawbacks.report(conn)
    # The second payment lands later; the 30.00 refunded is owed back once, not twice.
    assert [(c["earning"], c["amount_minor"]) for c in rows] == [("e-first", 3000)]
    assert balanced(engine)
