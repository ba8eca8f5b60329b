"""Benchmark: the reconciliation dbt models against DuckDB's plain hash join.

What is measured, and the results, are in docs/performance.md ("Reconciliation").
In short: ``dbt compile`` runs in a scratch warehouse before the mart tables exist
(``run_date`` a placeholder) for the first-build SQL of the incremental marts (read
from the manifest, in the order dbt builds them); the nightly SQL is compiled by dbt
against each warehouse as it stands, since whether a night starts from the previous
night's open items is decided while compiling (``macros/open_items.sql``). That SQL
runs directly in DuckDB the way the dbt-duckdb materialisations do (views untimed;
``CREATE TABLE AS`` for a first build; delete+insert on ``run_date``, one transaction
per model, for a night), best of ``--repeats`` after a ``CHECKPOINT``.

Synthetic data is made by DuckDB's own SQL (``range()``, ``hash()``, ``sha256()``)
with a fixed seed straight into ``ledger.revenue_events`` and the raw settlement
tables (``warehouse.raw``'s schema, one file a day per format): sources stripe,
paddle (generic settlement CSV), paypal (STL) and invoice (bank, camt.053); USD, EUR,
GBP and zero-decimal JPY; sales, refunds, chargebacks and fees (fees are never
settled); settlement 0-2 days after the event. Exceptions: ~1% of events never
settled, ~0.5% extra lines naming no event, ~0.3% amount mismatches, ~0.2% currency
mismatches, ~0.3% duplicate lines a day later, ~10% of lines without a gateway
transaction id (matched by amount and date window), ~5% of stripe/paddle sales paid
out through camt.053 batch credits (2% of batches credited a few minor units off), a
few bank-charge lines (kind ``other``). The match window and the nights of open items kept are the project's
dbt vars (``dbt_project.yml``); the warehouse reaches dbt as the ``warehouse_path``
var, as the reconciliation asset passes it.

1. **First build vs. baseline**: N events (``--events``) over ``--days`` days; the
   marts built from nothing for the last day, against a plain hash join on
   ``gateway_txn_id = external_id`` writing the ids (target ≤ 3 ×) and, for
   information, that join writing the matches view's columns (checked against the
   view's). Scaling: the same on N/4 events (target ≤ 4.5).
2. **Nightly run vs. history**: ``--history-days`` days of ``--per-day`` events
   loaded as already reconciled, then the next day: ``dbt build`` (every model and
   test, start-up included) with that history against the same day on an empty
   history (target ≤ 1.2 ×), and the nightly SQL alone (informational).

A build still running after ``--timeout`` seconds is interrupted and reported as a
lower bound; one over 20 s is measured once. The exit status is 1 only with
``--check`` and a target missed::

    .venv/bin/python benchmarks/reconcile.py --quick
    .venv/bin/python benchmarks/reconcile.py --check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
from dbt.clients.yaml_helper import load_yaml_text

from finsup_dagster import landing
from finsup_dagster.resources.dbt import DBT_PROJECT_DIR, dbt_command
from finsup_dagster.warehouse import raw, replica
from finsup_dagster.warehouse.connection import one, run, transaction

ROOT = DBT_PROJECT_DIR.parent
WAREHOUSE_FILE = "warehouse.duckdb"  # the same name everywhere: compiled SQL names its catalog
PLACEHOLDER = "2099-12-31"  # run_date at compile time, replaced by the day being run
MATCHES = "reconciliation_match_keys"  # the matches table (reconciliation_matches: its view)
START = date(2025, 1, 1)

LONG_RUN = 20.0  # seconds: a build that takes longer is measured once

BASELINE_TARGET = 3.0
SCALING_TARGET = 4.5
HISTORY_TARGET = 1.2

# The raw settlement tables, the landing format of each, and the project's own settings:
# the match window and the nights of open items kept are dbt vars (dbt_project.yml).
SETTLEMENT_TABLES = raw.SETTLEMENT_TABLES
FORMAT_OF = {table: fmt for fmt, table in raw.TABLES.items()}


def dbt_var(name: str) -> Any:
    """A var's default in ``dbt_project.yml`` (read as dbt reads it): a night's value."""
    project = load_yaml_text((DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))
    assert project is not None
    return project["vars"][name]


def scalar(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = one(conn, sql)
    return int(row[0] or 0) if row else 0


def in_transaction(conn: duckdb.DuckDBPyConnection, statements: list[str]) -> None:
    with transaction(conn):
        for sql in statements:
            run(conn, sql)


# -- compiled SQL ----------------------------------------------------------------------------


@dataclass
class Compiled:
    """The compiled SELECT of every model (first build), and where each one lives."""

    relation: dict[str, str]
    marts: tuple[str, ...]  # the incremental models, in build order (dependencies first)
    views: dict[str, str]  # name -> SELECT, in dependency order; none reads a mart
    mart_views: dict[str, str]  # views over the marts (reconciliation_matches)
    first_build: dict[str, str]

    def sql(self, model: str, day: str) -> str:
        return self.first_build[model].replace(PLACEHOLDER, day)


@dataclass
class Nightly:
    """The SQL dbt would run for one night on one warehouse, and how it finds open items."""

    day: str
    sql: dict[str, str]
    way: str  # "previous night" or "full" (macros/open_items.sql)


def dbt(
    args: list[str],
    warehouse: Path,
    target: Path,
    *,
    run_date: str = PLACEHOLDER,
    timeout: float | None = None,
) -> float:
    """Runs dbt on ``warehouse``; its output is shown only when it fails."""
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    # The profile takes the warehouse from the var, as the reconciliation asset passes it.
    variables = {"run_date": run_date, "warehouse_path": str(warehouse)}
    cmd = [
        *dbt_command(*args, target=target, variables=variables),
        "--quiet",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise RuntimeError(f"dbt {' '.join(args)} failed (exit {done.returncode})")
    return took


def read_manifest(target: Path) -> dict[str, dict[str, object]]:
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    models: dict[str, dict[str, object]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model":
            models[node["name"]] = node
    return models


def build_order(models: dict[str, dict[str, object]], materialized: str) -> list[str]:
    """The models materialised as ``materialized``, each after those of them it reads."""
    chosen = [n for n, node in models.items() if _materialized(node) == materialized]
    order: list[str] = []
    while len(order) < len(chosen):
        for name in sorted(chosen):
            deps = _depends_on(models[name])
            if name not in order and all(d not in chosen or d in order for d in deps):
                order.append(name)
    return order


def dbt_order(target: Path, names: list[str]) -> list[str]:
    """``names`` in the order dbt itself ran them (``run_results.json``), as the nightly
    job builds them; ``names`` as they are when dbt left no results."""
    path = target / "run_results.json"
    if not path.exists():
        return names
    ran = [str(r["unique_id"]).rsplit(".", 1)[-1] for r in json.loads(path.read_text())["results"]]
    return sorted(names, key=lambda n: ran.index(n) if n in ran else len(ran))


def _materialized(node: dict[str, object]) -> str:
    config = node["config"]
    assert isinstance(config, dict)
    return str(config["materialized"])


def _depends_on(node: dict[str, object]) -> list[str]:
    deps = node["depends_on"]
    assert isinstance(deps, dict)
    return [str(d).rsplit(".", 1)[-1] for d in deps["nodes"]]


def compile_models(workdir: Path) -> Compiled:
    """dbt compile before the mart tables exist: the first-build SQL."""
    warehouse = workdir / "compile" / WAREHOUSE_FILE
    warehouse.parent.mkdir(parents=True)
    target = workdir / "dbt_target"
    with duckdb.connect(str(warehouse)) as conn:
        raw.ensure_schema(conn)
        replica.ensure_schema(conn)
    took = dbt(["compile"], warehouse, target)
    models = read_manifest(target)
    relation = {name: str(node["relation_name"]) for name, node in models.items()}
    marts = tuple(dbt_order(target, build_order(models, "incremental")))
    first = {name: str(models[name]["compiled_code"]) for name in marts}
    views: dict[str, str] = {}
    mart_views: dict[str, str] = {}
    for name in build_order(models, "view"):
        over_marts = any(d in marts or d in mart_views for d in _depends_on(models[name]))
        (mart_views if over_marts else views)[name] = str(models[name]["compiled_code"])
    for name in marts:
        if PLACEHOLDER not in first[name]:
            raise RuntimeError(f"{name}: run_date placeholder not found in the compiled SQL")
    if not marts or marts[0] != MATCHES:
        raise RuntimeError(f"the marts {marts} do not start with {MATCHES}")
    print(f"dbt compile: {took:.1f} s (not part of any timing); marts: {', '.join(marts)}")
    return Compiled(relation, marts, views, mart_views, first)


def compile_nightly(warehouse: Path, target: Path, compiled: Compiled, day: str) -> Nightly:
    """The marts' SQL for night ``day``, compiled by dbt against ``warehouse`` as it stands
    (closed): whether open items come from the previous night is decided while compiling,
    from the warehouse's own state, so each warehouse gets the SQL dbt would run on it."""
    dbt(["compile", "--select", *compiled.marts], warehouse, target, run_date=day)
    models = read_manifest(target)
    sql = {name: str(models[name]["compiled_code"]) for name in compiled.marts}
    if sql[MATCHES] == compiled.sql(MATCHES, day):
        raise RuntimeError("the nightly compile did not see the tables: is_incremental() false")
    way = "previous night" if "landing_seq >" in sql[MATCHES] else "full"
    return Nightly(day, sql, way)


def create_views(
    conn: duckdb.DuckDBPyConnection, compiled: Compiled, *, over_marts: bool = False
) -> None:
    """The staging views, or (``over_marts``, once the mart tables exist) the views over them."""
    for name, body in (compiled.mart_views if over_marts else compiled.views).items():
        run(conn, f"CREATE OR REPLACE VIEW {compiled.relation[name]} AS {body}")


Breakdown = dict[str, float]  # seconds per model


@dataclass
class Timing:
    """The best of the runs made; ``done`` False: the first run was stopped at ``seconds``."""

    seconds: float
    done: bool = True
    breakdown: Breakdown = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.done:
            return f"> {self.seconds:6.1f} s (stopped)"
        parts = ", ".join(
            f"{name.removeprefix('reconciliation_')} {t:.2f}" for name, t in self.breakdown.items()
        )
        return f"{self.seconds:8.2f} s" + (f"  ({parts})" if parts else "")

    def cell(self) -> str:
        return f"{self.seconds:.2f}" if self.done else f"> {self.seconds:.0f} (stopped)"


def best_of(
    repeats: int,
    conn: duckdb.DuckDBPyConnection,
    work: Callable[[], Breakdown | None],
    limit: float | None = None,
) -> Timing:
    """Best of ``repeats`` runs; a run past ``limit`` seconds is interrupted, and one that took
    longer than ``LONG_RUN`` seconds is not repeated (the noise is small next to it)."""
    best: Timing | None = None
    for _ in range(repeats):
        if best is not None and best.seconds > LONG_RUN:
            break
        run(conn, "CHECKPOINT")
        timer = threading.Timer(limit, conn.interrupt) if limit else None
        start = time.perf_counter()
        if timer is not None:
            timer.start()
        try:
            breakdown = work() or {}
        except duckdb.InterruptException:
            return Timing(time.perf_counter() - start, done=False)
        finally:
            if timer is not None:
                timer.cancel()
        took = time.perf_counter() - start
        if best is None or took < best.seconds:
            best = Timing(took, True, breakdown)
    assert best is not None
    return best


@dataclass
class Ratio:
    """numerator / denominator; a stopped numerator makes it a lower bound."""

    value: float
    lower_bound: bool
    unknown: bool  # the denominator was stopped

    @classmethod
    def of(cls, num: Timing, den: Timing) -> Ratio:
        return cls(num.seconds / den.seconds, not num.done, not den.done)

    def text(self) -> str:
        if self.unknown:
            return "?"
        return f"> {self.value:.1f}" if self.lower_bound else f"{self.value:.2f}"

    def met(self, target: float) -> str:
        if self.unknown or (self.lower_bound and self.value <= target):
            return "?"
        return "yes" if self.value <= target else "NO"


def day_text(day: int) -> str:
    return (START + timedelta(days=day)).isoformat()


# -- synthetic data --------------------------------------------------------------------------


def _u(key: str, seed: int, expr: str = "i") -> str:
    """A uniform number in [0, 1) from the hash of a row key and a salt."""
    return f"((hash({expr}, '{key}', {seed}) % 1000000) / 1000000.0)"


def _h(key: str, seed: int, modulo: int, expr: str = "i") -> str:
    """A whole number in [0, modulo) from the hash of a row key and a salt."""
    return f"CAST(hash({expr}, '{key}', {seed}) % {modulo} AS BIGINT)"


def generate(conn: duckdb.DuckDBPyConnection, events: int, days: int, seed: int) -> None:
    """``events`` revenue events spread evenly over ``days`` days, and their settlement lines."""
    raw.ensure_schema(conn)
    replica.ensure_schema(conn)
    last = days - 1
    ghosts = max(1, events // 200)
    charges = max(1, events // 1000)
    ev = f"""
    CREATE TEMP TABLE gen_events AS
    WITH base AS (
        SELECT
            i,
            (i * {days}) // {events} AS day,
            CASE WHEN {_u("src", seed)} < 0.30 THEN 'stripe'
                 WHEN {_u("src", seed)} < 0.50 THEN 'paddle'
                 WHEN {_u("src", seed)} < 0.80 THEN 'paypal'
                 ELSE 'invoice' END AS source,
            CASE WHEN {_u("kind", seed)} < 0.90 THEN 'sale'
                 WHEN {_u("kind", seed)} < 0.96 THEN 'refund'
                 WHEN {_u("kind", seed)} < 0.98 THEN 'chargeback'
                 ELSE 'fee' END AS kind,
            CASE WHEN {_u("cur", seed)} < 0.50 THEN 'USD'
                 WHEN {_u("cur", seed)} < 0.70 THEN 'EUR'
                 WHEN {_u("cur", seed)} < 0.85 THEN 'GBP'
                 ELSE 'JPY' END AS currency,
            100 + {_h("amt", seed, 49900)} AS amount_minor,
            CASE WHEN {_u("status", seed)} < 0.005 THEN 'reversed'
                 WHEN {_u("status", seed)} < 0.6 THEN 'projected'
                 ELSE 'confirmed' END AS status,
            {_h("time", seed, 86_400_000_000)} AS micros
        FROM range({events}) t(i)
    )
    SELECT
        *,
        strftime(TIMESTAMP '{START}' + INTERVAL (day) DAY + to_microseconds(micros),
                 '%Y-%m-%dT%H:%M:%S.%fZ') AS occurred_at,
        CASE source WHEN 'stripe' THEN 'ch_' WHEN 'paddle' THEN 'txn_'
                    WHEN 'paypal' THEN 'PP-' ELSE 'INV-' END
            || lpad(CAST(i AS VARCHAR), 10, '0') AS external_id,
        sha256('{seed}:' || CAST(i AS VARCHAR)) AS event_hash
    FROM base
    """
    revenue = """
    INSERT INTO ledger.revenue_events BY NAME
    SELECT event_hash, source, external_id, kind, amount_minor, currency, occurred_at, status,
        occurred_at AS ingested_at, occurred_at AS status_changed_at,
        'revenue/' || CAST(day AS VARCHAR) || '.csv' AS source_file,
        day + 1 AS replicated_seq, day + 1 AS first_replicated_seq
    FROM gen_events ORDER BY i
    """
    # One line per settled event (two for a duplicate), extra lines that name no event, and
    # bank charges. ``route`` is the landing table; camt_batch lines land in raw.camt053.
    lines = f"""
    CREATE TEMP TABLE gen_lines AS
    WITH settled AS (
        SELECT
            *,
            day + {_h("lag", seed, 3)} AS settled_day,
            {_u("fate", seed)} AS fate,
            CASE WHEN source = 'paypal' THEN 'paypal_stl'
                 WHEN source = 'invoice' THEN 'camt053'
                 WHEN kind = 'sale' AND {_u("route", seed)} < 0.10 THEN 'camt_batch'
                 ELSE 'settlement_csv' END AS route,
            {_u("noid", seed)} < 0.10 AS no_id
        FROM gen_events
        WHERE kind <> 'fee' AND {_u("unsettled", seed)} >= 0.01
    ),
    one_line AS (
        SELECT
            i, 0 AS copy, source, route, kind, settled_day, occurred_at,
            CASE WHEN no_id THEN NULL ELSE external_id END AS gateway_txn_id,
            CASE WHEN fate < 0.003 THEN amount_minor + 1 + {_h("off", seed, 500)}
                 ELSE amount_minor END AS gross_minor,
            CASE WHEN fate >= 0.003 AND fate < 0.005
                 THEN CASE WHEN currency = 'USD' THEN 'EUR' ELSE 'USD' END
                 ELSE currency END AS currency,
            fate >= 0.005 AND fate < 0.008 AS duplicated
        FROM settled
    ),
    all_lines AS (
        SELECT * EXCLUDE (duplicated) FROM one_line
        UNION ALL
        SELECT * EXCLUDE (duplicated) REPLACE (1 AS copy, settled_day + 1 AS settled_day)
        FROM one_line WHERE duplicated
        UNION ALL
        SELECT
            {events} + j, 0,
            CASE WHEN j % 2 = 0 THEN 'stripe' ELSE 'paypal' END,
            CASE WHEN j % 2 = 0 THEN 'settlement_csv' ELSE 'paypal_stl' END,
            'sale', (j * {days}) // {ghosts},
            strftime(TIMESTAMP '{START}' + INTERVAL ((j * {days}) // {ghosts}) DAY,
                     '%Y-%m-%dT%H:%M:%S.%fZ'),
            'ghost_' || CAST(j AS VARCHAR), 100 + {_h("gamt", seed, 49900, "j")},
            CASE WHEN j % 7 = 0 THEN 'JPY' ELSE 'USD' END
        FROM range({ghosts}) g(j)
        UNION ALL
        SELECT
            {events} + {ghosts} + j, 0, 'bank', 'camt053', 'other',
            (j * {days}) // {charges}, NULL, NULL, 250, 'EUR'
        FROM range({charges}) c(j)
    ),
    shaped AS (
        SELECT
            *,
            CASE WHEN kind = 'sale' THEN 'credit' ELSE 'debit' END AS direction,
            CASE WHEN kind = 'sale' THEN gross_minor * 29 // 1000 + 30
                 WHEN kind = 'chargeback' THEN 1500 ELSE 0 END AS fee_minor,
            CASE WHEN route = 'camt_batch'
                 THEN 'PO-' || source || '-' || currency || '-' || CAST(settled_day AS VARCHAR)
                      || '-' || CAST(i % 4 AS VARCHAR) END AS batch_ref,
            CASE WHEN route = 'camt_batch' THEN 'camt053' ELSE route END AS landing
        FROM all_lines
        WHERE settled_day <= {last}
    )
    SELECT
        *,
        CASE WHEN batch_ref IS NOT NULL THEN
            sum(gross_minor - fee_minor) OVER (PARTITION BY batch_ref)
            + CASE WHEN {_h("bad", seed, 50, "batch_ref")} = 0
                   THEN 1 + {_h("boff", seed, 99, "batch_ref")} ELSE 0 END
        END AS batch_net_minor,
        row_number() OVER (PARTITION BY landing, settled_day ORDER BY i, copy) AS row_number,
        strftime(DATE '{START}' + INTERVAL (settled_day) DAY, '%Y-%m-%d') AS settled_on
    FROM shaped
    """
    statements = [ev, revenue, lines]
    # Per format, as its parser fills a line: who settled it, the event code, the time,
    # and what ``raw`` keeps.
    gateway = {"paypal_stl": "'paypal'", "camt053": "NULL", "settlement_csv": "source"}
    code = {
        "paypal_stl": "CASE kind WHEN 'sale' THEN 'T0006' WHEN 'refund' THEN 'T1107'"
        " ELSE 'T1106' END",
        "camt053": "'PMNT/RCDT/ESCT'",
        "settlement_csv": "NULL",
    }
    as_read = {
        "settlement_csv": """'{"gateway": "' || source || '", "transaction_id": "'
            || coalesce(gateway_txn_id, '') || '", "gross": "' || CAST(gross_minor AS VARCHAR)
            || '", "currency": "' || currency || '"}'""",
    }
    for n, table in enumerate(SETTLEMENT_TABLES):
        fmt = FORMAT_OF[table]
        suffix = landing.SUFFIXES[fmt][0]
        statements.append(
            f"""
            INSERT INTO raw.{table} BY NAME
            SELECT
                settled_on AS partition_date,
                '{fmt}/' || settled_on || '/settlement{suffix}' AS file_name,
                sha256('{table}:' || settled_on || ':{seed}') AS content_sha256,
                row_number,
                '{table[:3].upper()}-' || settled_on || '-' || CAST(row_number AS VARCHAR)
                    AS record_ref,
                {gateway[table]} AS gateway,
                gateway_txn_id, batch_ref, batch_net_minor,
                {code[table]} AS event_code,
                kind, direction, gross_minor, currency, fee_minor, currency AS fee_currency,
                settled_on,
                {"NULL" if table == "camt053" else "occurred_at"} AS occurred_at,
                CASE WHEN kind = 'other' THEN 'bank charges' END AS description,
                {as_read.get(table, "CAST(i AS VARCHAR)")} AS raw,
                -- one file a day per table, landed in day order
                settled_day * {len(SETTLEMENT_TABLES)} + {n + 1} AS landing_seq
            FROM gen_lines WHERE landing = '{table}'
            ORDER BY settled_day, row_number
            """
        )
    statements += ["DROP TABLE gen_lines", "DROP TABLE gen_events"]
    in_transaction(conn, statements)


def settlement_line_count(conn: duckdb.DuckDBPyConnection) -> int:
    return sum(scalar(conn, f"SELECT count(*) FROM raw.{t}") for t in SETTLEMENT_TABLES)


# -- the timed work --------------------------------------------------------------------------


def _per_model(
    conn: duckdb.DuckDBPyConnection, models: tuple[str, ...], statements: Callable[[str], list[str]]
) -> Breakdown:
    """Runs each model's statements in a transaction of its own, timing each model."""
    took: Breakdown = {}
    for name in models:
        start = time.perf_counter()
        in_transaction(conn, statements(name))
        took[name] = time.perf_counter() - start
    return took


def first_build(
    conn: duckdb.DuckDBPyConnection,
    compiled: Compiled,
    day: str,
    models: tuple[str, ...] | None = None,
) -> Breakdown:
    """The marts built from nothing for ``day`` (what dbt does when they do not exist)."""
    return _per_model(
        conn,
        compiled.marts if models is None else models,
        lambda name: [
            f"DROP TABLE IF EXISTS {compiled.relation[name]}",
            f"CREATE TABLE {compiled.relation[name]} AS {compiled.sql(name, day)}",
        ],
    )


def nightly_build(
    conn: duckdb.DuckDBPyConnection, compiled: Compiled, nightly: Nightly
) -> Breakdown:
    """The marts brought up to the night: delete+insert on run_date, as
    dbt_project/macros/delete_insert.sql does it."""
    return _per_model(
        conn,
        compiled.marts,
        lambda name: [
            f"CREATE TEMP TABLE bench_tmp AS {nightly.sql[name]}",
            f"DELETE FROM {compiled.relation[name]} WHERE run_date = '{nightly.day}'",
            f"INSERT INTO {compiled.relation[name]} BY NAME SELECT * FROM bench_tmp",
            "DROP TABLE bench_tmp",
        ],
    )


def baseline_join(conn: duckdb.DuckDBPyConnection) -> Breakdown:
    """The ids baseline: the pairs a plain hash join on the gateway id finds, ids only."""
    # Materialised, as the matches model materialises its pairs: a count(*) alone
    # would let DuckDB skip building any output at all.
    lines = " UNION ALL ".join(
        f"SELECT content_sha256, row_number, gateway_txn_id FROM raw.{t}" for t in SETTLEMENT_TABLES
    )
    in_transaction(
        conn,
        [
            "DROP TABLE IF EXISTS bench_baseline",
            "CREATE TABLE bench_baseline AS"
            " SELECT events.event_hash, lines.content_sha256, lines.row_number"
            f" FROM ledger.revenue_events AS events JOIN ({lines}) AS lines"
            " ON lines.gateway_txn_id = events.external_id",
        ],
    )
    return {}


# The reconciliation_matches view's columns, each taken straight from the staged event or line
# (the models' own inputs): what one plain hash join on the gateway id costs
# when it writes the same output. Kept in step with the model by same_output_check.
SAME_OUTPUT_COLUMNS = {
    "event_hash": "events.event_hash",
    "source": "events.source",
    "external_id": "events.external_id",
    "kind": "events.kind",
    "revenue_amount_minor": "events.amount_minor",
    "revenue_currency": "events.currency",
    "occurred_at": "events.occurred_at",
    "settlement_line_id": "lines.settlement_line_id",
    "settlement_source": "lines.settlement_source",
    "settled_on": "cast(lines.settled_on AS VARCHAR)",
    "gross_minor": "lines.gross_minor",
    "currency": "lines.currency",
    "fee_minor": "lines.fee_minor",
    "fee_currency": "lines.fee_currency",
    "amount_difference_minor": "lines.gross_minor - events.amount_minor",
    "match_rule": "'gateway_txn_id'",
    "batch_ref": "lines.batch_ref",
    "file_name": "lines.file_name",
    "record_ref": "lines.record_ref",
    "run_date": "'{day}'",
}


def same_output_join(conn: duckdb.DuckDBPyConnection, compiled: Compiled, day: str) -> Breakdown:
    """The same-output baseline: one plain hash join on the gateway id writing the matches
    view's columns, with no rule, ranking, exception or summary."""
    select = ", ".join(
        f"{expr.format(day=day)} AS {name}" for name, expr in SAME_OUTPUT_COLUMNS.items()
    )
    in_transaction(
        conn,
        [
            "DROP TABLE IF EXISTS bench_same_output",
            f"CREATE TABLE bench_same_output AS SELECT {select}"
            f" FROM {compiled.relation['stg_ledger__revenue_events']} AS events"
            f" JOIN {compiled.relation['settlement_lines']} AS lines"
            " ON lines.gateway_txn_id = events.external_id",
        ],
    )
    return {}


def same_output_check(conn: duckdb.DuckDBPyConnection, compiled: Compiled) -> None:
    """Refuses to compare with a baseline whose columns are not the matches view's."""

    def columns(table: str) -> list[tuple[str, str]]:
        return [(str(r[0]), str(r[1])) for r in conn.execute(f"DESCRIBE {table}").fetchall()]

    model = columns(compiled.relation["reconciliation_matches"])  # the view
    baseline = columns("bench_same_output")
    if model != baseline:
        raise RuntimeError(f"same-output baseline columns {baseline} are not the model's {model}")


def outcome_counts(conn: duckdb.DuckDBPyConnection, compiled: Compiled, day: str) -> str:
    try:
        scalar(conn, f"SELECT count(*) FROM {compiled.relation['reconciliation_summary']}")
    except duckdb.CatalogException:
        return "not built"
    matches = scalar(
        conn,
        f"SELECT count(*) FROM {compiled.relation[MATCHES]} WHERE run_date = '{day}'",
    )
    rows = conn.execute(
        f"SELECT exception_kind, count(*) FROM {compiled.relation['reconciliation_exceptions']}"
        f" WHERE run_date = '{day}' GROUP BY ALL ORDER BY 2 DESC"
    ).fetchall()
    kinds = ", ".join(f"{k} {n:,}" for k, n in rows)
    return f"{matches:,} matched; exceptions: {kinds or 'none'}"


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class SizeResult:
    events: int
    lines: int
    reconcile: Timing
    baseline: Timing  # ids only
    same_output: Timing
    counts: str


def run_size(
    workdir: Path,
    compiled: Compiled,
    events: int,
    days: int,
    seed: int,
    repeats: int,
    limit: float | None,
) -> SizeResult:
    path = workdir / f"size_{events}" / WAREHOUSE_FILE
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as conn:
        start = time.perf_counter()
        generate(conn, events, days, seed)
        lines = settlement_line_count(conn)
        create_views(conn, compiled)
        print(
            f"  {events:,} events, {lines:,} settlement lines over {days} days"
            f" (generated in {time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        day = day_text(days - 1)
        base = best_of(repeats, conn, lambda: baseline_join(conn))
        print(f"    baseline, ids    {base}", flush=True)
        same = best_of(repeats, conn, lambda: same_output_join(conn, compiled, day))
        print(f"    baseline, output {same}", flush=True)
        rec = best_of(repeats, conn, lambda: first_build(conn, compiled, day), limit)
        print(f"    reconciliation   {rec}", flush=True)
        if rec.done:  # a stopped build left no table to compare columns with
            create_views(conn, compiled, over_marts=True)
            same_output_check(conn, compiled)
        counts = outcome_counts(conn, compiled, day)
        print(f"    {counts}", flush=True)
    path.unlink()
    return SizeResult(events, lines, rec, base, same, counts)


@dataclass
class HistoryResult:
    history_events: int
    history_matches: int
    history_exception_rows: int
    new_day_events: int
    new_day_lines: int
    with_history: Timing
    empty_history: Timing
    counts_history: str
    counts_empty: str
    dbt_history: Timing
    dbt_empty: Timing
    dbt_counts_agree: str  # the dbt builds' outcome against the SQL-only one's


def node_times(target: Path, top: int = 4) -> Breakdown:
    """The slowest nodes of the last dbt invocation (run_results.json), and all nodes' sum."""
    results = json.loads((target / "run_results.json").read_text(encoding="utf-8"))["results"]
    times = {str(r["unique_id"]).split(".")[2]: float(r["execution_time"]) for r in results}
    slowest = dict(sorted(times.items(), key=lambda kv: -kv[1])[:top])
    return {**slowest, f"all {len(times)} nodes": sum(times.values())}


def nightly_dbt(
    workdir: Path,
    sources: dict[str, Path],
    day: str,
    repeats: int,
    limit: float | None,
) -> dict[str, Timing]:
    """``dbt build`` for ``day``, best of ``repeats``, on a fresh copy of each source warehouse.

    Every build runs on the same path (one profile, one partial parse for all of them); the
    sources take turns, so a noisy minute hurts both alike.
    """
    run_dir = workdir / "dbt_nightly"
    run_dir.mkdir()
    warehouse = run_dir / WAREHOUSE_FILE
    target = run_dir / "target"
    dbt(["parse"], warehouse, target, run_date=day)
    best: dict[str, Timing] = {}
    for _ in range(repeats):
        for label, source in sources.items():
            prev = best.get(label)
            if prev is not None and (not prev.done or prev.seconds > LONG_RUN):
                continue
            for stale in (warehouse, warehouse.with_name(WAREHOUSE_FILE + ".wal")):
                stale.unlink(missing_ok=True)
            shutil.copyfile(source, warehouse)
            try:
                took = dbt(["build"], warehouse, target, run_date=day, timeout=limit)
            except subprocess.TimeoutExpired:
                best[label] = Timing(limit or 0.0, done=False)
                continue
            if prev is None or took < prev.seconds:
                best[label] = Timing(took, True, node_times(target))
            shutil.copyfile(warehouse, source.with_name("after_dbt.duckdb"))
    return best


def load_history(conn: duckdb.DuckDBPyConnection, compiled: Compiled, days: int) -> None:
    """History as if every night of days 0..days-1 had run.

    Matches: the first-build SQL once for the last night, then each match re-dated to
    the night its line settled. The other marts: built once for the last night, and
    that snapshot copied to earlier nights — every night for exceptions and summary
    (with the items that had appeared by then), the nights the models keep for the
    open items and the nights table. The last night's watermarks and open items are
    those of what had landed and been copied by then (the data up to the new day is
    all there).
    """
    day_before = day_text(days - 1)
    first_build(conn, compiled, day_before, compiled.marts[:1])
    rel = compiled.relation
    matches = rel[MATCHES]
    in_transaction(
        conn,
        [  # A match belongs to the night its line settled.
            "CREATE TEMP TABLE hist AS SELECT m.* REPLACE"
            " (strftime(lines.settled_on, '%Y-%m-%d') AS run_date)"
            f" FROM {matches} AS m JOIN {rel['settlement_lines']} AS lines USING (line_key)",
            f"DELETE FROM {matches}",
            f"INSERT INTO {matches} BY NAME SELECT * FROM hist ORDER BY run_date",
            "DROP TABLE hist",
        ],
    )
    first_build(conn, compiled, day_before, compiled.marts[1:])
    lines = " UNION ALL ".join(
        f"SELECT landing_seq FROM raw.{t} WHERE partition_date <= '{day_before}'"
        for t in SETTLEMENT_TABLES
    )
    end = day_text(days)
    # The last night knew only what had landed and been copied by then: its
    # watermarks, and its open items without what came after (the first build saw
    # everything up to the new day).
    nights, open_lines, open_events = (
        rel["reconciliation_nights"],
        rel["reconciliation_open_lines"],
        rel["reconciliation_open_events"],
    )
    in_transaction(
        conn,
        [
            f"""UPDATE {nights} SET
                  landing_watermark = (SELECT max(landing_seq) FROM ({lines})),
                  replica_watermark = (SELECT max(replicated_seq) FROM ledger.revenue_events
                                       WHERE occurred_at < '{end}')""",
            f"""DELETE FROM {open_lines} WHERE line_key IN (
                  SELECT line_key FROM {rel["settlement_lines"]}
                  WHERE landing_seq > (SELECT landing_watermark FROM {nights}))""",
            f"""DELETE FROM {open_events} WHERE event_key IN (
                  SELECT event_key FROM ledger.revenue_events
                  WHERE first_replicated_seq > (SELECT replica_watermark FROM {nights}))""",
            f"""UPDATE {nights} SET
                  open_lines = (SELECT count(*) FROM {open_lines}),
                  open_events = (SELECT count(*) FROM {open_events})""",
        ],
    )

    def copy_back(model: str, nights: int, appeared: str | None) -> list[str]:
        """The last night's rows again for each of the ``nights`` before it."""
        table = rel[model]
        back = f"""(SELECT strftime(DATE '{START}' + INTERVAL (d) DAY, '%Y-%m-%d') AS day
                    FROM range({max(days - nights, 0)}, {days}) r(d))"""
        join = (
            f"JOIN {back} AS days ON {appeared} <= days.day"
            if appeared
            else f"CROSS JOIN {back} AS days"
        )
        return [
            f"CREATE TEMP TABLE hist AS SELECT * FROM {table}",
            f"DELETE FROM {table}",
            f"""INSERT INTO {table} BY NAME
                SELECT hist.* REPLACE (days.day AS run_date) FROM hist {join}
                ORDER BY days.day""",
            "DROP TABLE hist",
        ]

    kept = int(dbt_var("open_items_nights_kept"))
    in_transaction(
        conn,
        [
            # Every night's snapshot holds the items open that night: those of the last
            # night that had appeared by then.
            *copy_back(
                "reconciliation_exceptions",
                days,
                "coalesce(hist.settled_on, left(hist.occurred_at, 10))",
            ),
            *copy_back("reconciliation_summary", days, None),
            *copy_back("reconciliation_open_lines", kept, None),
            *copy_back("reconciliation_open_events", kept, None),
            *copy_back("reconciliation_nights", kept, None),
        ],
    )


def copy_new_day(
    conn: duckdb.DuckDBPyConnection, compiled: Compiled, other: Path, day: str
) -> None:
    """Day ``day``'s lines and the events still open in its match window, nothing else."""
    window = int(dbt_var("match_window_days"))
    window_start = (date.fromisoformat(day) - timedelta(days=window)).isoformat()
    with duckdb.connect(str(other)) as fresh:
        raw.ensure_schema(fresh)
        replica.ensure_schema(fresh)
    matches = compiled.relation[MATCHES]
    statements = [
        f"""INSERT INTO fresh.ledger.revenue_events SELECT * FROM ledger.revenue_events
            WHERE occurred_at >= '{window_start}'
              AND event_key NOT IN (SELECT event_key FROM {matches})"""
    ]
    statements += [
        f"INSERT INTO fresh.raw.{t} BY NAME SELECT * FROM raw.{t} WHERE settled_on = '{day}'"
        for t in SETTLEMENT_TABLES
    ]
    for name in compiled.marts:
        table = compiled.relation[name].rsplit(".", 1)[-1]
        statements.append(
            f"CREATE TABLE fresh.main.{table} AS SELECT * FROM {compiled.relation[name]} LIMIT 0"
        )
    run(conn, f"ATTACH '{other}' AS fresh")
    try:
        in_transaction(conn, statements)
    finally:
        run(conn, "DETACH fresh")


def run_history(
    workdir: Path,
    compiled: Compiled,
    days: int,
    per_day: int,
    seed: int,
    repeats: int,
    limit: float | None,
) -> HistoryResult:
    """Days 0..days-1 of history, then day ``days`` timed with and without that history."""
    path = workdir / "history" / WAREHOUSE_FILE
    fresh = workdir / "new_day_only" / WAREHOUSE_FILE
    path.parent.mkdir(parents=True)
    fresh.parent.mkdir(parents=True)
    new_day = day_text(days)
    with duckdb.connect(str(path)) as conn:
        start = time.perf_counter()
        # Events and lines up to the new day; the history is reconciled up to the day before.
        generate(conn, per_day * (days + 1), days + 1, seed)
        create_views(conn, compiled)
        load_history(conn, compiled, days)
        history_events = scalar(conn, "SELECT count(*) FROM ledger.revenue_events")
        history_matches = scalar(conn, f"SELECT count(*) FROM {compiled.relation[MATCHES]}")
        history_exceptions = scalar(
            conn, f"SELECT count(*) FROM {compiled.relation['reconciliation_exceptions']}"
        )
        copy_new_day(conn, compiled, fresh, new_day)
        print(
            f"  {days} days of history: {history_events:,} events, {history_matches:,} matches,"
            f" {history_exceptions:,} exception rows (made in"
            f" {time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    # Both warehouses as loaded, closed (so checkpointed): the copies dbt builds on below.
    path_copy = workdir / "history_loaded" / WAREHOUSE_FILE
    fresh_copy = workdir / "new_day_loaded" / WAREHOUSE_FILE
    for source, copy in ((path, path_copy), (fresh, fresh_copy)):
        copy.parent.mkdir()
        shutil.copyfile(source, copy)
    night_history = compile_nightly(path, workdir / "compile_history", compiled, new_day)
    night_empty = compile_nightly(fresh, workdir / "compile_empty", compiled, new_day)
    if night_history.way != "previous night":  # the history was not loaded as a night leaves it
        raise RuntimeError("with history, the night did not start from the previous night")
    print(
        f"    open items found: with history, {night_history.way};"
        f" on empty history, {night_empty.way}",
        flush=True,
    )
    with duckdb.connect(str(path)) as conn:
        with_history = best_of(
            repeats, conn, lambda: nightly_build(conn, compiled, night_history), limit
        )
        counts_history = outcome_counts(conn, compiled, new_day)
        print(f"    day {days + 1}, with history   {with_history}", flush=True)
        print(f"    {counts_history}", flush=True)
    with duckdb.connect(str(fresh)) as conn:
        create_views(conn, compiled)
        events = scalar(conn, "SELECT count(*) FROM ledger.revenue_events")
        lines = settlement_line_count(conn)
        empty = best_of(repeats, conn, lambda: nightly_build(conn, compiled, night_empty), limit)
        counts_empty = outcome_counts(conn, compiled, new_day)
        print(
            f"    day {days + 1}, empty history  {empty}"
            f"  [{events:,} open events, {lines:,} lines]",
            flush=True,
        )
        print(f"    {counts_empty}", flush=True)
    path.unlink()
    fresh.unlink()
    dbt_times = nightly_dbt(
        workdir, {"empty": fresh_copy, "history": path_copy}, new_day, repeats, limit
    )
    for label in ("empty", "history"):
        print(f"    dbt build, day {days + 1}, {label:7}  {dbt_times[label]}", flush=True)
    agree = []
    for copy, sql_counts in ((fresh_copy, counts_empty), (path_copy, counts_history)):
        after = copy.with_name("after_dbt.duckdb")
        if not after.exists():
            agree.append("not built")
            continue
        after_dbt = after.with_name(WAREHOUSE_FILE)  # compiled SQL names the catalog
        copy.unlink()
        after.rename(after_dbt)
        with duckdb.connect(str(after_dbt), read_only=True) as conn:
            dbt_counts = outcome_counts(conn, compiled, new_day)
        agree.append("same" if dbt_counts == sql_counts else f"differs: {dbt_counts}")
        after_dbt.unlink()
    print(f"    dbt outcome vs. SQL only: empty {agree[0]}; history {agree[1]}", flush=True)
    return HistoryResult(
        history_events,
        history_matches,
        history_exceptions,
        events,
        lines,
        with_history,
        empty,
        counts_history,
        counts_empty,
        dbt_times["history"],
        dbt_times["empty"],
        f"empty history {agree[0]}, with history {agree[1]}",
    )


# -- report ----------------------------------------------------------------------------------


def summary_block(
    args: argparse.Namespace, small: SizeResult, big: SizeResult, hist: HistoryResult
) -> tuple[list[str], list[str]]:
    """The markdown block for docs/performance.md, and the targets missed."""
    r_base = Ratio.of(big.reconcile, big.baseline)
    r_same = Ratio.of(big.reconcile, big.same_output)
    r_write = Ratio.of(big.same_output, big.baseline)
    r_scale = Ratio.of(big.reconcile, small.reconcile)
    r_hist = Ratio.of(hist.with_history, hist.empty_history)
    r_dbt = Ratio.of(hist.dbt_history, hist.dbt_empty)
    night = f"day {args.history_days + 1}"
    history = (
        f"{args.history_days} days of history ({hist.history_events:,} events, "
        f"{hist.history_matches:,} matches, {hist.history_exception_rows:,} exception rows)"
    )
    empty = f"empty history ({hist.new_day_events:,} open events, {hist.new_day_lines:,} lines)"
    rows = [
        (
            f"baseline, ids: hash join on gateway id writing the ids, {big.events:,} events",
            big.baseline,
            None,
            None,
        ),
        (
            f"baseline, same output: that join writing the matches view's columns, "
            f"{big.events:,} events",
            big.same_output,
            (r_write, "× ids baseline"),
            None,
        ),
        (
            f"first build, {small.events:,} events ({small.lines:,} lines)",
            small.reconcile,
            None,
            None,
        ),
        (
            f"first build, {big.events:,} events ({big.lines:,} lines)",
            big.reconcile,
            (r_base, "× ids baseline"),
            BASELINE_TARGET,
        ),
        (
            f"first build, {big.events:,} events, against the same-output baseline",
            None,
            (r_same, "× same-output baseline"),
            None,
        ),
        (f"scaling: t({big.events:,}) / t({small.events:,})", None, (r_scale, ""), SCALING_TARGET),
        (f"nightly `dbt build` {night}, {empty}", hist.dbt_empty, None, None),
        (
            f"nightly `dbt build` {night}, {history}",
            hist.dbt_history,
            (r_dbt, "× empty history"),
            HISTORY_TARGET,
        ),
        (f"SQL only: nightly marts {night}, {empty}", hist.empty_history, None, None),
        (
            f"SQL only: nightly marts {night}, {history}",
            hist.with_history,
            (r_hist, "× empty history"),
            None,
        ),
    ]
    out = [
        f"Reconciliation models (`benchmarks/reconcile.py`, {date.today().isoformat()}):",
        "part 1 and the SQL-only lines: compiled dbt SQL executed directly in DuckDB "
        f"{duckdb.__version__} (no dbt start-up); `dbt build` lines: the whole dbt invocation "
        f"(models and tests, start-up included); best of {args.repeats}, "
        f"{os.cpu_count()} cores; a build is stopped after {args.timeout:.0f} s and measured "
        f"once when it takes over {LONG_RUN:.0f} s.",
        "",
        "| measure | seconds | ratio | target | met |",
        "|---|---|---|---|---|",
    ]
    missed = []
    for label, timing, ratio, target in rows:
        seconds = timing.cell() if timing is not None else ""
        if ratio is None:
            out.append(f"| {label} | {seconds} | | | |")
            continue
        value, unit = ratio
        if target is None:
            out.append(f"| {label} | {seconds} | {value.text()} {unit} | none (informational) | |")
            continue
        met = value.met(target)
        if met != "yes":
            missed.append(label)
        out.append(f"| {label} | {seconds} | {value.text()} {unit} | ≤ {target} | {met} |")
    out += [
        "",
        f"- {big.events:,} events, first build: {str(big.reconcile).strip()}",
        f"  {big.counts}",
        f"- {night} `dbt build` with history: {str(hist.dbt_history).strip()}",
        f"- {night} `dbt build` on empty history: {str(hist.dbt_empty).strip()}",
        f"  (seconds per dbt node from run_results.json; the builds' outcome against the SQL "
        f"only run's: {hist.dbt_counts_agree})",
        f"- {night} SQL only with history: {str(hist.with_history).strip()}",
        f"  {hist.counts_history}",
        f"- {night} SQL only on empty history: {str(hist.empty_history).strip()}",
        f"  {hist.counts_empty}",
    ]
    return out, missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="N revenue events (part 1)")
    parser.add_argument("--days", type=int, default=30, help="days the N events span (part 1)")
    parser.add_argument("--history-days", type=int, default=365, help="days of history (part 2)")
    parser.add_argument("--per-day", type=int, default=3_000, help="events a day (part 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of these")
    parser.add_argument(
        "--timeout",
        type=float,
        default=100.0,
        help="stop a build after this many seconds (0: never); a stopped one is not repeated",
    )
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 40,000 events, 60 days of 500 events"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.history_days, args.per_day, args.repeats = 40_000, 60, 500, 2
    limit = args.timeout or None

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="finsup_reconcile_bench_") as tmp:
        workdir = Path(tmp)
        compiled = compile_models(workdir)
        print(f"[1] first build of the marts for the last of {args.days} days", flush=True)
        small = run_size(
            workdir, compiled, args.events // 4, args.days, args.seed, args.repeats, limit
        )
        big = run_size(workdir, compiled, args.events, args.days, args.seed, args.repeats, limit)
        print(f"[2] nightly run after {args.history_days} days of history", flush=True)
        hist = run_history(
            workdir,
            compiled,
            args.history_days,
            args.per_day,
            args.seed,
            args.repeats,
            limit,
        )
    block, missed = summary_block(args, small, big, hist)
    print(
        f"\n== summary (total {time.perf_counter() - started:.0f} s; paste into "
        "docs/performance.md) =="
    )
    print("\n".join(block))
    if missed:
        print(f"\ntargets missed: {'; '.join(missed)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
