"""The whole payout workflow, driven at random, keeps the guarantees a finance team relies on.

Revenue arrives (sales, refunds and fees; projected, confirmed, reversed),
earnings cite the confirmed sales that fund them, batches are built from the
accrued earnings, approvers approve (good codes, wrong codes, replayed codes,
the batch's own creator, an approver over their limit), deny and cancel, the
kill switch goes on and off, approved batches start submission and the gateway
reports outcomes. Against an independent model of all that (the books'
model is tests/helpers/money_model.py), after every step, on SQLite and on
PostgreSQL alike, besides what every payout machine checks
(tests/helpers/books_machine.py: statuses along edges, the journal, the
balance report, the audit chain):

- an earning is refused when it would take more than its cited confirmed
  revenue has left, and a refused earning changes nothing;
- building batches never leaves the available balance negative, pays every
  beneficiary all of their accrued earnings in one item or none of them, and
  leaves waiting only what the policy or the balance really refuses;
- no earning is ever in two live batches: each earning points at one item at
  most, whose money class matches the earning's status, and every live item
  is exactly the sum of the earnings it pays;
- money committed (``balance.committed_minor``) is exactly the payout items
  still committed or paid, and the available balance is confirmed sales minus
  confirmed deductions minus that;
- only a fresh code of a distinct, non-creator approver within their limit
  approves; every refusal is logged and a refused action changes nothing;
- batch and item statuses only move along the state machine's edges, revenue
  statuses never move back, the journal balances and the audit chain verifies;
- sales that fund earnings are reversed, or refunded or charged back by an event
  naming them, at any point of the workflow: an accrued earning funded by one
  goes on hold; no batch paying one is approved or submitted unless an approver
  released it since; a paid one is clawed back, never for more than the sale
  funded of it (in full when the sale is reversed), and netted from the
  beneficiary's next item, leaving at least the minimum paid;
- committed money never exceeds confirmed net revenue when it is committed or
  approved (the balance guard); a reversal afterwards may push it over, and
  then nothing more is approved until it fits again.

Every example runs on empty books of its own (tests/helpers/books.py: FreshBooks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import (
    approvals,
    balance,
    batching,
    beneficiaries,
    clawbacks,
    db,
    earnings,
    holds,
    payouts,
    state_machine,
    submission,
)
from finsup_dagster.ledger.approvals import ApprovalRefused
from finsup_dagster.ledger.errors import (
    FundingReversed,
    IllegalTransition,
    IneligiblePayee,
    InvalidInput,
    LedgerError,
    PayoutsFrozen,
)
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.schema import beneficiaries as beneficiaries_table
from finsup_dagster.ledger.schema import clawbacks as clawbacks_table
from finsup_dagster.ledger.schema import earning_sources, payout_items, transaction_log
from finsup_dagster.ledger.schema import earnings as earnings_table
from finsup_dagster.ledger.secret_box import SecretBox
from finsup_dagster.ledger.state_machine import ITEM_TRANSITIONS, LIVE_BATCH_STATUSES
from tests.helpers import books, money_model
from tests.helpers.books import FreshBooks, read_snapshot
from tests.helpers.books_machine import REVENUE_STATUSES, BooksMachine, run_machine
from tests.helpers.money_model import ITEM_MONEY_CLASS, BatchModel, ItemModel
from tests.helpers.revenue_events import Ident

CUR = "USD"
POLICY = batching.BatchPolicy(
    min_item={"*": "1.00"}, max_batch_total={"*": "300.00"}, dual_approval_over={"*": "100.00"}
)
MIN_ITEM, MAX_BATCH, DUAL_OVER = 100, 30_000, 10_000  # POLICY in minor units
APPROVAL_POLICY = approvals.ApprovalPolicy(lockout_attempts=3)  # lock-outs happen within a run
BOX = SecretBox("property-test-key-material-of-at-least-32-characters")
T0 = 1_800_000_000.0  # a multiple of 30: every approver's clock steps from here
CREATOR = "maker"  # builds every batch, and is also an approver (who may not approve them)
APPROVER_LIMITS = {"alice": 1_000_000, "bob": 1_000_000, "carol": 5_000, CREATOR: 1_000_000}
OPEN_ITEM = frozenset(
    {"pending", "submitted", "processing", "unclaimed", "held"}
)  # gateway not done yet
BENEFICIARY_NAMES = st.sampled_from(("b1", "b2", "b3", "b1", "b4", "nobody"))
CHALLENGERS = ("nobody", "creator", "over limit", "wrong", "replay")
DECISIONS = (
    "approve",
    "approve",
    "approve",
    "deny",
    "cancel_with_code",
    "cancel_plain",
    "retry",
)
CODE_MODES = ("valid", "valid", "valid", "wrong", "replay", "replay_later")
SOLD_AT = datetime(2026, 3, 1, 10, tzinfo=UTC)


def shop_event(external_id: str, kind: str, amount_minor: int) -> Ident:
    """One of the shop's events: every one in the currency, at the same instant."""
    return Ident("shop", external_id, kind, CUR, amount_minor, SOLD_AT)


@dataclass
class ApproverModel:
    name: str
    secret: str
    limit_minor: int
    t: float = T0
    last_code: str | None = None
    last_code_t: float = 0.0
    failures: int = 0
    locked_until: float | None = None


@dataclass
class EarningModel:
    beneficiary: str
    amount_minor: int
    sources: dict[str, int] = field(default_factory=dict)  # sale hash -> minor units it funds
    status: str = "accrued"
    item_id: int | None = None
    released_step: int | None = None  # when an approver last released it


BENEFICIARIES = {  # external id -> (payout method, destination, KYC status)
    "b1": ("paypal", "b1@example.com", "verified"),
    "b2": ("paypal", "b2@example.com", "verified"),
    "b3": ("payoneer", "PAYEE-0003", "verified"),
    "b4": ("paypal", "b4@example.com", "pending"),  # never eligible: KYC pending
}


def beneficiary_record(external_id: str, sanctions: str = "clear") -> dict[str, Any]:
    method, destination, kyc = BENEFICIARIES[external_id]
    return beneficiaries.parse_beneficiary(
        {
            "external_id": external_id,
            "name": external_id.upper(),
            "payout_method": method,
            "destination": destination,
            "country": "US",
            "kyc_status": kyc,
            "sanctions_status": sanctions,
        }
    )


class PayoutWorkflow(BooksMachine):
    """Revenue, earnings, batches, approvals and the gateway against a model of the books."""

    currencies = (CUR,)

    def __init__(self) -> None:
        super().__init__()
        self.funding_left: dict[str, int] = {}  # event hash -> minor units not yet funding
        self.step = 0  # a clock for causes and releases: every ingestion and release ticks it
        self.reversed_at: dict[str, int] = {}  # sale hash -> step it went confirmed -> reversed
        self.confirmed_at: dict[str, int] = {}  # refund/chargeback hash -> step it was confirmed
        self.max_exposure: dict[str, int] = {}  # sale hash -> most of it ever gone
        self.eligible = {"b1": True, "b2": True, "b3": True, "b4": False}
        self.earnings: dict[str, EarningModel] = {}
        self.approvers: dict[str, ApproverModel] = {}
        self.refusals = 0  # authorised() refusals, each must leave a "*_refused" log row
        self.lockouts = 0
        self.counter = 0
        with db.write(self.engine) as conn:
            for ext in BENEFICIARIES:
                beneficiaries.upsert(conn, beneficiary_record(ext), "setup")
            for name, limit in APPROVER_LIMITS.items():
                secret = approvals.add_approver(conn, name, limit, CUR, BOX, "admin")
                self.approvers[name] = ApproverModel(name, secret, limit)
            ids = sa.select(beneficiaries_table.c.id, beneficiaries_table.c.external_id)
            self.ben_ids = {int(i): ext for i, ext in conn.execute(ids)}

    # ------------------------------------------------------------------ model helpers

    def problem(self, sale_hash: str) -> tuple[int, int] | None:
        """(step of the latest cause, minor units gone) if the sale no longer funds anything.

        A sale is gone when reversed, or named (same external id) by a confirmed refund
        or chargeback: then the refunds' total, at most the sale, is gone.
        """
        by_hash = {i.documented_hash: i for i in self.model.pool}
        sale = by_hash[sale_hash]
        if self.model.offered.get(sale_hash) == "reversed" and sale_hash in self.reversed_at:
            return self.reversed_at[sale_hash], sale.amount_minor
        if self.model.offered.get(sale_hash) != "confirmed":
            return None
        causes = [
            i
            for i in self.model.pool
            if i.kind in ("refund", "chargeback")
            and i.external_id == sale.external_id
            and self.model.offered.get(i.documented_hash) == "confirmed"
        ]
        if not causes:
            return None
        gone = min(sale.amount_minor, sum(i.amount_minor for i in causes))
        return max(self.confirmed_at[i.documented_hash] for i in causes), gone

    def unfunded(self, ext: str) -> bool:
        """The earning cites a gone sale, and no approver released it since."""
        e = self.earnings[ext]
        for h in e.sources:
            p = self.problem(h)
            if p is not None and (e.released_step is None or e.released_step < p[0]):
                return True
        return False

    def hold_unfunded(self) -> None:
        for ext, e in self.earnings.items():
            if e.status == "accrued" and self.unfunded(ext):
                e.status = "on_hold"
                event("earning: put on hold")

    def move_item_model(self, item_id: int, target: str) -> None:
        item = self.model.items[item_id]
        before, after = ITEM_MONEY_CLASS[item.status], ITEM_MONEY_CLASS[target]
        item.status = target
        if before == after:
            return
        for ext in item.earnings:
            earning = self.earnings[ext]
            if after == "paid":
                earning.status = "paid"
            elif after == "released" and earning.item_id == item_id:
                earning.status, earning.item_id = "accrued", None
        self.hold_unfunded()

    def end_batch_model(self, batch_id: str, target: str) -> None:
        """Denied or cancelled: every open item is cancelled and its earnings accrue again."""
        batch = self.model.batches[batch_id]
        batch.status = target
        for item_id in batch.items:
            if ITEM_MONEY_CLASS[self.model.items[item_id].status] == "committed":
                self.move_item_model(item_id, "cancelled")

    def pick_batch(self, pick: int, statuses: frozenset[str] | None = None) -> str | None:
        # In creation order: batch ids are random, and the same draws must pick the same batch.
        ids = [b for b, m in self.model.batches.items() if statuses is None or m.status in statuses]
        return ids[pick % len(ids)] if ids else None

    # ------------------------------------------------------------------ codes

    def code_for(self, a: ApproverModel, mode: str) -> tuple[str, float, bool]:
        """(code, now, whether the code is fresh for ``now``)."""
        totp = pyotp.TOTP(a.secret)
        if mode.startswith("replay") and a.last_code is not None:
            now = a.last_code_t + (30 if mode == "replay_later" else 0)
            return a.last_code, now, False
        a.t += 30
        if mode == "wrong":
            taken = {totp.at(a.t + d * 30) for d in (-1, 0, 1)}
            n = int(a.t) // 7
            while (code := f"{n % 1_000_000:06d}") in taken:
                n += 1
            return code, a.t, False
        # A fresh step whose code cannot be mistaken for the previous step's.
        while totp.at(a.t) == totp.at(a.t - 30):
            a.t += 30
        return totp.at(a.t), a.t, True

    def authorise(
        self,
        name: str,
        mode: str,
        what: str,
        batch_id: str,
        action: Callable[[Connection, Any], Any],
        judge: Callable[[], type[LedgerError] | None],
    ) -> bool:
        """Runs ``action`` behind ``name``'s code; checks the outcome the model predicts."""
        a = self.approvers[name]
        code, now, fresh = self.code_for(a, mode)
        locked = a.locked_until is not None and now < a.locked_until
        expected = ApprovalRefused if locked or not fresh else judge()
        try:
            approvals.authorised(
                self.engine,
                name,
                code,
                BOX,
                APPROVAL_POLICY,
                what,
                ("payout_batch", batch_id),
                action,
                now=now,
            )
        except LedgerError as exc:
            assert expected is not None, f"{what} by {name} ({mode}) refused: {exc}"
            assert type(exc) is expected, f"{what} by {name} ({mode}): {exc!r}, not {expected}"
            self.refusals += 1
            outcome = False
            event(f"{what}: refused ({type(exc).__name__})")
        else:
            assert expected is None, f"{what} by {name} ({mode}) accepted; expected {expected}"
            outcome = True
            event(f"{what}: done")
        if locked:
            return outcome
        if not fresh:  # a bad code counts towards lock-out
            a.failures += 1
            if a.failures >= APPROVAL_POLICY.lockout_attempts:
                a.failures = 0
                a.locked_until = now + APPROVAL_POLICY.lockout_minutes * 60
                self.lockouts += 1
                event("approver locked out")
        else:  # the step is consumed whatever the action's fate
            a.failures, a.last_code, a.last_code_t = 0, code, now
        return outcome

    # ------------------------------------------------------------------ rules

    @initialize(data=st.data())
    def revenue_arrives(self, data: st.DataObject) -> None:
        """The events this example talks about, each first offered at some status."""
        kinds = data.draw(
            st.lists(
                st.sampled_from(("sale", "sale", "refund", "sale", "fee")), min_size=2, max_size=5
            ),
            label="kinds",
        )
        for n, kind in enumerate(["sale", *kinds]):
            amount = data.draw(
                st.integers(10_000, 60_000) if kind == "sale" else st.integers(100, 8_000),
                label=f"amount {n}",
            )
            self.model.pool.append(shop_event(f"ev-{n}", kind, amount))
        pool = self.model.pool
        first = data.draw(st.lists(REVENUE_STATUSES, min_size=len(pool), max_size=len(pool)))
        self.offer_revenue(list(zip(pool, first, strict=True)))
        for who, cite, fraction in data.draw(
            st.lists(
                st.tuples(BENEFICIARY_NAMES, st.integers(0, 99), st.integers(1, 100)), max_size=4
            ),
            label="first earnings",
        ):
            self.add_earning(who, [cite], True, "fits", fraction)
        self.build_batches()

    def revenue_offered(self, offers: Iterable[tuple[Ident, str]]) -> None:
        """Which sales are gone and since when; accrued earnings they fund go on hold."""
        picked = list(offers)
        self.step += 1
        for ident, _ in picked:
            self.funding_left.setdefault(ident.documented_hash, ident.amount_minor)
        for ident, _ in picked:
            h, now = ident.documented_hash, self.model.offered[ident.documented_hash]
            if (
                ident.kind == "sale"
                and now == "reversed"
                and h not in self.reversed_at
                and self.cited(h)
            ):
                self.reversed_at[h] = self.step  # it was confirmed: earnings cited it
            if ident.kind != "sale" and now == "confirmed" and h not in self.confirmed_at:
                self.confirmed_at[h] = self.step
        for ident in self.model.pool:
            p = self.problem(ident.documented_hash) if ident.kind == "sale" else None
            if p is not None:
                h = ident.documented_hash
                self.max_exposure[h] = max(self.max_exposure.get(h, 0), p[1])
        self.hold_unfunded()

    @rule(
        who=BENEFICIARY_NAMES,
        cites=st.lists(st.integers(0, 99), min_size=1, max_size=2),
        from_confirmed_sales=st.sampled_from((True, True, True, False)),
        mode=st.sampled_from(("fits", "fits", "fits", "all_left", "exceeds", "small")),
        fraction=st.integers(1, 100),
    )
    def add_earning(
        self, who: str, cites: list[int], from_confirmed_sales: bool, mode: str, fraction: int
    ) -> None:
        by_hash = {i.documented_hash: i for i in self.model.pool}
        sales = [
            i
            for i in self.model.pool
            if i.kind == "sale" and self.model.offered.get(i.documented_hash) == "confirmed"
        ]
        choices = sales if from_confirmed_sales and sales else self.model.pool
        hashes = list(dict.fromkeys(choices[i % len(choices)].documented_hash for i in cites))
        left = sum(self.funding_left.get(h, 0) for h in hashes)
        amount = {
            "fits": max(1, min(left, fraction * 150)),  # up to 150.00
            "all_left": max(1, left),
            "exceeds": left + fraction,
            "small": fraction,  # at most 1.00: below the minimum item when alone
        }[mode]
        valid = (
            who in BENEFICIARIES
            and all(h in self.model.offered for h in hashes)
            and all(
                by_hash[h].kind == "sale" and self.model.offered[h] == "confirmed" for h in hashes
            )
            and amount <= left
        )
        self.counter += 1
        ext = f"earn-{self.counter}"
        parsed = earnings.parse_earning(
            {
                "external_id": ext,
                "beneficiary": who,
                "amount": format_minor(amount, CUR),
                "currency": CUR,
                "event_hashes": hashes,
            }
        )
        try:
            with db.write(self.engine) as conn:
                outcome = earnings.add_earning(conn, parsed, "swarm")
        except InvalidInput as exc:
            assert not valid, f"a fundable earning of {amount} (left {left}) was refused: {exc}"
            event("earning: refused")
            return
        event("earning: accrued")
        assert valid, f"earning of {amount} accepted with {left} left ({mode}, {who})"
        assert outcome == "created"
        need, sources = amount, {}
        for h in hashes:
            take = min(need, self.funding_left[h])
            self.funding_left[h] -= take
            need -= take
            if take:
                sources[h] = take
        self.earnings[ext] = EarningModel(who, amount, sources)
        self.hold_unfunded()

    @rule(
        pick=st.integers(0, 99),
        kind=st.sampled_from(("refund", "chargeback")),
        percent=st.integers(1, 120),
        status=st.sampled_from(("confirmed", "confirmed", "projected", "reversed")),
    )
    def refund_names_a_sale(self, pick: int, kind: str, percent: int, status: str) -> None:
        """A refund or chargeback with a sale's own external id: it names that sale."""
        sales = [i for i in self.model.pool if i.kind == "sale"]
        cited = [i for i in sales if self.cited(i.documented_hash)]
        sale = (cited if cited and pick % 4 else sales)[
            pick % len(cited if cited and pick % 4 else sales)
        ]
        named = [i for i in self.model.pool if i.kind == kind and i.external_id == sale.external_id]
        if named:  # one source id carries one refund and one chargeback at most
            ident = named[0]
        else:
            amount = max(1, min(sale.amount_minor * percent // 100, 99_999_999))
            ident = shop_event(sale.external_id, kind, amount)
            self.model.pool.append(ident)
        event(f"{kind} names a sale: {status}")
        self.offer_revenue([(ident, status)])

    def cited(self, sale_hash: str) -> bool:
        return any(sale_hash in e.sources for e in self.earnings.values())

    @precondition(
        lambda self: any(
            self.model.offered.get(i.documented_hash) == "confirmed"
            and self.cited(i.documented_hash)
            for i in self.model.pool
        )
    )
    @rule(pick=st.integers(0, 10**6))
    def funding_sale_reversed(self, pick: int) -> None:
        """A sale that funds earnings (accrued, batched, in flight or paid) is reversed."""
        sales = [
            i
            for i in self.model.pool
            if self.model.offered.get(i.documented_hash) == "confirmed"
            and self.cited(i.documented_hash)
        ]
        # Mostly one that paid someone already, when there is one: that is the clawback case.
        paid = [
            i
            for i in sales
            if any(
                i.documented_hash in e.sources and e.status == "paid"
                for e in self.earnings.values()
            )
        ]
        sale = (paid if paid and pick % 3 else sales)[
            pick % len(paid if paid and pick % 3 else sales)
        ]
        states = {e.status for e in self.earnings.values() if sale.documented_hash in e.sources}
        event(f"funding sale reversed: earnings {'/'.join(sorted(states))}")
        self.offer_revenue([(sale, "reversed")])

    def held(self) -> list[str]:
        return [
            ext
            for ext, e in self.earnings.items()
            if e.status == "on_hold" or (e.status == "batched" and self.unfunded(ext))
        ]

    @precondition(lambda self: bool(self.held()))
    @rule(
        pick=st.integers(0, 10**6),
        release=st.booleans(),
        who=st.sampled_from(("alice", "carol", "bob")),
        mode=st.sampled_from(CODE_MODES),
    )
    def approver_decides_a_held_earning(
        self, pick: int, release: bool, who: str, mode: str
    ) -> None:
        """Release lets a held earning be paid (within the approver's limit); cancel drops it."""
        held = self.held()
        ext = held[pick % len(held)]
        e, limit = self.earnings[ext], self.approvers[who].limit_minor
        if release:
            # Held earnings are the ones held() lists: on hold (whatever its funding is
            # now: a refund reversed since the hold leaves it releasable, not stuck), or
            # batched while unfunded.
            refused = InvalidInput if e.amount_minor > limit else None
            if not self.unfunded(ext):
                event("earning_release: on hold, funded again")

            def action(conn: Connection, a: Any) -> Any:
                return holds.release(conn, a, ext, "funded from elsewhere")

        else:
            refused = InvalidInput if e.status != "on_hold" else None

            def action(conn: Connection, a: Any) -> Any:
                return holds.cancel(conn, a, ext, "the sale is gone")

        what = "earning_release" if release else "earning_cancellation"
        if not self.authorise(who, mode, what, ext, action, lambda: refused):
            return
        self.step += 1
        if release:
            e.released_step = self.step
            if e.status == "on_hold":
                e.status = "accrued"
        else:
            e.status = "cancelled"
            for h, amount in e.sources.items():  # a cancelled earning funds nothing any more
                self.funding_left[h] += amount

    @rule(change=st.sampled_from(("unfreeze", "b2 clear", "freeze", "b2 potential_match")))
    def controls_change(self, change: str) -> None:
        """The kill switch goes on or off, or b2's sanctions screening changes."""
        if change.startswith("b2 "):
            sanctions = change.removeprefix("b2 ")
            with db.write(self.engine) as conn:
                beneficiaries.upsert(conn, beneficiary_record("b2", sanctions), "screening")
            self.eligible["b2"] = sanctions == "clear"
        else:
            self.set_payouts_frozen(change == "freeze")

    @rule()
    def build_batches(self) -> None:
        accrued = {ext: e for ext, e in self.earnings.items() if e.status == "accrued"}
        with db.read(self.engine) as conn:
            available_before = balance.available_minor(conn, CUR)
            debts = {self.ben_ids[b]: n for (b, _), n in clawbacks.outstanding(conn, CUR).items()}
        assert available_before == self.model.available(CUR)
        try:
            report = batching.build_batches(self.engine, POLICY, created_by=CREATOR)
        except PayoutsFrozen:
            assert self.model.frozen, "build refused while payouts are not frozen"
            return
        assert not self.model.frozen, "batches were built while payouts were frozen"

        new_ids = [b["batch_id"] for b in report.batches]
        assert len(set(new_ids)) == len(new_ids)
        with db.read(self.engine) as conn:
            available_after = balance.available_minor(conn, CUR)
            snap = read_snapshot(conn)
        created = sum(b["total_minor"] for b in report.batches)
        assert available_after == available_before - created
        event(f"build: {min(len(new_ids), 2)} batches")
        for w in report.waiting:
            event(f"build: waiting, {w['reason']}")
        if report.batches:
            assert available_after >= 0, f"building batches left {available_after} available"
        assert set(snap.batches) - set(self.model.batches) == set(new_ids)

        claims: dict[int, list[str]] = {}
        for ext, (status, item_id, _) in snap.earnings.items():
            if item_id is not None and snap.items[item_id][1] in new_ids:
                assert status == "batched", (ext, status)
                assert ext in accrued, f"earning {ext} claimed though not accrued"
                claims.setdefault(item_id, []).append(ext)
        paid_to: dict[str, int] = {}
        for report_batch in report.batches:
            batch_id = report_batch["batch_id"]
            status, total, count, required, version, key, creator = snap.batches[batch_id]
            assert (status, total, version, key, creator) == (
                "pending_approval",
                report_batch["total_minor"],
                0,
                None,
                CREATOR,
            )
            assert 0 < total <= MAX_BATCH
            assert required == report_batch["required_approvals"] == (2 if total > DUAL_OVER else 1)
            item_ids = sorted(i for i, row in snap.items.items() if row[1] == batch_id)
            assert count == len(item_ids) == report_batch["item_count"]
            assert sum(snap.items[i][2] for i in item_ids) == total
            for item_id in item_ids:
                item_status, _, amount, ben_id = snap.items[item_id]
                ben = self.ben_ids[ben_id]
                assert item_status == "pending" and amount >= MIN_ITEM
                assert self.eligible[ben], f"ineligible {ben} put in batch {batch_id}"
                paid = claims.get(item_id, [])
                assert paid, f"item {item_id} pays no earning"
                assert all(self.earnings[e].beneficiary == ben for e in paid)
                gross = sum(self.earnings[e].amount_minor for e in paid)
                # What the beneficiary owes back is netted, leaving at least the minimum paid.
                netted = money_model.netted(gross, debts.get(ben, 0), MIN_ITEM)
                assert amount == gross - netted, (item_id, amount, gross, debts.get(ben))
                if netted:
                    event("build: clawback netted")
                assert ben not in paid_to, f"{ben} got two items in one build"
                paid_to[ben] = item_id
                self.model.items[item_id] = ItemModel(
                    batch_id, CUR, amount, "pending", ben, sorted(paid), netted
                )
                for e in paid:
                    self.earnings[e].status, self.earnings[e].item_id = "batched", item_id
            self.model.batches[batch_id] = BatchModel("pending_approval", total, item_ids, required)

        # Each beneficiary is paid all of their accrued earnings or none; what waits, waits
        # for a reason the policy or the balance really gives.
        waiting = {w["beneficiary"]: w for w in report.waiting}
        ineligible = [w["beneficiary"] for w in report.ineligible]
        for ben in BENEFICIARIES:
            owed = [ext for ext, e in accrued.items() if e.beneficiary == ben]
            if not owed:
                continue
            total_owed = sum(accrued[ext].amount_minor for ext in owed)
            if not self.eligible[ben]:
                assert all(self.earnings[ext].status == "accrued" for ext in owed)
                assert ineligible.count(ben) == len(owed) and ben not in waiting
                continue
            if ben in paid_to:
                assert sorted(owed) == self.model.items[paid_to[ben]].earnings, (
                    f"{ben} paid in part"
                )
                continue
            assert ben in waiting, f"{ben}'s accrued earnings neither batched nor waiting"
            w = waiting[ben]
            assert w["amount_minor"] == total_owed
            reason = w["reason"]
            debt = debts.get(ben, 0)
            cash = total_owed - money_model.netted(total_owed, debt, MIN_ITEM)
            if reason == "offset by the beneficiary's outstanding clawback":
                assert debt > 0 and cash == total_owed <= MIN_ITEM
            elif reason == "below the minimum item amount":
                assert cash < MIN_ITEM
            elif reason == "larger than the maximum batch total":
                assert cash > MAX_BATCH
            else:
                assert reason == "not covered by the available balance", reason
                assert MIN_ITEM <= cash <= MAX_BATCH
                assert cash > available_after, f"{ben} waits though it fits"

    def open_batch(self, pick: int, statuses: frozenset[str]) -> str:
        """Mostly a batch in ``statuses``; one pick in four (or when there is none) any batch."""
        chosen = self.pick_batch(pick, statuses) if pick % 4 != 3 else None
        batch_id = chosen or self.pick_batch(pick)
        assert batch_id is not None
        return batch_id

    def able_approver(self, batch: BatchModel) -> str:
        """An approver the rules let approve ``batch``, if there is one."""
        for a in self.approvers.values():
            ok = a.name != CREATOR and a.name not in batch.approved_by
            if ok and a.limit_minor >= batch.total_minor:
                return a.name
        return "alice"

    def approve(self, batch_id: str, who: str, mode: str) -> None:
        batch, approver = self.model.batches[batch_id], self.approvers[who]

        def judge() -> type[LedgerError] | None:
            if self.model.frozen:
                return PayoutsFrozen
            reasons = {
                "not pending": batch.status != "pending_approval",
                "creator": who == CREATOR,
                "over limit": batch.total_minor > approver.limit_minor,
                "approved already": who in batch.approved_by,
                "payee no longer eligible": not self.batch_payable(batch),
                "funding reversed": not self.batch_funded(batch),
                "balance short": self.model.available(CUR) < 0,
            }
            refused = [r for r, applies in reasons.items() if applies]
            event(f"approval should be refused: {refused[0]}" if refused else "approval ok")
            if refused and refused[0] == "payee no longer eligible":
                return IneligiblePayee
            if refused and refused[0] == "funding reversed":
                return FundingReversed
            return ApprovalRefused if refused else None

        def action(conn: Connection, a: Any) -> Any:
            return approvals.approve(conn, a, batch_id)

        if self.authorise(who, mode, "batch_approval", batch_id, action, judge):
            batch.approved_by.add(who)
            if len(batch.approved_by) >= batch.required:
                batch.status, batch.version = "approved", batch.version + 1

    def deny(self, batch_id: str, who: str, mode: str) -> None:
        batch = self.model.batches[batch_id]
        refused = None if batch.status == "pending_approval" else ApprovalRefused

        def action(conn: Connection, a: Any) -> Any:
            return approvals.deny(conn, a, batch_id, "amounts look wrong")

        if self.authorise(who, mode, "batch_denial", batch_id, action, lambda: refused):
            self.end_batch_model(batch_id, "denied")

    def cancel(self, batch_id: str, who: str | None, mode: str) -> None:
        """With an approver's code (``who``), or by ops without one (pending batches only)."""
        batch = self.model.batches[batch_id]
        if who is not None:
            ok = batch.status in ("pending_approval", "approved", "submission_failed")

            def action(conn: Connection, a: Any) -> Any:
                return approvals.cancel(conn, a.name, batch_id, "not this week", with_code=True)

            refused = None if ok else ApprovalRefused
            if self.authorise(who, mode, "batch_cancellation", batch_id, action, lambda: refused):
                self.end_batch_model(batch_id, "cancelled")
            return
        try:
            with db.write(self.engine) as conn:
                approvals.cancel(conn, "ops", batch_id, "not this week", with_code=False)
        except ApprovalRefused:
            assert batch.status != "pending_approval", "a pending batch could not be cancelled"
            event("cancel without code: refused")
            return
        assert batch.status == "pending_approval", f"{batch.status} batch cancelled without code"
        event("cancel without code: done")
        self.end_batch_model(batch_id, "cancelled")

    def retry(self, batch_id: str, who: str, mode: str) -> None:
        """An approver sends a batch the gateway refused back to approved: same version, same key."""
        batch, approver = self.model.batches[batch_id], self.approvers[who]

        def judge() -> type[LedgerError] | None:
            if self.model.frozen:
                return PayoutsFrozen
            refused = (
                batch.status != "submission_failed"
                or who == CREATOR
                or batch.total_minor > approver.limit_minor
            )
            return ApprovalRefused if refused else None

        def action(conn: Connection, a: Any) -> Any:
            return submission.retry(conn, a, batch_id)

        if self.authorise(who, mode, "batch_retry", batch_id, action, judge):
            batch.status = "approved"  # the version and the key stay: the gateway dedupes on it

    def gateway_refuses(self, batch_id: str) -> None:
        """The gateway refuses the batch for good: the amount stays reserved, nothing moves."""
        with db.read(self.engine) as conn:
            before = balance.available_minor(conn, CUR)
        with db.write(self.engine) as conn:
            submission.record_submission_failed(conn, batch_id, "RECEIVER_UNREGISTERED", "gateway")
        with db.read(self.engine) as conn:
            assert balance.available_minor(conn, CUR) == before, "a refusal released money"
        self.model.batches[batch_id].status = "submission_failed"
        event("gateway: batch refused")

    def batch_funded(self, batch: BatchModel) -> bool:
        """Funding is asked again at approval and submission: no gone sale unless released."""
        return not any(
            self.unfunded(ext)
            for i in batch.items
            for ext in self.model.items[i].earnings
            if self.earnings[ext].status == "batched"
        )

    def batch_payable(self, batch: BatchModel) -> bool:
        """Screening is asked again at approval and submission: every payee must still be eligible."""
        return all(self.eligible[self.model.items[i].beneficiary] for i in batch.items)

    def submit(self, batch_id: str, version: int) -> None:
        batch = self.model.batches[batch_id]
        key = payouts.idempotency_key(batch_id, version)
        expected: type[LedgerError] | None = None
        if batch.status == "submitting" and batch.idempotency_key == key:
            expected = None  # a repeated step: same key, nothing changes
        elif self.model.frozen:
            expected = PayoutsFrozen
        elif version != batch.version or batch.status != "approved":
            expected = IllegalTransition
        elif not self.batch_payable(batch):
            expected = IneligiblePayee
        elif not self.batch_funded(batch):
            expected = FundingReversed
        try:
            with db.write(self.engine) as conn:
                got = payouts.start_submission(conn, batch_id, version, "submitter")
        except LedgerError as exc:
            assert expected is not None, f"submission of {batch.status} batch refused: {exc}"
            assert type(exc) is expected, f"{exc!r}, expected {expected}"
            event(f"submission: refused ({type(exc).__name__})")
            return
        assert expected is None, f"submission of a {batch.status} batch (v{version}) accepted"
        event(f"submission: from {batch.status}")
        assert got == key
        batch.status, batch.idempotency_key = "submitting", key

    def gateway_accepts(self, batch_id: str) -> None:
        """The batch and each of its items move one edge each."""
        items = self.model.batches[batch_id].items
        with db.write(self.engine) as conn:
            submission.record_submitted(
                conn, batch_id, f"GW-{batch_id}", {i: f"GWI-{i}" for i in items}, "gateway"
            )
        self.model.batches[batch_id].status = "submitted"
        for item_id in self.model.batches[batch_id].items:
            self.move_item_model(item_id, "submitted")
        event("gateway: batch submitted")

    def gateway_item(self, item_id: int, choice: int) -> None:
        edges = ITEM_TRANSITIONS[self.model.items[item_id].status]
        targets = ["paid"] * 3 * ("paid" in edges) + sorted(edges)  # mostly paid
        target = targets[choice % len(targets)]
        with db.write(self.engine) as conn:
            state_machine.move_item(conn, item_id, target, "gateway")
        self.move_item_model(item_id, target)
        event(f"gateway: item {target}")

    def gateway_closes(self, batch_id: str) -> None:
        paid = [self.model.items[i].status == "paid" for i in self.model.batches[batch_id].items]
        target = "completed" if all(paid) else "partially_completed" if any(paid) else "failed"
        with db.write(self.engine) as conn:
            state_machine.move_batch(conn, batch_id, target, "gateway")
        self.model.batches[batch_id].status = target
        event(f"gateway: batch {target}")

    def next_step(self, batch_id: str, refund_paid: bool) -> tuple[str, Any] | None:
        """The batch's natural next step along the happy path, if it has one."""
        b = self.model.batches[batch_id]
        if b.status in ("pending_approval", "approved", "submitting", "submission_failed"):
            return (b.status, batch_id)
        if b.status == "submitted":
            open_items = [i for i in b.items if self.model.items[i].status in OPEN_ITEM]
            return ("item", open_items[0]) if open_items else ("close", batch_id)
        paid = [i for i in b.items if self.model.items[i].status == "paid"]
        if refund_paid and paid and b.status in ("completed", "partially_completed"):
            return ("item", paid[0])  # paid, then returned or refunded
        return None

    @precondition(lambda self: any(self.next_step(b, True) for b in self.model.batches))
    @rule(pick=st.integers(0, 10**6), choice=st.integers(0, 10**6), drive=st.integers(1, 6))
    def workflow_advances(self, pick: int, choice: int, drive: int) -> None:
        """A batch takes up to ``drive`` next steps: approvals, submission, gateway reports.

        The invariants are checked between the steps, so each status moves one edge at a time.
        """
        refund_paid = choice % 4 == 0
        candidates = [b for b in self.model.batches if self.next_step(b, refund_paid)]
        if not candidates:
            return
        batch_id = candidates[pick % len(candidates)]
        for n in range(drive):
            step = self.next_step(batch_id, refund_paid)
            if step is None:
                return
            if n:
                self.books_keep_their_guarantees()
            self.take_step(*step, choice=choice + n)

    def take_step(self, what: str, key: Any, choice: int) -> None:
        if what == "pending_approval":
            # Often someone the rules refuse tries first: the creator, an approver over their
            # limit, or the able approver with a wrong or an already used code.
            batch, able = self.model.batches[key], self.able_approver(self.model.batches[key])
            challenger = CHALLENGERS[choice % len(CHALLENGERS)]
            if challenger == "creator":
                self.approve(key, CREATOR, "valid")
            elif challenger == "over limit":
                low = min(self.approvers.values(), key=lambda a: a.limit_minor)
                if batch.total_minor > low.limit_minor:
                    self.approve(key, low.name, "valid")
            elif challenger in ("wrong", "replay"):
                self.approve(key, able, challenger)
            self.approve(key, able, "valid")
        elif what == "approved":
            self.submit(key, self.model.batches[key].version)
        elif what == "submitting":
            if choice % 2 == 1:  # refused for good as often as accepted: the retry path
                self.gateway_refuses(key)
            else:
                self.gateway_accepts(key)
        elif what == "submission_failed":
            # An approver retries it (then it is submitted again) or cancels it (released).
            able = self.able_approver(self.model.batches[key])
            if choice % 3 == 2:
                self.cancel(key, able, "valid")
            else:
                self.retry(key, able, "valid")
        elif what == "close":
            self.gateway_closes(key)
        else:
            self.gateway_item(key, choice)

    @precondition(lambda self: bool(self.model.batches))
    @rule(
        action=st.sampled_from(DECISIONS),
        who=st.sampled_from(("someone able", *sorted(APPROVER_LIMITS))),
        pick=st.integers(0, 10**6),
        mode=st.sampled_from(CODE_MODES),
        minutes_later=st.sampled_from((0, 0, 0, 16)),
    )
    def decide(self, action: str, who: str, pick: int, mode: str, minutes_later: int) -> None:
        """An approver approves, denies or cancels a batch; or ops cancel one without a code."""
        for a in self.approvers.values():  # sixteen minutes end any lock-out
            a.t += minutes_later * 60
        batch_id = self.open_batch(
            pick, frozenset({"pending_approval", "approved", "submission_failed"})
        )
        if who == "someone able":
            who = self.able_approver(self.model.batches[batch_id])
        if action == "approve":
            self.approve(batch_id, who, mode)
        elif action == "deny":
            self.deny(batch_id, who, mode)
        elif action == "cancel_with_code":
            self.cancel(batch_id, who, mode)
        elif action == "retry":
            self.retry(batch_id, who, mode)
        else:
            self.cancel(batch_id, None, mode)

    @precondition(lambda self: any(b.status == "submitting" for b in self.model.batches.values()))
    @rule(
        pick=st.integers(0, 10**6),
        then=st.sampled_from(("retry", "retry", "cancel", "wait")),
        mode=st.sampled_from(CODE_MODES),
    )
    def gateway_refuses_a_batch(self, pick: int, then: str, mode: str) -> None:
        """The gateway refuses a submitting batch; an approver retries or cancels it, or not yet."""
        batch_id = self.pick_batch(pick, frozenset({"submitting"}))
        assert batch_id is not None
        self.gateway_refuses(batch_id)
        if then == "wait":
            return
        self.books_keep_their_guarantees()
        able = self.able_approver(self.model.batches[batch_id])
        if then == "retry":
            self.retry(batch_id, able, mode)
        else:
            self.cancel(batch_id, able, mode)

    @precondition(lambda self: bool(self.model.batches))
    @rule(pick=st.integers(0, 10**6), stale=st.booleans())
    def start_submission(self, pick: int, stale: bool) -> None:
        """Submission of any batch, maybe with a stale approval version: refused unless approved."""
        batch_id = self.open_batch(pick, frozenset({"approved", "submitting"}))
        batch = self.model.batches[batch_id]
        self.submit(batch_id, batch.version - 1 if stale else batch.version)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def books_keep_their_guarantees(self) -> None:
        with db.read(self.engine) as conn:
            read = self.check_books(conn)
            snap = read.snapshot
            claws = conn.execute(
                sa.select(
                    earnings_table.c.external_id,
                    clawbacks_table.c.event_hash,
                    clawbacks_table.c.amount_minor,
                    clawbacks_table.c.cleared_entry_id,
                ).join(earnings_table, earnings_table.c.id == clawbacks_table.c.earning_id)
            ).all()
            netted_live = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(payout_items.c.netted_minor), 0)).where(
                    payout_items.c.status.in_(
                        [st for st, c in ITEM_MONEY_CLASS.items() if c != "released"]
                    )
                )
            ).scalar_one()
            sources = {
                (ext, h): int(n)
                for ext, h, n in conn.execute(
                    sa.select(
                        earnings_table.c.external_id,
                        earning_sources.c.event_hash,
                        earning_sources.c.amount_minor,
                    ).join(earnings_table, earnings_table.c.id == earning_sources.c.earning_id)
                )
            }
            actions: dict[str, int] = dict(
                conn.execute(
                    sa.select(transaction_log.c.action, sa.func.count())
                    .where(
                        transaction_log.c.action.like("%_refused")
                        | (transaction_log.c.action == "approver_locked_out")
                    )
                    .group_by(transaction_log.c.action)
                ).all()
            )
        # Committed money (checked by check_books) is the items still committed or paid, what
        # they pay out and the clawbacks they net, less what was clawed back and is owed to us:
        # the clawbacks not cleared, less what live items net of them.
        owed_back = sum(int(n) for _, _, n, cleared in claws if cleared is None)
        bal = read.report.get(CUR)
        receivable = bal.clawback_receivable_minor if bal else 0
        assert receivable == owed_back - int(netted_live)

        # The model's funding is the books' funding, sale by sale.
        assert sources == {
            (ext, h): n for ext, e in self.earnings.items() for h, n in e.sources.items()
        }

        # A clawback is only ever owed for a paid earning, never more than the sale funded
        # of it, and all of a sale's clawbacks never more than the most of it that went.
        clawed: dict[tuple[str, str], int] = {}
        for ext, h, amount, cleared in claws:
            if cleared is None:
                clawed[(ext, h)] = clawed.get((ext, h), 0) + int(amount)
        for (ext, h), amount in clawed.items():
            assert self.earnings[ext].status == "paid", f"clawback on {ext} that is not paid"
            assert 0 < amount <= self.earnings[ext].sources[h], (ext, h, amount)
        for h in {h for _, h in clawed}:
            gone = sum(a for (_, sale), a in clawed.items() if sale == h)
            assert gone <= self.max_exposure.get(h, 0), (h, gone)
        # A paid earning whose sale was reversed, unreleased, is owed back in full.
        for ext, e in self.earnings.items():
            if e.status != "paid" or not self.unfunded(ext):
                continue
            for h, funded in e.sources.items():
                p = self.problem(h)
                if p is not None and self.model.offered[h] == "reversed":
                    assert clawed.get((ext, h)) == funded, (ext, h, clawed.get((ext, h)))
                    event("clawback: paid earning owed back in full")

        # No earning in two live batches: one item at most, in the money class of its status,
        # and every committed or paid item is exactly the earnings that point at it.
        by_item: dict[int, int] = {}
        for ext, (status, item_id, amount) in snap.earnings.items():
            if status in ("accrued", "on_hold", "cancelled"):
                assert item_id is None, f"{status} earning {ext} still points at item {item_id}"
                continue
            assert item_id is not None, f"{status} earning {ext} points at no item"
            item_status, batch_id = snap.items[item_id][0], snap.items[item_id][1]
            want = "committed" if status == "batched" else "paid"
            assert ITEM_MONEY_CLASS[item_status] == want, (ext, status, item_status)
            if status == "batched":
                assert snap.batches[batch_id][0] in LIVE_BATCH_STATUSES, (ext, batch_id)
            by_item[item_id] = by_item.get(item_id, 0) + amount
        for item_id, (status, _, amount, _) in snap.items.items():
            if ITEM_MONEY_CLASS[status] == "released":
                assert item_id not in by_item, f"released item {item_id} still holds earnings"
            else:
                netted = self.model.items[item_id].netted_minor
                assert by_item.get(item_id) == amount + netted, (
                    f"item {item_id} is not its earnings"
                )

        # The books agree with the model, state for state.
        assert {
            k: (e.status, e.item_id, e.amount_minor) for k, e in self.earnings.items()
        } == snap.earnings
        assert {
            k: (
                b.status,
                b.total_minor,
                len(b.items),
                b.required,
                b.version,
                b.idempotency_key,
                CREATOR,
            )
            for k, b in self.model.batches.items()
        } == snap.batches
        assert {k: (i.status, i.batch_id, i.amount_minor) for k, i in self.model.items.items()} == {
            k: row[:3] for k, row in snap.items.items()
        }
        refused = sum(n for a, n in actions.items() if a != "approver_locked_out")
        assert refused == self.refusals, "a refusal left no log row, or a success left one"
        assert actions.get("approver_locked_out", 0) == self.lockouts


@pytest.fixture
def fresh_books(ledger_url: str) -> Iterator[FreshBooks]:
    with books.fresh_books(ledger_url) as fresh:
        yield fresh


def test_payout_workflow_keeps_its_guarantees(fresh_books: FreshBooks) -> None:
    run_machine(PayoutWorkflow, fresh_books, max_examples=50)
