"""Several OS processes writing the books at once lose nothing and over-commit nothing.

What the user relies on: revenue files ingested at the same time by different
processes (with overlapping events written differently, and status updates)
end up as exactly one row per event at its furthest status, and payout batches
created at the same time from different processes never commit more than the
available balance. Every failure other than an honest ``InsufficientFunds``
(``database is locked``, a deadlock, a serialization failure, a duplicate
audit-log sequence number) is a bug, on SQLite and on PostgreSQL alike.

Each worker is a separate process started with the "spawn" method and makes its
own engine from the URL. The workers wait for one start signal, then:

1. ingest a phase-1 file: sales, refunds, fees and chargebacks, in USD and EUR,
   overlapping the other workers' phase-1 files (same events, other formatting,
   other statuses, including reversals);
2. wait for every worker to finish phase 1, so every deduction is in the books
   before any money is committed (a fee arriving after a payout may rightly
   push the balance below zero; that is not what this test is about);
3. ingest a phase-2 file of overlapping USD sales (more confirmations arrive),
   in small chunks, while the faster workers already create payout batches;
4. create USD payout batches until refused by a check that started after every
   worker had finished ingesting.
"""

from __future__ import annotations

import csv
import itertools
import multiprocessing as mp
import queue
import random
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import audit_log, balance, db, journal, payouts, revenue_files
from finsup_dagster.ledger.errors import InsufficientFunds
from finsup_dagster.ledger.schema import payout_batches, postings, revenue_events, transaction_log
from tests.helpers.processes import stop

pytestmark = pytest.mark.slow

WORKERS = 4
SEED = 20260131
CHUNK_SIZE = 6  # many small write transactions, so the workers interleave
RESULT_TIMEOUT_S = 120.0
STATUS_RANK = {"projected": 0, "confirmed": 1, "reversed": 2}
SOURCES = ("stripe", "paddle", "gumroad")
OFFSETS = (
    UTC,
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
)


@dataclass(frozen=True)
class Event:
    source: str
    external_id: str
    kind: str
    amount_minor: int
    currency: str
    occurred_at: datetime  # UTC
    final_status: str  # the furthest status any file offers


@dataclass(frozen=True)
class Offer:
    event: Event
    status: str


def _build_events(rng: random.Random) -> tuple[list[Event], list[Event]]:
    """Phase-1 events (every kind, may be reversed) and phase-2 events (USD sales)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    phase1: list[Event] = []
    phase2: list[Event] = []
    for i in range(260):
        in_phase1 = i < 110
        kind = (
            rng.choice(("sale", "sale", "sale", "refund", "fee", "chargeback"))
            if in_phase1
            else "sale"
        )
        currency = "EUR" if in_phase1 and rng.random() < 0.15 else "USD"
        amount = rng.randrange(100, 9_000) if kind == "sale" else rng.randrange(50, 1_500)
        if rng.random() < 0.4:
            amount -= amount % 10  # so that "12.3" and "12.30" both occur
        if rng.random() < 0.1:
            amount -= amount % 100  # "12", "12.0" and "12.00"
        amount = max(amount, 100)
        if in_phase1:
            status = rng.choice(("projected", "confirmed", "confirmed", "reversed"))
        else:
            status = rng.choice(("projected", "confirmed", "confirmed", "confirmed"))
        event = Event(
            source=rng.choice(SOURCES),
            external_id=f"ext-{i:04d}",
            kind=kind,
            amount_minor=amount,
            currency=currency,
            occurred_at=start + timedelta(seconds=rng.randrange(0, 30 * 86_400)),
            final_status=status,
        )
        (phase1 if in_phase1 else phase2).append(event)
    return phase1, phase2


def _offers(rng: random.Random, events: list[Event]) -> list[list[Offer]]:
    """Spreads each event over 1-4 workers' files; exactly one copy carries its final status."""
    files: list[list[Offer]] = [[] for _ in range(WORKERS)]
    for ev in events:
        holders = rng.sample(range(WORKERS), rng.choice((1, 2, 2, 3, 3, 4)))
        lower = [s for s, r in STATUS_RANK.items() if r <= STATUS_RANK[ev.final_status]]
        for n, w in enumerate(holders):
            files[w].append(Offer(ev, ev.final_status if n == 0 else rng.choice(lower)))
        if rng.random() < 0.1:  # the same event twice in one file
            files[holders[0]].append(Offer(ev, rng.choice(lower)))
    for rows in files:
        rng.shuffle(rows)
    return files


def _amount_text(minor: int, rng: random.Random) -> str:
    whole, cents = divmod(minor, 100)
    variants = [f"{whole}.{cents:02d}", f"{whole}.{cents:02d}0", f" {whole}.{cents:02d} "]
    if cents % 10 == 0:
        variants.append(f"{whole}.{cents // 10}")
    if cents == 0:
        variants += [f"{whole}", f"{whole}.0"]
    return rng.choice(variants)


def _instant_text(instant: datetime, rng: random.Random) -> str:
    local = instant.astimezone(rng.choice(OFFSETS))
    text = local.isoformat(timespec=rng.choice(("seconds", "microseconds")))
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def _write_csv(path: Path, offers: list[Offer], rng: random.Random) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["source", "external_id", "amount", "currency", "occurred_at", "kind", "status"]
        )
        for offer in offers:
            ev = offer.event
            writer.writerow(
                [
                    rng.choice((ev.source, ev.source.title(), f" {ev.source.upper()}")),
                    ev.external_id,
                    _amount_text(ev.amount_minor, rng),
                    rng.choice((ev.currency, ev.currency.lower())),
                    _instant_text(ev.occurred_at, rng),
                    rng.choice((ev.kind, ev.kind.upper())),
                    rng.choice((offer.status, offer.status.title())),
                ]
            )


def _worker(
    index: int,
    url: str,
    phase1_file: str,
    phase2_file: str,
    batch_amounts: list[int],
    ready: Any,
    go: Any,
    phase1_done: Any,
    ingests_done: Any,
    results: Any,
) -> None:
    """One process: ingest two files, then create payout batches until refused."""
    out: dict[str, Any] = {
        "worker": index,
        "ingest": [],
        "batches": [],
        "refusals": 0,
        "final_refusal_total": None,
        "errors": [],
    }
    engine = db.make_engine(url)
    try:
        with ready.get_lock():
            ready.value += 1
        if not go.wait(60):
            raise RuntimeError("start signal never came")
        for n, path in enumerate((phase1_file, phase2_file)):
            res = revenue_files.ingest_file(
                engine, Path(path), actor=f"worker-{index}", chunk_size=CHUNK_SIZE
            )
            out["ingest"].append(
                {
                    "file": path,
                    **res.result.summary(),
                    "reasons": [r.reason for r in res.result.rejected],
                }
            )
            if n == 0:
                phase1_done.wait(60)
        with ingests_done.get_lock():
            ingests_done.value += 1

        deadline = time.monotonic() + 90
        for attempt in itertools.count():
            if phase1_done.broken:
                raise RuntimeError("another worker failed; stopping")
            if time.monotonic() > deadline:
                raise RuntimeError("never finally refused within 90 s")
            total = batch_amounts[attempt % len(batch_amounts)]
            # Read before the write transaction starts: if every ingest had
            # committed by then, this attempt sees all the revenue there is.
            everything_ingested = ingests_done.value == WORKERS
            third = total // 3
            items = [payouts.ItemRequest(a) for a in (total - 2 * third, third, third)]
            try:
                with db.write(engine) as conn:
                    batch_id = payouts.create_batch(
                        conn,
                        method="paypal",
                        currency="USD",
                        items=items,
                        created_by=f"worker-{index}",
                    )
            except InsufficientFunds:
                out["refusals"] += 1
                if everything_ingested:
                    out["final_refusal_total"] = total
                    break
                time.sleep(0.01)
                continue
            out["batches"].append([batch_id, total])
    except BaseException:
        out["errors"].append(traceback.format_exc())
        phase1_done.abort()
    finally:
        engine.dispose()
        results.put(out)


def _run_workers(url: str, tmp_path: Path) -> tuple[list[Event], list[dict[str, Any]]]:
    rng = random.Random(SEED)
    phase1, phase2 = _build_events(rng)
    files1, files2 = _offers(rng, phase1), _offers(rng, phase2)
    # Phase-2 files of different lengths: the short ones finish early and start
    # paying out while the long ones are still confirming sales.
    for w in range(WORKERS):
        files2[w] = files2[w][: len(files2[w]) * (w + 2) // (WORKERS + 1)]
    # The dropped phase-2 rows may have carried an event's only copy: re-derive
    # each event's furthest offered status from what the files really hold.
    offered: dict[str, str] = {}
    for offer in [o for f in files1 + files2 for o in f]:
        key = offer.event.external_id
        if key not in offered or STATUS_RANK[offer.status] > STATUS_RANK[offered[key]]:
            offered[key] = offer.status
    events = [
        Event(**{**ev.__dict__, "final_status": offered[ev.external_id]})
        for ev in phase1 + phase2
        if ev.external_id in offered
    ]
    paths: list[tuple[str, str]] = []
    for w in range(WORKERS):
        p1, p2 = tmp_path / f"w{w}_phase1.csv", tmp_path / f"w{w}_phase2.csv"
        _write_csv(p1, files1[w], rng)
        _write_csv(p2, files2[w], rng)
        paths.append((str(p1), str(p2)))

    ctx = mp.get_context("spawn")
    ready, ingests_done = ctx.Value("i", 0), ctx.Value("i", 0)
    go, phase1_done = ctx.Event(), ctx.Barrier(WORKERS, timeout=60)
    results: Any = ctx.Queue()
    procs = []
    for w in range(WORKERS):
        # Unequal batch sizes (about 15-60 USD) per worker, so refusals come at
        # different points and the last few batches really race for the rest.
        amounts = [rng.randrange(1_500, 6_000) for _ in range(7)]
        proc = ctx.Process(
            target=_worker,
            args=(w, url, *paths[w], amounts, ready, go, phase1_done, ingests_done, results),
            name=f"finsup-worker-{w}",
        )
        proc.start()
        procs.append(proc)
    outs: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while ready.value < WORKERS:
            assert time.monotonic() < deadline, "workers did not start within 60 s"
            assert all(p.is_alive() or p.exitcode == 0 for p in procs), "a worker died at start"
            time.sleep(0.02)
        go.set()
        for _ in range(WORKERS):
            outs.append(results.get(timeout=RESULT_TIMEOUT_S))
    except queue.Empty:
        pytest.fail(f"only {len(outs)} of {WORKERS} workers reported within {RESULT_TIMEOUT_S} s")
    finally:
        exit_codes = stop(procs, timeout=10)
    assert exit_codes == [0] * WORKERS
    return events, sorted(outs, key=lambda o: o["worker"])


def _expected_money(events: list[Event], currency: str) -> tuple[int, int]:
    """(confirmed revenue, deductions): reversed events net to nothing."""
    revenue = deductions = 0
    for ev in events:
        if ev.currency != currency or ev.final_status != "confirmed":
            continue
        if ev.kind == "sale":
            revenue += ev.amount_minor
        else:
            deductions += ev.amount_minor
    return revenue, deductions


def test_concurrent_ingest_and_payouts_lose_nothing_and_never_overcommit(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    events, outs = _run_workers(ledger_url, tmp_path)

    # No exception other than InsufficientFunds reached any worker.
    errors = [e for o in outs for e in o["errors"]]
    assert not errors, "worker failures:\n" + "\n".join(errors)
    for o in outs:
        for summary in o["ingest"]:
            assert summary["rejected"] == 0, summary  # variants are the same event, not conflicts
        assert o["final_refusal_total"] is not None

    with db.read(engine) as conn:
        # No lost or doubled write: one row per event, at the furthest status offered.
        rows = conn.execute(
            sa.select(
                revenue_events.c.source,
                revenue_events.c.external_id,
                revenue_events.c.kind,
                revenue_events.c.amount_minor,
                revenue_events.c.currency,
                revenue_events.c.occurred_at,
                revenue_events.c.status,
            )
        ).all()
        stored = {r.external_id: r for r in rows}
        assert len(rows) == len(stored) == len(events)
        for ev in events:
            row = stored[ev.external_id]
            canonical_at = ev.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            assert (row.source, row.kind, row.amount_minor, row.currency, row.occurred_at) == (
                ev.source,
                ev.kind,
                ev.amount_minor,
                ev.currency,
                canonical_at,
            ), ev.external_id
            assert row.status == ev.final_status, ev.external_id

        # Postings: each entry and the whole journal balance per currency.
        assert journal.unbalanced_entries(conn) == []
        per_currency = conn.execute(
            sa.select(postings.c.currency, sa.func.sum(postings.c.amount_minor)).group_by(
                postings.c.currency
            )
        ).all()
        sums = {c: int(s) for c, s in per_currency}
        assert "USD" in sums and set(sums) <= {"USD", "EUR"}
        assert all(s == 0 for s in sums.values()), sums

        # Confirmed money is exactly what the files say: nothing counted twice or lost.
        for currency in ("USD", "EUR"):
            bal = balance.available_balances(conn, currency)[0]
            assert (bal.confirmed_revenue_minor, bal.deductions_minor) == _expected_money(
                events, currency
            ), currency
        usd = balance.available_balances(conn, "USD")[0]

        # No over-commit, and every batch a worker was told about is in the books.
        created = {bid: total for o in outs for bid, total in o["batches"]}
        db_batches = dict(
            conn.execute(sa.select(payout_batches.c.id, payout_batches.c.total_minor)).all()
        )
        assert db_batches == created
        assert len(created) >= 2 * WORKERS, "too few batches for the race to mean anything"
        assert usd.committed_minor == sum(created.values())
        assert usd.reserve_minor == 0
        assert usd.committed_minor <= usd.confirmed_revenue_minor - usd.deductions_minor
        assert usd.available_minor >= 0
        # The refusals were honest: each worker's last refusal was checked after
        # all revenue was in and nothing was released since, so what is left is
        # less than every one of those refused totals.
        assert usd.available_minor < min(o["final_refusal_total"] for o in outs)

        logged = conn.execute(
            sa.select(sa.func.count()).where(transaction_log.c.action == "batch_created")
        ).scalar_one()
        assert logged == len(created)
        report = audit_log.verify(conn)
        assert report.ok, report.problem


def test_worker_failures_are_reported_not_swallowed(tmp_path: Path) -> None:
    """The harness itself: a worker that cannot reach its books reports the error."""
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    # Keep every shared object referenced until the child has unpickled it.
    ready, done = ctx.Value("i", 0), ctx.Value("i", 0)
    go, barrier = ctx.Event(), ctx.Barrier(1, timeout=5)
    go.set()
    missing = tmp_path / "missing.csv"
    proc = ctx.Process(
        target=_worker,
        args=(
            0,
            f"sqlite:///{tmp_path / 'uninitialised.db'}",
            str(missing),
            str(missing),
            [100],
            ready,
            go,
            barrier,
            done,
            results,
        ),
    )
    proc.start()
    try:
        out = results.get(timeout=30)
    finally:
        stop([proc], timeout=10)
    assert out["errors"] and "no such file" in out["errors"][0]
