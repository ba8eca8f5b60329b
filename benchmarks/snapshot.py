"""Benchmark: writing and verifying the auditor's snapshot against DuckDB reading the same tables.

Per backend (SQLite file and/or PostgreSQL), on books holding N revenue events
(default 1,000,000, ingested from the synthetic file of ``ingest.py``):

1. Baseline, same run and database: DuckDB reading every ledger table the
   snapshot holds straight from the ledger into a new DuckDB file. With DuckDB's
   sqlite / postgres scanner, that is ``ATTACH`` plus ``CREATE TABLE AS``; where
   the extension cannot be installed (no network here: it is downloaded on first
   use), the same copy through the driver's cursor into Arrow, one consistent read
   transaction, nothing else (no masking, no hashing, no as-of, no rename). The
   run prints which baseline it measured.
2. ``export_snapshot``: the full snapshot (manifest hashes, trial balance, temp
   file and rename).
3. ``export_snapshot --as-of`` halfway through the log (the stage-and-rebuild path).
4. ``verify_snapshot`` of the full snapshot.

Target: export ≤ 2 × the baseline. Reported, not enforced: the exit status is 1
only if a snapshot does not verify.

    .venv/bin/python benchmarks/snapshot.py --n 200000 --backend sqlite
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine

from benchmarks.ingest import PG_ADMIN_URL, PG_BASE_URL, generate_csv
from finsup_dagster.audit.extract import consistent_read, copy_table
from finsup_dagster.audit.snapshot import export_snapshot
from finsup_dagster.audit.tables import LEDGER_TABLES
from finsup_dagster.audit.verify import verify_snapshot
from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.revenue_files import ingest_file
from finsup_dagster.ledger.schema import transaction_log

TARGET = 2.0


def scanner(backend: str) -> str | None:
    """The DuckDB extension that reads the ledger directly, if it can be loaded here."""
    name = "sqlite" if backend == "sqlite" else "postgres"
    conn = duckdb.connect()
    try:
        conn.execute(f"INSTALL {name}")
        conn.execute(f"LOAD {name}")
        return name
    except duckdb.Error:
        return None
    finally:
        conn.close()


def baseline(engine: Engine, url: str, out: Path, extension: str | None) -> None:
    out.unlink(missing_ok=True)
    duck = duckdb.connect(str(out))
    try:
        if extension == "sqlite":
            duck.execute(f"ATTACH '{engine.url.database}' AS ledger (TYPE sqlite, READ_ONLY)")
        elif extension == "postgres":
            duck.execute(f"ATTACH '{url}' AS ledger (TYPE postgres, READ_ONLY)")
        if extension:
            for spec in LEDGER_TABLES:
                cols = ", ".join(c.name for c in spec.columns)
                duck.execute(f"CREATE TABLE {spec.name} AS SELECT {cols} FROM ledger.{spec.name}")
            return
        with consistent_read(engine) as conn:
            for spec in LEDGER_TABLES:
                copy_table(conn, duck, spec, spec.name)
    finally:
        duck.close()


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_backend(backend: str, url: str, csv_path: Path, runs: int, folder: Path) -> bool:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    start = time.perf_counter()
    result = ingest_file(engine, csv_path)
    print(
        f"[{backend}] ingested {result.result.inserted:,} events in "
        f"{time.perf_counter() - start:.1f} s"
    )
    with db.read(engine) as conn:
        times: list[str] = list(conn.execute(sa.select(transaction_log.c.occurred_at)).scalars())
    halfway = sorted(times)[len(times) // 2]
    extension = scanner(backend)
    how = f"DuckDB {extension} scanner (ATTACH)" if extension else "driver cursor → Arrow → DuckDB"
    base = best_of(runs, lambda: baseline(engine, url, folder / "baseline.duckdb", extension))
    full_path = folder / "snapshot.duckdb"
    full = best_of(runs, lambda: export_snapshot(engine, full_path))
    as_of = best_of(runs, lambda: export_snapshot(engine, folder / "as_of.duckdb", as_of=halfway))
    check = best_of(runs, lambda: verify_snapshot(full_path))
    ok = verify_snapshot(full_path).ok and verify_snapshot(folder / "as_of.duckdb").ok
    engine.dispose()
    size = full_path.stat().st_size / 1e6
    print(f"[{backend}] baseline ({how}): {base:.2f} s")
    print(
        f"[{backend}] export: {full:.2f} s = {full / base:.2f} x baseline "
        f"(target <= {TARGET}: {'met' if full / base <= TARGET else 'MISSED'}); {size:.0f} MB"
    )
    print(f"[{backend}] export --as-of (halfway): {as_of:.2f} s = {as_of / base:.2f} x baseline")
    print(f"[{backend}] verify: {check:.2f} s = {check / full:.2f} x export; ok={ok}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv_path = folder / "revenue.csv"
        generate_csv(csv_path, args.n, seed=7)
        if args.backend in ("sqlite", "both"):
            ok &= run_backend("sqlite", f"sqlite:///{tmp}/ledger.db", csv_path, args.runs, folder)
        if args.backend in ("postgresql", "both"):
            name = f"finsup_bench_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                ok &= run_backend(
                    "postgresql", f"{PG_BASE_URL}/{name}", csv_path, args.runs, folder
                )
            finally:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
