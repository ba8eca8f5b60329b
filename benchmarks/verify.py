"""Benchmark: verifying the books against reading the tables verification reads.

Per backend (SQLite file and/or PostgreSQL), on books holding N revenue events
(default 1,000,000, ingested from the synthetic file of ``ingest.py``):

1. Baseline, same run and database: read every sealed table, ``row_seals``
   and ``transaction_log`` in full through SQLAlchemy Core (the same driver and
   row processing verification uses), touching each row once. This is the
   floor for any verification that looks at every row.
2. ``verification.verify_books``: the chain, every seal root and every sealed
   row against its latest seal (full).
3. The same with the chain taken from a checkpoint at the head (the nightly
   check's incremental path).

Target: full verification ≤ 3 × the baseline. Reported, not enforced: the exit
status is 1 only if the books do not verify.

    .venv/bin/python benchmarks/verify.py --n 200000 --backend sqlite
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine

from benchmarks.ingest import PG_ADMIN_URL, PG_BASE_URL, generate_csv
from finsup_dagster.ledger import checkpoints, db, migrate, seals, verification
from finsup_dagster.ledger.revenue_files import ingest_file
from finsup_dagster.ledger.schema import row_seals, transaction_log

TARGET = 3.0


def read_everything(engine: Engine) -> int:
    rows = 0
    with db.read(engine) as conn:
        for table in (*seals.SEALED_TABLES, row_seals, transaction_log):
            for _row in conn.execution_options(yield_per=20_000).execute(sa.select(table)):
                rows += 1
    return rows


def best_of(runs: int, fn: object) -> float:
    assert callable(fn)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_backend(backend: str, url: str, csv_path: Path, runs: int) -> bool:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    start = time.perf_counter()
    result = ingest_file(engine, csv_path)
    print(
        f"[{backend}] ingested {result.result.inserted:,} events in "
        f"{time.perf_counter() - start:.1f} s"
    )
    rows = read_everything(engine)
    base = best_of(runs, lambda: read_everything(engine))
    report = verification.verify_books(engine)
    full = best_of(runs, lambda: verification.verify_books(engine))
    point = checkpoints.Checkpoint(report.chain.rows, report.chain.head_hash, "now", "bench")
    nightly = best_of(runs, lambda: verification.verify_books(engine, point, incremental=True))
    engine.dispose()
    ratio = full / base
    print(f"[{backend}] baseline: read {rows:,} rows in {base:.2f} s")
    print(
        f"[{backend}] full verification: {full:.2f} s = {ratio:.2f} x baseline "
        f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'}); "
        f"{report.seals.rows:,} sealed rows, {report.seals.seals:,} seals"
    )
    print(
        f"[{backend}] chain from the checkpoint: {nightly:.2f} s = {nightly / base:.2f} x baseline"
    )
    return report.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "revenue.csv"
        generate_csv(csv_path, args.n, seed=7)
        if args.backend in ("sqlite", "both"):
            ok &= run_backend("sqlite", f"sqlite:///{tmp}/ledger.db", csv_path, args.runs)
        if args.backend in ("postgresql", "both"):
            name = f"finsup_bench_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                ok &= run_backend("postgresql", f"{PG_BASE_URL}/{name}", csv_path, args.runs)
            finally:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
