"""What every payout state machine shares: real books, revenue, the kill switch, the invariants.

``BooksMachine`` is the base of the payout property machines
(tests/test_payout_status_properties.py, tests/test_payout_workflow_properties.py).
Each example gets empty books of its own (``FreshBooks``) and a ``BooksModel``
beside them. The base's rule offers revenue (any event of the pool again, at
any status, in any spelling and chunking), ``set_payouts_frozen`` turns the
kill switch on and off; ``check_books``, which each machine's invariant calls first, checks what
holds whatever the machine does:

- the transaction log chain verifies;
- revenue statuses never move back, and the books hold each event at the
  furthest status offered; batch and item statuses changed only along the
  state machine's edges since the previous step;
- the journal balances (each entry, and each currency over all accounts), and
  the balance report's confirmed revenue and deductions are exactly the
  confirmed events in ``revenue_events``;
- per currency, the balance report is the model's: confirmed sales, confirmed
  deductions, the reserve, money committed (with what is owed back as
  clawbacks: the committed and paid items) and the available balance;
  ``payouts_payable`` is minus what the committed items pay out;
- batch and item statuses are the model's.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import audit_log, balance, controls, db, journal
from finsup_dagster.ledger.journal import Account
from finsup_dagster.ledger.state_machine import BATCH_TRANSITIONS, ITEM_TRANSITIONS
from tests.helpers.books import (
    FreshBooks,
    Snapshot,
    assert_balances_match_events,
    assert_journal_balanced,
    balance_report,
    follows_edges,
    ingest,
    read_snapshot,
)
from tests.helpers.money_model import STATUS_RANK, BooksModel
from tests.helpers.revenue_events import Ident, plain, written

STEPS = 40  # stateful_step_count of every payout machine
# Statuses only advance, so most events would end reversed if each status were as likely;
# sampled lists start with what hypothesis treats as simplest: make that the useful case.
REVENUE_STATUSES = st.sampled_from(
    ("confirmed", "projected", "confirmed", "projected", "confirmed", "reversed")
)


@dataclass(frozen=True)
class BooksRead:
    """What ``check_books`` read, for the machine's own invariants."""

    snapshot: Snapshot
    report: dict[str, balance.Balance]  # the balance report by currency
    sums: dict[tuple[str, str], int]  # account balances


class BooksMachine(RuleBasedStateMachine):
    """Real books and their model; revenue and the kill switch as rules; the shared invariants."""

    books: ClassVar[FreshBooks | None] = None  # set by run_machine
    currencies: ClassVar[tuple[str, ...]] = ()  # the currencies the invariants look at

    def __init__(self) -> None:
        super().__init__()
        assert self.books is not None, f"run {type(self).__name__} through run_machine"
        self._stack = ExitStack()
        self.engine = self._stack.enter_context(self.books())
        self.model = BooksModel()
        self.previous: Snapshot | None = None

    def teardown(self) -> None:
        self._stack.close()

    # -- revenue

    def offer_revenue(
        self,
        offers: list[tuple[Ident, str]],
        chunk_size: int | None = None,
        data: st.DataObject | None = None,
    ) -> None:
        """Ingests ``offers`` (spelled at random with ``data``, else canonically) and tells the
        model; then ``revenue_offered`` lets the machine follow."""
        raws = [data.draw(written(i, s)) if data else plain(i, s) for i, s in offers]
        ingest(self.engine, raws, chunk_size or max(len(raws), 1))
        self.model.offer(offers)
        self.revenue_offered(offers)

    def revenue_offered(self, offers: Iterable[tuple[Ident, str]]) -> None:
        """What the machine's own model makes of revenue just offered (nothing here)."""

    @rule(
        picks=st.lists(st.tuples(st.integers(0, 99), REVENUE_STATUSES), min_size=1, max_size=4),
        chunk_size=st.integers(1, 4),
        data=st.data(),
    )
    def ingest_revenue(
        self, picks: list[tuple[int, str]], chunk_size: int, data: st.DataObject
    ) -> None:
        """Events of the pool offered again, at any status, spelled any way, in chunks."""
        pool = self.model.pool
        self.offer_revenue([(pool[i % len(pool)], s) for i, s in picks], chunk_size, data)

    # -- controls

    def set_payouts_frozen(self, frozen: bool) -> None:
        """The kill switch goes on or off (each machine's rule decides how often)."""
        with db.write(self.engine) as conn:
            controls.set_payouts_frozen(conn, frozen, "cfo", "property test")
        self.model.frozen = frozen

    # -- invariants

    def check_books(self, conn: Connection) -> BooksRead:
        """The invariants every money path keeps (module docstring); returns what it read."""
        chain = audit_log.verify(conn)
        assert chain.ok, chain.problem

        snap = read_snapshot(conn)
        prev = self.previous
        if prev is not None:
            for h, status in snap.revenue.items():
                old = prev.revenue.get(h)
                assert old is None or STATUS_RANK[status] >= STATUS_RANK[old], (
                    f"{h}: {old} -> {status}"
                )
            follows_edges("batch", prev.batches, snap.batches, BATCH_TRANSITIONS)
            follows_edges("item", prev.items, snap.items, ITEM_TRANSITIONS)
        self.previous = snap
        assert snap.revenue == self.model.offered

        sums = journal.account_balances(conn)
        report = balance_report(conn)
        assert_journal_balanced(conn, sums)
        assert_balances_match_events(conn, report)
        model = self.model
        for currency in self.currencies:
            sales, deductions = model.confirmed(currency)
            b = report.get(currency)
            got = (
                (
                    b.confirmed_revenue_minor,
                    b.deductions_minor,
                    b.reserve_minor,
                    b.committed_minor + b.clawback_receivable_minor,
                    b.available_minor,
                )
                if b
                else (0, 0, 0, 0, 0)
            )
            want = (
                sales,
                deductions,
                model.reserve[currency],
                model.committed(currency),
                model.available(currency),
            )
            assert got == want, currency
            assert sums.get((Account.PAYOUTS_PAYABLE, currency), 0) == -model.items_in(
                currency, "committed"
            )

        assert {k: row[0] for k, row in snap.batches.items()} == {
            k: b.status for k, b in model.batches.items()
        }
        assert {k: row[0] for k, row in snap.items.items()} == {
            k: i.status for k, i in model.items.items()
        }
        return BooksRead(snap, report, sums)


def run_machine(
    machine: type[BooksMachine],
    books: FreshBooks,
    *,
    max_examples: int,
    suppress_health_check: Iterable[HealthCheck] = (HealthCheck.too_slow,),
) -> None:
    """Runs ``machine`` on ``books`` (a backend's ``FreshBooks``), ``STEPS`` steps an example."""
    machine.books = books
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=max_examples,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=list(suppress_health_check),
            ),
        )
    finally:
        machine.books = None
