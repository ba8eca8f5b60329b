"""Benchmark: writing and verifying the auditor's snapshot against DuckDB reading the same tables.

Per backend (SQLite file and/or PostgreSQL), on books holding N revenue events
(default 1,000,000, ingested from the synthetic file of ``ingest.py``):

1. Baseline, same run and database: DuckDB ingesting every ledger table the
   snapshot holds straight from the ledger into a new DuckDB file, in its own
   process. With DuckDB's sqlite / postgres scanner, that is ``ATTACH`` plus
   ``CREATE TABLE AS``; where the extension cannot be installed (no network here:
   it is downloaded on first use, and PyPI's duckdb-ext wheels are for older
   DuckDB), the ADBC driver's Arrow stream per table into ``CREATE TABLE AS``, one
   read transaction, in a child process (the export's reader, less its masking
   and typed columns; the snapshot's hashing, trial balance and rename are not
   in it), timed inside the child: the process start and imports are not
   counted. The run prints which baseline it measured.
2. ``export_snapshot``: the full snapshot (manifest hashes, trial balance, temp
   file and rename), wall time, so on SQLite it includes its child's start.
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
from finsup_dagster.audit.extract import copy_tables, plan
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


def baseline(engine: Engine, url: str, out: Path, extension: str | None) -> float:
    """Seconds DuckDB took to ingest the tables; ADBC's counts from the child's open of
    the ledger to its close of the file, not the process start (the strict baseline)."""
    out.unlink(missing_ok=True)
    if extension is None:
        copies = [plan(engine, s, s.name, typed=False) for s in LEDGER_TABLES]
        return copy_tables(engine, out, copies, child=True).seconds
    start = time.perf_counter()
    duck = duckdb.connect(str(out))
    try:
        if extension == "sqlite":
            duck.execute(f"ATTACH '{engine.url.database}' AS ledger (TYPE sqlite, READ_ONLY)")
        else:
            duck.execute(f"ATTACH '{url}' AS ledger (TYPE postgres, READ_ONLY)")
        for spec in LEDGER_TABLES:
            cols = ", ".join(c.name for c in spec.columns)
            duck.execute(f"CREATE TABLE {spec.name} AS SELECT {cols} FROM ledger.{spec.name}")
    finally:
        duck.close()
    return time.perf_counter() - start


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
    how = f"DuckDB {extension} scanner (ATTACH)" if extension else "ADBC Arrow stream → DuckDB"
    base = min(baseline(engine, url, folder / "baseline.duckdb", extension) for _ in range(runs))
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
