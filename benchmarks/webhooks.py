"""Benchmark: accepted webhooks per second and p99 latency, against a bare endpoint.

What it does, per backend (SQLite file and/or PostgreSQL):

1. Creates fresh books (a SQLite file in a temp dir, or ``finsup_bench_<random>``
   on the local PostgreSQL, dropped afterwards) and serves ``finsup serve``'s
   app (``web.create_app``) with uvicorn on a free loopback port in a child
   process (so the client threads do not share its interpreter lock), with
   the bare endpoint on (``/_bench/bare``).
2. Prepares N signed PayPal item events (distinct event ids, HMAC signature
   and timestamp headers, ~500 bytes each) before timing anything.
3. Baseline, same server, same run: N bodies POSTed to ``/_bench/bare``,
   which reads the body (bounded, as the webhook route does) and answers 200
   without touching the database.
4. N other bodies POSTed to ``/webhooks/paypal``: signature checked, JSON
   parsed, then one write transaction (the event row stored with its headers,
   its seal and log row, the item looked up, the outcome noted) committed
   before the 200. The items are not in the books (``unknown_item``), so each
   event is kept for a later pass: the full receiving path with its durable
   write; moving an item (postings) is the state machine's cost, measured by
   its own tests, and happens once per item, not once per delivery.
5. Checks every answer was 2xx and every event is a row in ``gateway_events``.

Each is driven by ``--threads`` client threads (httpx, keep-alive), each
sending its share back to back; latency is per request, wall clock. The two
endpoints take turns in ``--rounds`` rounds (bare, webhooks, bare, ...), each
rate being all its requests over the sum of its rounds' times, so a burst of
load from elsewhere on a shared machine falls on both rather than on one.
Durability is the books' own: SQLite WAL with ``synchronous=NORMAL`` (what
every finsup writer uses), PostgreSQL's defaults (``fsync``, ``synchronous_commit``
on). Nothing is relaxed for the benchmark.

Targets: webhooks ≥ 30 % of the bare rate, p99 < 50 ms. Reported, not
enforced: exit 1 only if an answer was not 2xx or an event was not stored.

    .venv/bin/python -m benchmarks.webhooks --n 3000 --threads 4 --backend both
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

from finsup_dagster.gateways.webhook_signing import signed_headers
from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.schema import gateway_events
from finsup_dagster.web import WebhookSettings, create_app
from finsup_dagster.web.app import BARE_PATH

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432"
SECRET = "bench-webhook-secret"
TARGET_RATIO = 0.30
TARGET_P99_MS = 50.0


@dataclass
class Run:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float
    failures: int


@dataclass
class Rounds:
    """Rounds of one endpoint, added up."""

    requests: int = 0
    elapsed: float = 0.0
    failures: int = 0
    latencies: list[float] | None = None

    def add(self, requests: int, elapsed: float, latencies: list[float], failures: int) -> None:
        self.requests += requests
        self.elapsed += elapsed
        self.failures += failures
        self.latencies = (self.latencies or []) + latencies

    def run(self) -> Run:
        lat = sorted(self.latencies or [0.0])
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return Run(
            self.requests / self.elapsed, statistics.median(lat) * 1000, p99 * 1000, self.failures
        )


def bodies(n: int) -> list[tuple[bytes, dict[str, str]]]:
    """N distinct signed PayPal item events, signed now (well inside the 300 s window)."""
    out = []
    now = int(time.time())
    for k in range(n):
        event = {
            "id": f"WH-BENCH-{k}-{secrets.token_hex(6)}",
            "event_version": "1.0",
            "create_time": "2026-12-07T15:00:00+0000",
            "resource_type": "payouts_item",
            "event_type": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
            "summary": "Payouts item succeeded",
            "resource": {
                "payout_item_id": f"BENCH{k:08d}",
                "transaction_status": "SUCCESS",
                "payout_batch_id": "BENCHBATCH",
                "payout_item": {
                    "recipient_type": "EMAIL",
                    "amount": {"value": "10.00", "currency": "USD"},
                    "receiver": "ann@example.com",
                    "sender_item_id": str(1_000_000 + k),  # no such item in fresh books
                },
            },
        }
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", **signed_headers(SECRET, now, body)}
        out.append((body, headers))
    return out


def drive(
    base: str, path: str, work: list[tuple[bytes, dict[str, str]]], threads: int, into: Rounds
) -> None:
    url, connect = base + path, base + BARE_PATH
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    shares = [work[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def client(share: list[tuple[bytes, dict[str, str]]]) -> None:
        nonlocal failures
        mine, bad = [], 0
        with httpx.Client(timeout=30) as http:
            http.post(connect, content=b"{}")  # connected before the clock starts
            barrier.wait()
            for body, headers in share:
                started = time.perf_counter()
                resp = http.post(url, content=body, headers=headers)
                mine.append(time.perf_counter() - started)
                bad += not resp.is_success
        with lock:
            latencies.extend(mine)
            failures += bad

    workers = [threading.Thread(target=client, args=(s,)) for s in shares]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    into.add(len(work), time.perf_counter() - started, latencies, failures)


@contextmanager
def books(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'ledger.db'}"
        return
    name = f"finsup_bench_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE_URL}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def serve(url: str, port: int) -> None:
    """The child process: the app over the books at ``url`` on ``port``."""
    import uvicorn

    engine = db.make_engine(url)
    app = create_app(engine, WebhookSettings(secrets={"paypal": SECRET}), bare_endpoint=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def server(url: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    child = multiprocessing.get_context("spawn").Process(target=serve, args=(url, port))
    child.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not child.is_alive():
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.1)
        yield base
    finally:
        child.terminate()
        child.join(timeout=10)


def run_backend(backend: str, n: int, threads: int, rounds: int) -> bool:
    with books(backend) as url:
        engine = db.make_engine(url)
        migrate.upgrade(engine)
        warmup, work, bare_work = bodies(200), bodies(n), bodies(n)
        bare_rounds, hook_rounds = Rounds(), Rounds()
        with server(url) as base:
            drive(base, "/webhooks/paypal", warmup, threads, Rounds())
            drive(base, BARE_PATH, warmup, threads, Rounds())
            for r in range(rounds):
                drive(base, BARE_PATH, bare_work[r::rounds], threads, bare_rounds)
                drive(base, "/webhooks/paypal", work[r::rounds], threads, hook_rounds)
        bare, hooks = bare_rounds.run(), hook_rounds.run()
        with db.read(engine) as conn:
            stored = conn.execute(
                sa.select(sa.func.count()).select_from(gateway_events)
            ).scalar_one()
        engine.dispose()
    ratio = hooks.rate / bare.rate
    print(
        f"[{backend}] bare endpoint: {bare.rate:,.0f} req/s, p50 {bare.p50_ms:.1f} ms, "
        f"p99 {bare.p99_ms:.1f} ms ({n:,} requests, {threads} client threads, {rounds} rounds)"
    )
    print(
        f"[{backend}] webhooks: {hooks.rate:,.0f} accepted/s = {ratio:.0%} of bare "
        f"(target >= {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}); "
        f"p50 {hooks.p50_ms:.1f} ms, p99 {hooks.p99_ms:.1f} ms "
        f"(target < {TARGET_P99_MS:.0f} ms: {'met' if hooks.p99_ms < TARGET_P99_MS else 'MISSED'})"
    )
    ok = hooks.failures == 0 and bare.failures == 0 and stored == n + len(warmup)
    if not ok:
        print(
            f"[{backend}] FAILED: {hooks.failures} webhook answers not 2xx, "
            f"{stored} of {n + len(warmup)} events stored"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per endpoint")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5, help="turns each endpoint takes")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    ok = all([run_backend(b, args.n, args.threads, args.rounds) for b in backends])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
