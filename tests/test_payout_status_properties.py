"""Payout statuses only move forward and nothing is over-committed, on SQLite and PostgreSQL.

Revenue in three currencies, reserves, the kill switch and payouts, driven at
random against the model of the books (tests/helpers/money_model.py), with
the invariants every payout machine keeps (tests/helpers/books_machine.py).
On top of those:

- a batch is created only when payouts are not frozen and the available
  balance covers it, which it then lowers by exactly the batch's total; a
  refused batch changes nothing;
- batches and items only follow the state machine's edges: a move is refused
  exactly when it is illegal (for a batch that ends without paying, also when
  one of its open items cannot be cancelled; for an item becoming submitted,
  also when its batch is not submitting or submitted), a refused move changes
  nothing, and an accepted one moves statuses along edges only;
- a batch the gateway refused (submission_failed) keeps its items' money
  committed until it is retried (back to approved) or cancelled (released);
- ``gateway_clearing`` holds confirmed sales less deductions less what was paid.

Every example runs on empty books of its own (tests/helpers/books.py: FreshBooks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import balance, controls, db, payouts, state_machine
from finsup_dagster.ledger.errors import IllegalTransition, InsufficientFunds, PayoutsFrozen
from finsup_dagster.ledger.journal import Account
from finsup_dagster.ledger.schema import payout_items
from finsup_dagster.ledger.state_machine import BATCH_TRANSITIONS, ITEM_TRANSITIONS
from tests.helpers import books
from tests.helpers.books import FreshBooks, books_state
from tests.helpers.books_machine import REVENUE_STATUSES, BooksMachine, run_machine
from tests.helpers.money_model import (
    BATCH_ITEM_CASCADE,
    ITEM_NEEDS_BATCH,
    BatchModel,
    ItemModel,
)
from tests.helpers.revenue_events import DEDUCTION_KINDS, Ident, idents

BATCH_TARGETS = (*sorted(BATCH_TRANSITIONS), "bogus")
ITEM_TARGETS = (*sorted(ITEM_TRANSITIONS), "bogus")
MACHINE_CURRENCIES = ("USD", "JPY", "KWD")
# Mostly sales, bigger than deductions and reserves, so that payouts have money to commit.
machine_idents = idents(
    MACHINE_CURRENCIES,
    kinds=("sale", "sale", "sale", *DEDUCTION_KINDS),
    sales=st.integers(10_000, 10**6),
    deductions=st.integers(1, 2_000),
)
# How a move picks its target: any status at all (mostly illegal), any edge from the
# current status, or the next step of a payout that goes through, so runs reach deep states.
move_modes = st.sampled_from(("any", "edge", "edge", "happy", "happy"))
BATCH_HAPPY_PATH = ("approved", "submitting", "submitted", "completed")
ITEM_HAPPY_PATH = ("submitted", "paid", "returned")


def pick_move(
    things: Mapping[Any, BatchModel] | Mapping[Any, ItemModel],
    edges: Mapping[str, frozenset[str]],
    every: tuple[str, ...],
    happy: tuple[str, ...],
    pick: int,
    choice: int,
    mode: str,
) -> tuple[Any, list[str], str]:
    """(key, the statuses it may move to, the target) for one move of a batch or an item.

    Unless ``mode`` is "any", a thing that can still move if there is any. The target is
    any status at all ("any"), any edge from the current status ("edge"), or the next
    step of the happy path ("happy") when there is one.
    """
    keys = sorted(things)
    live = [k for k in keys if edges.get(things[k].status)]
    choices = live if mode != "any" and live else keys
    key = choices[pick % len(choices)]
    allowed = sorted(edges[things[key].status])
    ahead = [t for t in happy if t in allowed] if mode == "happy" else []
    targets = allowed if mode != "any" and allowed else list(every)
    return key, allowed, ahead[0] if ahead else targets[choice % len(targets)]


class PayoutMovesMachine(BooksMachine):
    """Revenue, reserves, the kill switch and payouts, moved at random, legal or not."""

    currencies = MACHINE_CURRENCIES

    @initialize(
        pool=st.lists(machine_idents, min_size=1, max_size=12, unique_by=lambda i: i.natural_key),
        data=st.data(),
    )
    def start(self, pool: list[Ident], data: st.DataObject) -> None:
        """The events the run draws on: a confirmed opening sale per currency, so that
        there is money to pay out, and the drawn events, each ingested once."""
        opening = [
            Ident(
                "opening",
                f"opening-{c}",
                "sale",
                c,
                data.draw(st.integers(10**5, 10**7)),
                datetime(2020, 1, 1, tzinfo=UTC),
            )
            for c in MACHINE_CURRENCIES
        ]
        taken = {i.natural_key for i in opening}
        drawn = [i for i in pool if i.natural_key not in taken]
        self.model.pool = opening + drawn
        initial = data.draw(st.lists(REVENUE_STATUSES, min_size=len(drawn), max_size=len(drawn)))
        offers = [(i, "confirmed") for i in opening] + list(zip(drawn, initial, strict=True))
        self.offer_revenue(offers, chunk_size=len(offers), data=data)

    @rule(currency=st.sampled_from(MACHINE_CURRENCIES), amount=st.integers(0, 5_000))
    def set_reserve(self, currency: str, amount: int) -> None:
        with db.write(self.engine) as conn:
            controls.set_reserve(conn, currency, amount, "prop-test", "property test")
        self.model.reserve[currency] = amount

    @rule(frozen=st.booleans())
    def set_freeze(self, frozen: bool) -> None:
        self.set_payouts_frozen(frozen)

    @rule(
        pick=st.integers(0, 10**6),
        shares=st.lists(st.integers(1, 60), min_size=1, max_size=3),
        method=st.sampled_from(payouts.PAYOUT_METHODS),
    )
    def create_batch(self, pick: int, shares: list[int], method: str) -> None:
        """Items of 1-60 % of what is available each: some batches fit, some do not."""
        # Mostly a currency the events use; sometimes one that may have no money at all.
        candidates = [i.currency for i in self.model.pool] + list(MACHINE_CURRENCIES)
        currency = candidates[pick % len(candidates)]
        available = self.model.available(currency)
        amounts = [max(1, max(available, 0) * share // 100) for share in shares]
        total = sum(amounts)
        before = self.state()
        try:
            with db.write(self.engine) as conn:
                assert balance.available_minor(conn, currency) == available
                batch_id = payouts.create_batch(
                    conn,
                    method=method,
                    currency=currency,
                    created_by="prop-test",
                    items=[payouts.ItemRequest(a) for a in amounts],
                )
                after = balance.available_minor(conn, currency)
        except PayoutsFrozen:
            event("frozen")
            assert self.model.frozen
            assert self.state() == before
            return
        except InsufficientFunds:
            event("insufficient")
            assert not self.model.frozen
            assert total > available, f"refused {total} with {available} available"
            assert self.state() == before
            return
        assert not self.model.frozen, "a batch was created while payouts were frozen"
        assert total <= available, f"over-committed: {total} with {available} available"
        assert after == available - total >= 0
        event("created")
        with db.read(self.engine) as conn:
            rows = conn.execute(
                sa.select(payout_items.c.id, payout_items.c.amount_minor)
                .where(payout_items.c.batch_id == batch_id)
                .order_by(payout_items.c.id)
            ).all()
        assert sorted(int(a) for _, a in rows) == sorted(amounts)
        self.model.batches[batch_id] = BatchModel(
            "pending_approval", total, [int(i) for i, _ in rows]
        )
        for item_id, amount in rows:
            self.model.items[int(item_id)] = ItemModel(batch_id, currency, int(amount), "pending")

    def state(self) -> dict[str, Any]:
        with db.read(self.engine) as conn:
            return books_state(conn)

    def _move(self, call: Callable[[Connection], None], legal: bool) -> None:
        """Runs one move in a write transaction; checks it was refused iff it is illegal."""
        before = self.state()
        try:
            with db.write(self.engine) as conn:
                call(conn)
        except IllegalTransition:
            event("illegal")
            assert not legal, "a legal move was refused"
            assert self.state() == before, "a refused move changed the books"
            return
        event("legal")
        assert legal, "an illegal move was accepted"
        after = self.state()
        for kind, edges in (("batches", BATCH_TRANSITIONS), ("items", ITEM_TRANSITIONS)):
            for key, status in after[kind].items():
                old = before[kind].get(key)
                if old is not None and old != status:
                    assert status in edges[old], f"{kind} {key}: {old} -> {status}"

    @precondition(lambda self: bool(self.model.batches))
    @rule(pick=st.integers(0, 10**6), choice=st.integers(0, 10**6), mode=move_modes)
    def move_batch(self, pick: int, choice: int, mode: str) -> None:
        batch_id, allowed, target = pick_move(
            self.model.batches,
            BATCH_TRANSITIONS,
            BATCH_TARGETS,
            BATCH_HAPPY_PATH,
            pick,
            choice,
            mode,
        )
        batch = self.model.batches[batch_id]
        cascade = BATCH_ITEM_CASCADE.get(target)
        open_items = [
            self.model.items[i]
            for i in batch.items
            if self.model.items[i].money_class == "committed"
        ]
        legal = target in allowed and (
            cascade is None or all(cascade in ITEM_TRANSITIONS[i.status] for i in open_items)
        )

        def call(conn: Connection) -> None:
            state_machine.move_batch(conn, batch_id, target, "prop-test")

        self._move(call, legal)
        if legal:
            event(f"batch -> {target}")
            batch.status = target
            for item in open_items:
                item.status = cascade or item.status

    @precondition(lambda self: bool(self.model.items))
    @rule(pick=st.integers(0, 10**6), choice=st.integers(0, 10**6), mode=move_modes)
    def move_item(self, pick: int, choice: int, mode: str) -> None:
        item_id, allowed, target = pick_move(
            self.model.items, ITEM_TRANSITIONS, ITEM_TARGETS, ITEM_HAPPY_PATH, pick, choice, mode
        )
        item = self.model.items[item_id]
        needs = ITEM_NEEDS_BATCH.get(target)
        legal = target in allowed and (
            needs is None or self.model.batches[item.batch_id].status in needs
        )

        def call(conn: Connection) -> None:
            state_machine.move_item(conn, item_id, target, "prop-test")

        self._move(call, legal)
        if legal:
            event(f"item -> {target}")
            item.status = target

    # -- invariants, after every step

    @invariant()
    def books_agree_with_the_model(self) -> None:
        with db.read(self.engine) as conn:
            read = self.check_books(conn)
        report, sums = read.report, read.sums
        for batch in self.model.batches.values():
            if batch.status == "submission_failed":
                event("a batch is submission_failed")
        for currency in MACHINE_CURRENCIES:
            sales, deductions = self.model.confirmed(currency)
            paid = self.model.items_in(currency, "paid")
            b = report.get(currency)
            assert (b.clawback_receivable_minor if b else 0) == 0  # nothing is clawed back here
            assert sums.get((Account.GATEWAY_CLEARING, currency), 0) == sales - deductions - paid


@pytest.fixture
def fresh_books(ledger_url: str) -> Iterator[FreshBooks]:
    with books.fresh_books(ledger_url) as fresh:
        yield fresh


def test_payout_books_state_machine(fresh_books: FreshBooks) -> None:
    run_machine(
        PayoutMovesMachine,
        fresh_books,
        max_examples=25,
        suppress_health_check=(HealthCheck.too_slow, HealthCheck.filter_too_much),
    )
