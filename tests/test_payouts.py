"""Payout batches: reserved against the available balance, moved only by the state machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import balance, controls, db, journal, reports, state_machine
from finsup_dagster.ledger.errors import (
    IllegalTransition,
    InsufficientFunds,
    NotFound,
    PayoutsFrozen,
)
from finsup_dagster.ledger.payouts import ItemRequest, create_batch
from finsup_dagster.ledger.revenue import ingest, parse_event
from finsup_dagster.ledger.schema import payout_batches, payout_items


def fund(engine: Engine, amount: str = "100.00", currency: str = "USD") -> None:
    ev = parse_event(
        {
            "source": "paypal",
            "external_id": f"FUND-{amount}-{currency}",
            "amount": amount,
            "currency": currency,
            "occurred_at": "2026-01-01T00:00:00Z",
            "kind": "sale",
            "status": "confirmed",
        }
    )
    ingest(engine, [(1, ev)])


def usd(engine: Engine) -> balance.Balance:
    with db.read(engine) as conn:
        return balance.available_balances(conn, "USD")[0]


def new_batch(engine: Engine, *amounts: int) -> str:
    with db.write(engine) as conn:
        return create_batch(
            conn,
            method="paypal",
            currency="USD",
            items=[ItemRequest(a) for a in amounts],
            created_by="maker",
        )


def item_ids(engine: Engine, batch_id: str) -> list[int]:
    with db.read(engine) as conn:
        return list(
            conn.execute(
                sa.select(payout_items.c.id)
                .where(payout_items.c.batch_id == batch_id)
                .order_by(payout_items.c.id)
            ).scalars()
        )


def status_of(engine: Engine, batch_id: str) -> str:
    with db.read(engine) as conn:
        return str(
            conn.execute(
                sa.select(payout_batches.c.status).where(payout_batches.c.id == batch_id)
            ).scalar_one()
        )


def test_batch_reserves_and_cannot_exceed_available(engine: Engine) -> None:
    fund(engine)
    batch = new_batch(engine, 6000, 3000)
    b = usd(engine)
    assert (b.committed_minor, b.available_minor) == (9000, 1000)
    assert status_of(engine, batch) == "pending_approval"
    with pytest.raises(
        InsufficientFunds, match=r"batch of 10\.01 USD exceeds the available 10\.00 USD"
    ):
        new_batch(engine, 1001)
    assert usd(engine).committed_minor == 9000, "a refused batch reserves nothing"
    new_batch(engine, 1000)
    assert usd(engine).available_minor == 0


def test_reserve_is_held_back(engine: Engine) -> None:
    fund(engine)
    with db.write(engine) as conn:
        controls.set_reserve(conn, "USD", 2500, "cfo", "chargeback buffer")
    assert usd(engine).available_minor == 7500
    with pytest.raises(InsufficientFunds):
        new_batch(engine, 7501)


@pytest.mark.parametrize("ending", ["cancelled", "denied"])
def test_cancel_or_deny_releases_everything(engine: Engine, ending: str) -> None:
    fund(engine)
    batch = new_batch(engine, 4000, 1000)
    with db.write(engine) as conn:
        state_machine.move_batch(conn, batch, ending, "checker", reason="not this week")
    assert usd(engine).committed_minor == 0
    with db.read(engine) as conn:
        statuses = (
            conn.execute(sa.select(payout_items.c.status).where(payout_items.c.batch_id == batch))
            .scalars()
            .all()
        )
        log = reports.transaction_logs(conn)
    assert set(statuses) == {"cancelled"}
    assert [r["action"] for r in log if r["entity_id"] == batch] == [
        "batch_created",
        f"batch_{ending}",
    ]
    assert sum(r["action"] == "item_cancelled" for r in log) == 2


def test_paid_items_stay_committed_and_returned_items_release(engine: Engine) -> None:
    fund(engine)
    batch = new_batch(engine, 3000, 2000)
    first, second = item_ids(engine, batch)
    with db.write(engine) as conn:
        for target in ("approved", "submitting", "submitted"):
            state_machine.move_batch(conn, batch, target, "system")
        for item in (first, second):
            state_machine.move_item(conn, item, "submitted", "system")
        state_machine.move_item(conn, first, "paid", "gateway")
        state_machine.move_item(conn, second, "failed", "gateway")
    b = usd(engine)
    assert (b.committed_minor, b.available_minor) == (3000, 7000)
    with db.read(engine) as conn:
        sums = journal.account_balances(conn)
    assert sums[(journal.Account.PAYOUTS_PAYABLE, "USD")] == 0  # nothing owed any more
    assert sums[(journal.Account.GATEWAY_CLEARING, "USD")] == 10000 - 3000  # cash left the gateway

    with db.write(engine) as conn:
        state_machine.move_item(conn, first, "returned", "gateway")
    assert usd(engine).committed_minor == 0
    with db.read(engine) as conn:
        assert journal.unbalanced_entries(conn) == []
        assert journal.account_balances(conn)[(journal.Account.GATEWAY_CLEARING, "USD")] == 10000


def test_illegal_transitions_are_refused_and_change_nothing(engine: Engine) -> None:
    fund(engine)
    batch = new_batch(engine, 1000)
    with (
        pytest.raises(IllegalTransition, match="pending_approval; it cannot become submitted"),
        db.write(engine) as conn,
    ):
        state_machine.move_batch(conn, batch, "submitted", "system")
    with db.write(engine) as conn:
        state_machine.move_batch(conn, batch, "cancelled", "system")
    with pytest.raises(IllegalTransition, match=r"nothing \(final\)"), db.write(engine) as conn:
        state_machine.move_batch(conn, batch, "approved", "system")
    with pytest.raises(NotFound), db.write(engine) as conn:
        state_machine.move_batch(conn, "pb_nope", "approved", "system")
    assert status_of(engine, batch) == "cancelled"
    assert usd(engine).committed_minor == 0


def test_transitions_table_is_closed_and_final_states_are_terminal() -> None:
    for table in (state_machine.BATCH_TRANSITIONS, state_machine.ITEM_TRANSITIONS):
        for targets in table.values():
            assert targets <= set(table), "every target is itself a known status"
    assert set(state_machine.ITEM_MONEY_CLASS) == set(state_machine.ITEM_TRANSITIONS)
    for status, cls in state_machine.ITEM_MONEY_CLASS.items():
        if cls == "released":
            assert not state_machine.ITEM_TRANSITIONS[status], (
                f"{status} releases money, so it is final"
            )


def test_freeze_stops_batch_creation(engine: Engine, tmp_path: Path) -> None:
    fund(engine)
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, True, "cfo", "suspected fraud")
    with pytest.raises(
        PayoutsFrozen,
        match=r"frozen \(by cfo at .*: suspected fraud\); creating a payout batch refused",
    ):
        new_batch(engine, 100)
    with db.write(engine) as conn:
        controls.set_payouts_frozen(conn, False, "cfo", "cleared")
    new_batch(engine, 100)
    with db.read(engine) as conn:
        assert controls.freeze_state(conn).frozen is False
        actions = [r["action"] for r in reports.transaction_logs(conn, entity_type="control")]
    assert actions == ["payouts_frozen", "payouts_unfrozen"]


def test_a_failed_transaction_leaves_no_trace(engine: Engine) -> None:
    fund(engine)
    with db.read(engine) as conn:
        before = len(reports.transaction_logs(conn))
    with pytest.raises(RuntimeError), db.write(engine) as conn:
        create_batch(
            conn, method="paypal", currency="USD", items=[ItemRequest(500)], created_by="m"
        )
        raise RuntimeError("crash after the reservation, before commit")
    assert usd(engine).committed_minor == 0
    with db.read(engine) as conn:
        assert len(reports.transaction_logs(conn)) == before
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(payout_batches)).scalar_one() == 0
        )
