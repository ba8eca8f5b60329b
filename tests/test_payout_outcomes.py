"""Statuses reported by the providers, into the books: payout_status.apply_report.

Real SQLite and PostgreSQL books; the reports are built by hand here (the
webhook and polling tests send them over real sockets). What a finance team
relies on: each outcome moves the money the right way exactly once, whatever
order the reports come in.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from finsup_dagster.gateways.sandbox.outcomes import PAYONEER_STATUS, PAYPAL_STATUS
from finsup_dagster.ledger import balance, db, migrate, payouts, seals, state_machine
from finsup_dagster.ledger.batching import BatchPolicy, build_batches
from finsup_dagster.ledger.journal import Account, account_balances
from finsup_dagster.ledger.payout_status import (
    ITEM_STATUS_FROM_PROVIDER,
    StatusReport,
    apply_report,
    derived_batch_status,
)
from finsup_dagster.ledger.schema import (
    earnings,
    journal_entries,
    payout_items,
    postings,
    transaction_log,
)
from tests.helpers import payouts as fx
from tests.helpers.migrations import ledger_at


def report(item: Any, word: str, source: str = "webhook", gateway: str = "paypal") -> StatusReport:
    return StatusReport(gateway, word, int(item.id), f"PI-{item.id}", source)


def apply(engine: Engine, rep: StatusReport) -> str:
    with db.write(engine) as conn:
        return apply_report(conn, rep, f"gateway:{rep.gateway}")


def submitted_two(engine: Engine) -> tuple[str, list[Any]]:
    """ann 150.00 and bob 50.00 of USD 500.00 confirmed, in one submitted PayPal batch."""
    fx.funded_ann_and_bob(engine)
    [batch] = build_batches(engine, BatchPolicy(), "maker").batches
    carol = fx.approver(engine, "carol")
    items = fx.submitted_batch(engine, batch["batch_id"], carol)
    return batch["batch_id"], items


def available(engine: Engine) -> int:
    with db.read(engine) as conn:
        return balance.available_minor(conn, "USD")


def item_postings(engine: Engine, item_id: int) -> dict[str, int]:
    """Net postings per account of every journal entry made for one item."""
    with db.read(engine) as conn:
        rows = conn.execute(
            sa.select(postings.c.account, sa.func.sum(postings.c.amount_minor))
            .join(journal_entries, journal_entries.c.id == postings.c.entry_id)
            .where(
                journal_entries.c.reference_type == "payout_item",
                journal_entries.c.reference_id == str(item_id),
            )
            .group_by(postings.c.account)
        )
        return {a: int(t) for a, t in rows if int(t)}


def logged(engine: Engine, action: str) -> list[Any]:
    with db.read(engine) as conn:
        return list(
            conn.execute(sa.select(transaction_log).where(transaction_log.c.action == action))
        )


def test_every_move_goes_up_the_order_of_meaning() -> None:
    # What makes any arrival order converge: no transition leads to a lower or equal rank.
    for status, targets in state_machine.ITEM_TRANSITIONS.items():
        for target in targets:
            assert state_machine.ITEM_RANK[target] > state_machine.ITEM_RANK[status], (
                status,
                target,
            )
    assert set(state_machine.ITEM_RANK) == set(state_machine.ITEM_TRANSITIONS)
    assert set(state_machine.ITEM_MONEY_CLASS) == set(state_machine.ITEM_TRANSITIONS)


def test_every_word_the_sandbox_speaks_is_mapped() -> None:
    for gateway, words in (("paypal", PAYPAL_STATUS), ("payoneer", PAYONEER_STATUS)):
        for word in words.values():
            assert word in ITEM_STATUS_FROM_PROVIDER[gateway], (gateway, word)
    mapped = {s for table in ITEM_STATUS_FROM_PROVIDER.values() for s in table.values()}
    assert mapped <= set(state_machine.ITEM_TRANSITIONS) - {"pending", "submitted"}


def test_the_batch_status_is_derived_from_its_items() -> None:
    assert derived_batch_status(["paid", "processing"]) is None
    assert derived_batch_status(["paid", "paid"]) == "completed"
    assert derived_batch_status(["paid", "returned"]) == "partially_completed"
    assert derived_batch_status(["failed", "cancelled"]) == "failed"
    assert derived_batch_status([]) is None


PAID = "paid"
RELEASED = "released"


@pytest.mark.parametrize(
    ("words", "final", "money"),
    [
        (("PENDING", "SUCCESS"), "paid", PAID),
        (("PENDING", "ONHOLD", "SUCCESS"), "paid", PAID),
        (("UNCLAIMED", "SUCCESS"), "paid", PAID),
        (("UNCLAIMED", "RETURNED"), "returned", RELEASED),
        (("SUCCESS", "RETURNED"), "returned", RELEASED),
        (("SUCCESS", "REFUNDED"), "refunded", RELEASED),
        (("PENDING", "FAILED"), "failed", RELEASED),
        (("ONHOLD", "BLOCKED"), "blocked", RELEASED),
        (("DENIED",), "denied", RELEASED),
        (("CANCELED",), "cancelled", RELEASED),
    ],
)
def test_each_outcome_moves_the_money_once(
    engine: Engine, words: tuple[str, ...], final: str, money: str
) -> None:
    batch_id, [ann, bob] = submitted_two(engine)
    before = available(engine)
    for word in words:
        assert apply(engine, report(ann, word)) == "applied"
    assert apply(engine, report(bob, "SUCCESS", source="poll")) == "applied"

    [ann_now, bob_now] = fx.item_rows(engine, batch_id)
    assert (ann_now.status, ann_now.provider_status) == (final, words[-1])
    assert ann_now.gateway_item_id == f"PI-{ann.id}"
    assert bob_now.status == "paid"
    amount = int(ann.amount_minor)
    if money == PAID:
        assert fx.batch_row(engine, batch_id).status == "completed"
        assert available(engine) == before
        assert item_postings(engine, ann.id) == {
            Account.PAYOUTS_PAYABLE: amount,
            Account.GATEWAY_CLEARING: -amount,
        }
    else:
        # The money comes back to the available balance, and ann's earnings accrue again.
        assert fx.batch_row(engine, batch_id).status == "partially_completed"
        assert available(engine) == before + amount
        assert item_postings(engine, ann.id) == {
            Account.PAYOUTS_PAYABLE: amount,
            Account.BENEFICIARY_PAYOUTS: -amount,
        }
    with db.read(engine) as conn:
        ann_earnings = set(
            conn.execute(
                sa.select(earnings.c.status, earnings.c.payout_item_id).where(
                    earnings.c.external_id.in_(["E1", "E2"])
                )
            )
        )
        assert sum(account_balances(conn).values()) == 0
    if money == PAID:
        assert ann_earnings == {("paid", ann.id)}
    else:
        assert ann_earnings == {("accrued", None)}


def test_repeats_and_late_reports_change_nothing_and_a_return_after_payment_does(
    engine: Engine,
) -> None:
    batch_id, [ann, bob] = submitted_two(engine)
    assert apply(engine, report(ann, "SUCCESS")) == "applied"
    assert apply(engine, report(bob, "FAILED")) == "applied"
    assert fx.batch_row(engine, batch_id).status == "partially_completed"
    paid_postings = item_postings(engine, ann.id)

    assert apply(engine, report(ann, "SUCCESS", source="poll")) == "unchanged"
    # A late PENDING after SUCCESS: logged, ignored, the books as they were.
    assert apply(engine, report(ann, "PENDING")) == "ignored"
    [ignored] = logged(engine, "item_status_ignored")
    assert ignored.entity_id == str(ann.id)
    assert item_postings(engine, ann.id) == paid_postings
    assert fx.item_rows(engine, batch_id)[0].status == "paid"

    # RETURNED after SUCCESS is a real move forward: the money came back.
    before = available(engine)
    assert apply(engine, report(ann, "RETURNED")) == "applied"
    assert available(engine) == before + int(ann.amount_minor)
    assert fx.batch_row(engine, batch_id).status == "failed"
    assert [r.detail for r in logged(engine, "batch_failed")]


def test_reports_that_cannot_be_placed(engine: Engine) -> None:
    batch_id, [ann, _] = submitted_two(engine)
    unknown = StatusReport("paypal", "SUCCESS", None, "NO-SUCH-ITEM", "webhook")
    assert apply(engine, unknown) == "unknown_item"
    # Another provider's report for this PayPal item is not this item's.
    assert apply(engine, report(ann, "Transferred", gateway="payoneer")) == "unknown_item"
    assert apply(engine, report(ann, "DEFINITELY_NOT_A_STATUS")) == "unknown_status"
    mismatch = StatusReport("paypal", "SUCCESS", int(ann.id), "OTHER-ID", "webhook")
    assert apply(engine, report(ann, "PENDING")) == "applied"
    assert apply(engine, mismatch) == "ignored"
    assert [i.status for i in fx.item_rows(engine, batch_id)] == ["processing", "submitted"]


def test_a_report_for_an_item_not_yet_submitted_waits(engine: Engine) -> None:
    fx.funded_ann_and_bob(engine)
    [batch] = build_batches(engine, BatchPolicy(), "maker").batches
    [ann, _] = fx.item_rows(engine, batch["batch_id"])
    assert apply(engine, report(ann, "SUCCESS")) == "unknown_item"
    assert fx.item_rows(engine, batch["batch_id"])[0].status == "pending"


# Lifecycles a provider really reports for one item, earliest first.
LIFECYCLES = [
    ("PENDING", "SUCCESS"),
    ("PENDING", "ONHOLD", "SUCCESS"),
    ("PENDING", "UNCLAIMED", "SUCCESS"),
    ("PENDING", "UNCLAIMED", "RETURNED"),
    ("PENDING", "SUCCESS", "RETURNED"),
    ("PENDING", "SUCCESS", "REFUNDED"),
    ("PENDING", "ONHOLD", "SUCCESS", "REFUNDED"),
    ("PENDING", "FAILED"),
    ("PENDING", "ONHOLD", "BLOCKED"),
    ("PENDING", "DENIED"),
]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """A lifecycle, and its reports delivered in any order, some twice, by webhook or poll."""
    life = draw(st.sampled_from(LIFECYCLES))
    copies = [w for w in life for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(copies))
    sources = draw(st.lists(st.sampled_from(("webhook", "poll")), min_size=len(order)))
    return life, list(zip(order, itertools.cycle(sources or ["poll"]), strict=False))


@pytest.fixture(scope="module")
def shared_books(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One SQLite ledger for every example: each example pays a fresh beneficiary."""
    path: Path = tmp_path_factory.mktemp("outcomes") / "ledger.db"
    engine = db.make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    fx.sale(engine, "S-BIG", "1000000.00")
    return engine


counter = itertools.count()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=deliveries())
def test_any_interleaving_of_one_items_reports_ends_the_same(
    shared_books: Engine, case: tuple[tuple[str, ...], list[tuple[str, str]]]
) -> None:
    engine = shared_books
    life, delivered = case
    n = next(counter)
    who = f"payee{n}"
    fx.beneficiary(engine, who)
    with db.read(engine) as conn:
        [sale_hash] = conn.execute(sa.text("SELECT event_hash FROM revenue_events")).scalars()
    fx.earning(engine, f"E{n}", who, "10.00", sale_hash)
    with db.write(engine) as conn:
        # Only this earning: earlier examples' released earnings accrue again, unbatched.
        earning = conn.execute(
            sa.select(earnings.c.id, earnings.c.beneficiary_id).where(
                earnings.c.external_id == f"E{n}"
            )
        ).one()
        batch_id = payouts.create_batch(
            conn,
            method="paypal",
            currency="USD",
            items=[payouts.ItemRequest(1000, earning.beneficiary_id, None, [earning.id])],
            created_by="maker",
        )
    [item] = fx.submitted_batch(engine, batch_id, fx.approver(engine, f"ap{n}"))

    for word, source in delivered:
        apply(engine, report(item, word, source=source))

    expected = ITEM_STATUS_FROM_PROVIDER["paypal"][life[-1]]
    [now] = fx.item_rows(engine, batch_id)
    assert now.status == expected
    money = state_machine.ITEM_MONEY_CLASS[expected]
    other = Account.GATEWAY_CLEARING if money == "paid" else Account.BENEFICIARY_PAYOUTS
    # The same net postings as the lifecycle applied in order, whatever came when.
    assert item_postings(engine, item.id) == {Account.PAYOUTS_PAYABLE: 1000, other: -1000}
    with db.read(engine) as conn:
        statuses = set(
            conn.execute(
                sa.select(earnings.c.status).where(earnings.c.external_id == f"E{n}")
            ).scalars()
        )
        assert sum(account_balances(conn).values()) == 0
    assert statuses == ({"paid"} if money == "paid" else {"accrued"})
    assert fx.batch_row(engine, batch_id).status == ("completed" if money == "paid" else "failed")


def test_migration_0005_renames_success_to_paid_and_keeps_the_seals(ledger_url: str) -> None:
    eng = ledger_at(ledger_url, "0002_revenue_changed_index")
    with eng.begin() as conn:  # a batch paid under the old name, sealed by 0003 and 0004
        conn.execute(
            sa.text(
                "INSERT INTO payout_batches (id, method, currency, total_minor, item_count, "
                "status, required_approvals, approval_version, created_by, created_at, "
                "updated_at) VALUES ('pb_old', 'paypal', 'USD', 100, 1, 'completed', 1, 1, "
                "'maker', '2026-11-20T10:00:00.000000Z', '2026-11-20T10:00:00.000000Z')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO payout_items (batch_id, amount_minor, currency, status, updated_at)"
                " VALUES ('pb_old', 100, 'USD', 'success', '2026-11-20T10:00:00.000000Z')"
            )
        )
    migrate.upgrade(eng)
    with db.read(eng) as conn:
        assert seals.verify(conn).ok
        row = conn.execute(sa.select(payout_items)).one()
    assert (row.status, row.provider_status) == ("paid", None)
    eng.dispose()
