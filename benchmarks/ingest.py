"""Benchmark: revenue-file ingestion against a raw bulk insert of the same rows.

What it does, per backend (SQLite file and/or PostgreSQL):

1. Writes N synthetic revenue events (default 1,000,000, fixed seed) to a CSV
   with the columns ``source,external_id,amount,currency,occurred_at,kind,status``:
   mostly confirmed USD/EUR sales, some projected, refunds, fees, chargebacks,
   GBP and zero-decimal JPY, times with assorted UTC offsets.
2. Creates a fresh database (a SQLite file in a temp dir, or
   ``finsup_bench_<random>`` on the local PostgreSQL, dropped afterwards) and
   initialises the books with ``migrate.upgrade``.
3. Baseline, in the same database: reads the same CSV with ``csv.reader`` and
   bulk-inserts the seven text columns into ``raw_revenue``, a plain table with
   no constraints or indexes, the fastest plain way for the database: SQLite
   ``executemany`` in one transaction on the raw sqlite3 connection; PostgreSQL
   ``COPY raw_revenue FROM STDIN`` through psycopg 3's ``cursor.copy()``.
   This is the floor: reading the file and landing the bytes, nothing else.
4. Times ``revenue_files.ingest_file`` on the file (validation, hashing,
   idempotent upsert, journal postings, audit log), then again on the same
   file (answered from its content fingerprint), then on the same rows in a
   file with other bytes (read row by row). Neither may insert anything.

Targets: ingest ≤ 1.5 × baseline, re-ingest ≤ 1.0 × baseline. They are
reported, not enforced: the exit status is 0 whatever the timings, and 1 only
if the re-ingest inserted rows or the first ingest did not insert all N rows.

Run it with ``make bench`` (``python benchmarks/ingest.py``), or e.g.::

    .venv/bin/python benchmarks/ingest.py --n 200000 --backend sqlite
"""

from __future__ import annotations

import argparse
import csv
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from finsup_dagster.ledger import migrate
from finsup_dagster.ledger.db import make_engine
from finsup_dagster.ledger.revenue_files import ingest_file

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432"
INGEST_TARGET = 1.5
REINGEST_TARGET = 1.0
COLUMNS = ("source", "external_id", "amount", "currency", "occurred_at", "kind", "status")
RAW_DDL = (
    "CREATE TABLE raw_revenue (source text, external_id text, amount text, currency text, "
    "occurred_at text, kind text, status text)"
)

_SOURCES = ("stripe", "paddle", "gumroad", "lemonsqueezy")
_KINDS = (("sale", 85), ("refund", 7), ("fee", 5), ("chargeback", 3))
_CURRENCIES = (("USD", 50), ("EUR", 25), ("GBP", 10), ("JPY", 15))
_OFFSETS = tuple(timezone(timedelta(hours=h)) for h in (0, 0, 1, 2, -5, -8, 9, 5.5))
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def generate_csv(path: Path, n: int, seed: int) -> None:
    """N events with unique natural keys; the same seed gives the same file."""
    rng = random.Random(seed)
    kinds = [k for k, w in _KINDS for _ in range(w)]
    currencies = [c for c, w in _CURRENCIES for _ in range(w)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i in range(n):
            currency = rng.choice(currencies)
            if currency == "JPY":
                amount = str(rng.randint(100, 50_000))
            else:
                amount = f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}"
            when = _EPOCH + timedelta(seconds=rng.randint(0, 365 * 86_400))
            writer.writerow(
                (
                    rng.choice(_SOURCES),
                    f"evt_{i:09d}",
                    amount,
                    currency,
                    when.astimezone(rng.choice(_OFFSETS)).isoformat(),
                    rng.choice(kinds),
                    "confirmed" if rng.random() < 0.8 else "projected",
                )
            )


def baseline_sqlite(engine: Any, path: Path) -> float:
    """executemany of the CSV rows in one transaction on the raw sqlite3 connection."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection  # sqlite3.Connection, isolation_level=None (see db.py)
        conn.execute(RAW_DDL)
        start = time.perf_counter()
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO raw_revenue VALUES (?, ?, ?, ?, ?, ?, ?)", reader)
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        raw.close()


def baseline_postgresql(engine: Any, path: Path) -> float:
    """COPY FROM STDIN with psycopg 3's write_row, one transaction."""
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection[Any] = raw.driver_connection
        conn.execute(RAW_DDL)
        conn.commit()
        start = time.perf_counter()
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            with conn.cursor() as cur, cur.copy("COPY raw_revenue FROM STDIN") as copy:
                for row in reader:
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - start
    finally:
        raw.close()


@dataclass
class Outcome:
    backend: str
    rows: int
    baseline_s: float
    ingest_s: float
    reingest_s: float
    rows_again_s: float
    first: dict[str, Any]
    second: dict[str, Any]


def run_backend(backend: str, url: str, csv_path: Path, n: int, chunk_size: int | None) -> Outcome:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        kwargs: dict[str, Any] = {} if chunk_size is None else {"chunk_size": chunk_size}
        baseline = baseline_sqlite if backend == "sqlite" else baseline_postgresql
        base_s = baseline(engine, csv_path)
        print(f"  baseline   {base_s:8.2f} s", flush=True)
        start = time.perf_counter()
        first = ingest_file(engine, csv_path, **kwargs).result.summary()
        ingest_s = time.perf_counter() - start
        print(f"  ingest     {ingest_s:8.2f} s  {first}", flush=True)
        start = time.perf_counter()
        second = ingest_file(engine, csv_path, **kwargs).result.summary()
        reingest_s = time.perf_counter() - start
        print(f"  re-ingest  {reingest_s:8.2f} s  {second}", flush=True)
        # The same rows in a file with other bytes: no fingerprint match, every row read again.
        other = csv_path.with_name("same_rows_other_bytes.csv")
        other.write_bytes(csv_path.read_bytes() + b"\n")
        start = time.perf_counter()
        third = ingest_file(engine, other, **kwargs).result.summary()
        rows_again_s = time.perf_counter() - start
        print(f"  same rows  {rows_again_s:8.2f} s  {third}", flush=True)
        other.unlink()
        if third["inserted"]:
            second = third  # main() fails the run: re-reading inserted rows
    finally:
        engine.dispose()
    return Outcome(backend, n, base_s, ingest_s, reingest_s, rows_again_s, first, second)


def run_sqlite(workdir: Path, csv_path: Path, n: int, chunk_size: int | None) -> Outcome:
    return run_backend("sqlite", f"sqlite:///{workdir / 'bench.db'}", csv_path, n, chunk_size)


def run_postgresql(csv_path: Path, n: int, chunk_size: int | None) -> Outcome:
    name = f"finsup_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        return run_backend("postgresql", f"{PG_BASE_URL}/{name}", csv_path, n, chunk_size)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def report(outcome: Outcome) -> None:
    r_ingest = outcome.ingest_s / outcome.baseline_s
    r_reingest = outcome.reingest_s / outcome.baseline_s

    def met(ratio: float, target: float) -> str:
        return "yes" if ratio <= target else "NO"

    print(f"\n== {outcome.backend} ==")
    print(f"{'rows':<28}{outcome.rows:>12,}")
    print(f"{'baseline (raw bulk) s':<28}{outcome.baseline_s:>12.2f}")
    print(f"{'ingest s':<28}{outcome.ingest_s:>12.2f}")
    print(f"{'re-ingest s (same file)':<28}{outcome.reingest_s:>12.2f}")
    print(f"{'same rows, other file s':<28}{outcome.rows_again_s:>12.2f}")
    print(
        f"{'ingest / baseline':<28}{r_ingest:>12.2f}  target ≤ {INGEST_TARGET}: "
        f"{met(r_ingest, INGEST_TARGET)}"
    )
    print(
        f"{'re-ingest / baseline':<28}{r_reingest:>12.2f}  target ≤ {REINGEST_TARGET}: "
        f"{met(r_reingest, REINGEST_TARGET)}"
    )
    print(
        f"{'same rows / baseline':<28}{outcome.rows_again_s / outcome.baseline_s:>12.2f}  (read row by row)"
    )
    print(f"first run:  {outcome.first}")
    print(f"second run: {outcome.second}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of events")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--chunk-size", type=int, default=None, help="ingest_file chunk_size")
    args = parser.parse_args(argv)

    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    failed = False
    with tempfile.TemporaryDirectory(prefix="finsup_bench_") as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "revenue.csv"
        start = time.perf_counter()
        generate_csv(csv_path, args.n, args.seed)
        size_mb = csv_path.stat().st_size / 1e6
        print(
            f"generated {args.n:,} rows ({size_mb:.1f} MB) in {time.perf_counter() - start:.1f} s"
        )
        outcomes = []
        for backend in backends:
            print(f"[{backend}]", flush=True)
            if backend == "sqlite":
                outcomes.append(run_sqlite(workdir, csv_path, args.n, args.chunk_size))
            else:
                outcomes.append(run_postgresql(csv_path, args.n, args.chunk_size))
        for outcome in outcomes:
            report(outcome)
            if outcome.second["inserted"] != 0:
                print(f"FAIL: {outcome.backend} re-ingest inserted {outcome.second['inserted']}")
                failed = True
            if outcome.first["inserted"] != args.n:
                print(
                    f"FAIL: {outcome.backend} ingest inserted {outcome.first['inserted']:,} "
                    f"of {args.n:,} rows"
                )
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
