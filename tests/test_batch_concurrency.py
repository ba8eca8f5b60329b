"""Payout batches built by several processes at once claim each earning once, within the balance.

What a finance team relies on when two schedulers, a retried job and an
operator all run "build batches" at the same moment, on SQLite and on
PostgreSQL alike:

- no earning is claimed twice: no two batches share an item or an earning,
  and every item pays exactly the earnings that point at it;
- the money committed by a round is exactly the earnings it batched, never
  more than the available balance before the round, and the books' committed
  figure is exactly the total of the live batches;
- the builds are serialised: in each round one build call creates batches and
  every other finds nothing left it may pay, and a build afterwards finds
  nothing either, so nothing fundable is left behind;
- no worker sees an exception (no "database is locked", no deadlock or
  serialization failure); the journal balances and the audit chain verifies.

Each worker is an OS process started with the "spawn" method and makes its own
engine from the URL. Every round the test process adds revenue (with a fee
that keeps the balance short of what is owed), accrues earnings and cancels an
older batch (so released earnings are claimable again); then it sets one
multiprocessing Event and all workers call ``build_batches`` at once.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from finsup_dagster.ledger import (
    approvals,
    audit_log,
    balance,
    batching,
    beneficiaries,
    db,
    earnings,
    journal,
    revenue,
)
from finsup_dagster.ledger.schema import (
    earnings as earnings_table,
)
from finsup_dagster.ledger.schema import (
    payout_batches,
    payout_items,
    transaction_log,
)
from finsup_dagster.ledger.state_machine import LIVE_BATCH_STATUSES
from tests.helpers.processes import stop

pytestmark = pytest.mark.slow

WORKERS = 4
ROUNDS = 5
BUILDS_PER_ROUND = 2  # each worker builds twice back to back: more calls racing
SEED = 20260214
START_TIMEOUT_S = 90.0
RESULT_TIMEOUT_S = 90.0
CUR = "USD"
POLICY = batching.BatchPolicy(
    min_item={"*": "1.00"}, max_batch_total={"*": "300.00"}, dual_approval_over={"*": "100.00"}
)
MIN_ITEM, MAX_BATCH = 100, 30_000
# Twelve payees on two payout methods; p11 is awaiting sanctions screening and never paid.
PAYEES = [(f"p{n:02d}", "payoneer" if n % 3 == 0 else "paypal") for n in range(12)]
UNSCREENED = "p11"


def _worker(index: int, url: str, go: list[Any], ready: Any, results: Any) -> None:
    """One process: in each round, wait for the start signal, then build batches."""
    engine: Engine | None = None
    try:
        engine = db.make_engine(url)
        with db.read(engine) as conn:  # connect now, so that no worker starts late
            conn.execute(sa.select(1))
        for rnd, start in enumerate(go):
            with ready.get_lock():
                ready.value += 1
            if not start.wait(START_TIMEOUT_S):
                raise RuntimeError(f"round {rnd} never started")
            for call in range(BUILDS_PER_ROUND):
                out: dict[str, Any] = {
                    "worker": index,
                    "round": rnd,
                    "call": call,
                    "batches": [],
                    "waiting": [],
                    "error": None,
                }
                try:
                    report = batching.build_batches(engine, POLICY, created_by=f"worker-{index}")
                    out["batches"] = [dict(b) for b in report.batches]
                    out["waiting"] = sorted({w["reason"] for w in report.waiting})
                except BaseException:
                    out["error"] = traceback.format_exc()
                results.put(out)
    except BaseException:
        results.put(
            {
                "worker": index,
                "round": -1,
                "call": -1,
                "batches": [],
                "error": traceback.format_exc(),
            }
        )
    finally:
        if engine is not None:
            engine.dispose()


@dataclass(frozen=True)
class Books:
    """What the test process reads between rounds."""

    available: int
    committed: int
    batches: dict[str, tuple[str, int, str]]  # id -> (status, total, created_by)
    items: dict[int, tuple[str, int, int]]  # id -> (batch id, amount, beneficiary id)
    earnings: dict[int, tuple[str, int, int | None]]  # id -> (status, amount, item id)


def read_books(conn: Connection) -> Books:
    bal = balance.available_balances(conn, CUR)[0]
    b, i, e = payout_batches.c, payout_items.c, earnings_table.c
    return Books(
        available=bal.available_minor,
        committed=bal.committed_minor,
        batches={
            r[0]: (r[1], int(r[2]), r[3])
            for r in conn.execute(sa.select(b.id, b.status, b.total_minor, b.created_by))
        },
        items={
            int(r[0]): (r[1], int(r[2]), int(r[3]))
            for r in conn.execute(sa.select(i.id, i.batch_id, i.amount_minor, i.beneficiary_id))
        },
        earnings={
            int(r[0]): (r[1], int(r[2]), r[3])
            for r in conn.execute(sa.select(e.id, e.status, e.amount_minor, e.payout_item_id))
        },
    )


def books(engine: Engine) -> Books:
    with db.read(engine) as conn:
        return read_books(conn)


def major(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def setup_payees(engine: Engine) -> None:
    with db.write(engine) as conn:
        for ext, method in PAYEES:
            destination = f"{ext}@example.com" if method == "paypal" else f"PAYEE-{ext}"
            record = beneficiaries.parse_beneficiary(
                {
                    "external_id": ext,
                    "name": ext.upper(),
                    "payout_method": method,
                    "destination": destination,
                    "country": "US",
                    "kyc_status": "verified",
                    "sanctions_status": "not_screened" if ext == UNSCREENED else "clear",
                }
            )
            beneficiaries.upsert(conn, record, "setup")


def prepare_round(engine: Engine, rnd: int, rng: random.Random) -> None:
    """New revenue and a fee, new earnings funded by the sale, and one older batch cancelled."""
    sale_minor = rng.randrange(80_000, 120_000)
    fee_minor = sale_minor * rng.randrange(25, 40) // 100
    events = []
    for kind, amount in (("sale", sale_minor), ("fee", fee_minor)):
        raw = {
            "source": "shop",
            "external_id": f"r{rnd}-{kind}",
            "amount": major(amount),
            "currency": CUR,
            "occurred_at": f"2026-02-{rnd + 1:02d}T09:00:00+01:00",
            "kind": kind,
            "status": "confirmed",
        }
        events.append(revenue.parse_event(raw))
    revenue.ingest(engine, list(enumerate(events)))
    sale_hash = events[0].event_hash
    left = sale_minor
    with db.write(engine) as conn:
        for n in range(rng.randrange(12, 18)):
            who = rng.choice(PAYEES)[0]
            amount = rng.choice((rng.randrange(20, 99), *[rng.randrange(1_000, 15_000)] * 5))
            amount = min(amount, left)
            if amount <= 0:
                break
            left -= amount
            parsed = earnings.parse_earning(
                {
                    "external_id": f"r{rnd}-e{n}",
                    "beneficiary": who,
                    "amount": major(amount),
                    "currency": CUR,
                    "event_hashes": [sale_hash],
                }
            )
            assert earnings.add_earning(conn, parsed, "swarm") == "created"
        pending = sorted(
            conn.execute(
                sa.select(payout_batches.c.id).where(payout_batches.c.status == "pending_approval")
            ).scalars()
        )
        if pending:
            approvals.cancel(conn, "ops", rng.choice(pending), "re-plan", with_code=False)


def check_round(rnd: int, before: Books, after: Books, outs: list[dict[str, Any]]) -> int:
    """Every guarantee for one round; returns the number of batches it created."""
    errors = [o["error"] for o in outs if o["error"]]
    assert not errors, f"round {rnd}: worker failures:\n" + "\n".join(errors)

    reported = [b for o in outs for b in o["batches"]]
    ids = [b["batch_id"] for b in reported]
    assert len(ids) == len(set(ids)), f"round {rnd}: a batch reported twice"
    new = set(after.batches) - set(before.batches)
    assert new == set(ids), f"round {rnd}: the books and the workers disagree on the batches"
    creators = {o["call"] + 100 * o["worker"] for o in outs if o["batches"]}
    assert len(creators) <= 1, f"round {rnd}: {len(creators)} build calls created batches at once"

    # No two batches share an item or an earning; each item is exactly its earnings.
    items_of: dict[str, list[int]] = {b: [] for b in new}
    for item, (batch_id, _, _) in after.items.items():
        if batch_id in new:
            items_of[batch_id].append(item)
    claimed: dict[int, list[int]] = {}
    for earning_id, (status, _, points_at) in after.earnings.items():
        if points_at is not None and after.items[points_at][0] in new:
            assert status == "batched", (rnd, earning_id, status)
            claimed.setdefault(points_at, []).append(earning_id)
    payees: list[int] = []
    for b in reported:
        batch_items = items_of[b["batch_id"]]
        assert len(batch_items) == b["item_count"] > 0
        assert after.batches[b["batch_id"]][:2] == ("pending_approval", b["total_minor"])
        assert sum(after.items[i][1] for i in batch_items) == b["total_minor"] <= MAX_BATCH
        for item_id in batch_items:
            paid = claimed.get(item_id, [])
            assert paid, f"round {rnd}: item {item_id} pays no earning"
            assert sum(after.earnings[e][1] for e in paid) == after.items[item_id][1]
            assert after.items[item_id][1] >= MIN_ITEM
            payees.append(after.items[item_id][2])
    assert len(payees) == len(set(payees)), f"round {rnd}: a payee got two items in one round"
    batched_earnings = [e for paid in claimed.values() for e in paid]
    for e in batched_earnings:
        status, _, was_at = before.earnings[e]
        assert (status, was_at) == ("accrued", None), f"round {rnd}: earning {e} claimed twice"

    # The money: what the round committed is what it batched, within what was available.
    created = sum(b["total_minor"] for b in reported)
    assert created == sum(after.earnings[e][1] for e in batched_earnings)
    assert created <= before.available, f"round {rnd}: {created} committed of {before.available}"
    assert after.committed == before.committed + created
    assert after.available == before.available - created >= 0
    live = sum(t for s, t, _ in after.batches.values() if s in LIVE_BATCH_STATUSES)
    assert after.committed == live, f"round {rnd}: committed {after.committed}, live {live}"
    return len(new)


def run_rounds(engine: Engine, url: str) -> tuple[list[int], set[str]]:
    rng = random.Random(SEED)
    setup_payees(engine)
    ctx = mp.get_context("spawn")
    go = [ctx.Event() for _ in range(ROUNDS)]
    ready: Any = ctx.Value("i", 0)
    results: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(w, url, go, ready, results), name=f"batch-builder-{w}")
        for w in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    created: list[int] = []
    reasons: set[str] = set()
    try:
        for rnd in range(ROUNDS):
            prepare_round(engine, rnd, rng)
            before = books(engine)
            deadline = time.monotonic() + START_TIMEOUT_S
            while ready.value < WORKERS * (rnd + 1):  # every worker waits on this round's event
                assert time.monotonic() < deadline, f"round {rnd}: workers not ready"
                assert all(p.is_alive() for p in procs), "a worker died"
                time.sleep(0.01)
            go[rnd].set()
            outs: list[dict[str, Any]] = []
            for _ in range(WORKERS * BUILDS_PER_ROUND):
                try:
                    out = results.get(timeout=RESULT_TIMEOUT_S)
                except queue.Empty:
                    pytest.fail(f"round {rnd}: only {len(outs)} build calls reported in time")
                assert out["round"] == rnd, out["error"]
                outs.append(out)
            after = books(engine)
            created.append(check_round(rnd, before, after, outs))
            reasons.update(r for o in outs for r in o["waiting"])
            # Nothing fundable was left behind: one more build now creates nothing.
            again = batching.build_batches(engine, POLICY, created_by="check")
            assert again.batches == [], f"round {rnd}: a later build still found {again.batches}"
    finally:
        for event in go:
            event.set()  # release workers still waiting if a round failed
        exit_codes = stop(procs, timeout=30)
    assert exit_codes == [0] * WORKERS
    return created, reasons


def test_concurrent_builds_claim_each_earning_once_within_the_balance(
    engine: Engine, ledger_url: str
) -> None:
    created, reasons = run_rounds(engine, ledger_url)
    assert all(created), f"a round created no batch, so it raced for nothing: {created}"
    assert "not covered by the available balance" in reasons, "the balance never ran short"

    with db.read(engine) as conn:
        final = read_books(conn)
        assert journal.unbalanced_entries(conn) == []
        chain = audit_log.verify(conn)
        assert chain.ok, chain.problem
        logged = conn.execute(
            sa.select(sa.func.count()).where(transaction_log.c.action == "batch_created")
        ).scalar_one()
    assert logged == len(final.batches) == sum(created)
    # Across all rounds: an earning points at one item at most, and only a live batch's item.
    for e, (status, _, item_id) in final.earnings.items():
        if status == "batched":
            assert item_id is not None
            assert final.batches[final.items[item_id][0]][0] in LIVE_BATCH_STATUSES, e
        else:
            assert (status, item_id) == ("accrued", None), e
    assert final.committed == sum(
        t for s, t, _ in final.batches.values() if s in LIVE_BATCH_STATUSES
    )
    assert final.available >= 0
