"""The nightly job through the celery executor: RabbitMQ, two celery workers, the instance on PostgreSQL.

Real parts only: the broker is this machine's RabbitMQ (a vhost per test module),
the Dagster instance is deploy/dagster.yaml on a fresh PostgreSQL database, the
ledgers are PostgreSQL databases, the workers are ``celery -A
finsup_dagster.executors:app worker`` processes (one for the warehouse queue, one
for ledger and gateway), and the run is ``execute_job`` of the real
``nightly_reconciliation`` for the generated sample's second day. Its books and
reconciliation are compared with the same day run in process.

The workers are started once for the module and serve both tests: a run names its
books (ledger, home, warehouse) and the dbt to build with in its run config, so the
workers' environment holds the instance and the broker only. dbt, in the reference
runs and on the workers alike, is the tests' prepared parse (tests/helpers/dbt_runner.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
import pytest
import sqlalchemy as sa
from dagster_celery import core_execution_loop
from dagster_duckdb import DuckDBResource

from finsup_dagster import executors, queues, settings
from finsup_dagster.assets.raw import WAREHOUSE_POOL
from finsup_dagster.demo import SAMPLE_START
from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.schema import journal_entries, transaction_log
from finsup_dagster.resources import (
    LedgerResource,
    PayPalReportingResource,
    ReconciliationPolicyResource,
)
from finsup_dagster.sample_data.generate import MIN_DAYS, generate_sample
from tests.conftest import PG_ADMIN, create_pg_database, drop_pg_database
from tests.helpers import celery_workers, dbt_runner
from tests.helpers.books import count, event_rows, nonzero_balances
from tests.helpers.nightly import nightly

pytestmark = pytest.mark.slow

FIRST_DAY = SAMPLE_START.isoformat()
DAY = (SAMPLE_START + timedelta(days=1)).isoformat()
RUN_TIMEOUT = 420  # seconds: generous on a loaded machine, bounded all the same
MARTS = (
    "reconciliation_matches",
    "reconciliation_exceptions",
    "reconciliation_summary",
    "reconciliation_open_lines",
    "reconciliation_open_events",
)
WORKERS = [("wh", [queues.WAREHOUSE]), ("books", [queues.LEDGER, queues.GATEWAY])]


def nightly_job() -> dg.JobDefinition:
    """The job as the code location defines it (the workers rebuild it from here)."""
    from finsup_dagster.definitions import defs

    return defs.resolve_job_def("nightly_reconciliation")


def books(url: str, warehouse: Path) -> dict[str, Any]:
    """The books and the day's reconciliation, as an in-process run and a celery run must agree."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            state: dict[str, Any] = {
                "events": event_rows(conn),
                "balances": nonzero_balances(conn),
                "entries": count(conn, journal_entries),
                "log_rows": count(conn, transaction_log),
                "log_actions": sorted(
                    conn.execute(sa.select(transaction_log.c.action)).scalars().all()
                ),
            }
    finally:
        engine.dispose()
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for table in MARTS:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                    " 'main' AND table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
                # The warehouse's own numbering and build time differ between two warehouses.
                if not r[0].endswith(("_key", "landing_seq")) and r[0] != "built_at"
            ]
            state[table] = conn.execute(
                f"SELECT {', '.join(cols)} FROM main.{table} ORDER BY ALL"
            ).fetchall()
    assert state["reconciliation_matches"], "the sample day reconciles something"
    return state


class Books:
    """One set of books: a landing zone with the sample, a PostgreSQL ledger, a warehouse."""

    def __init__(self, root: Path, home: Path, url: str) -> None:
        self.root = root
        self.home = root / "home"
        shutil.copytree(home, self.home)
        self.warehouse = root / "warehouse.duckdb"
        self.url = url

    @classmethod
    def new(cls, root: Path, sample: Path) -> Books:
        books = cls(root, sample, create_pg_database())
        engine = db.make_engine(books.url)
        migrate.upgrade(engine)
        engine.dispose()
        return books

    def copy(self, root: Path) -> Books:
        """The same books as they stand: ledger, landing zone, audit checkpoint, warehouse."""
        name = f"finsup_test_{uuid.uuid4().hex[:12]}"
        source = self.url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            # A template must have no session: a pool left over from the run that built it
            # (the assets' own engines) is closed here; nothing reads these books again.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [source],
            )
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        copied = Books(root, self.home, self.url.rsplit("/", 1)[0] + f"/{name}")
        shutil.copyfile(self.warehouse, copied.warehouse)
        return copied

    def env(self) -> dict[str, str]:
        return {
            "FINSUP_HOME": str(self.home),
            "FINSUP_LEDGER_URL": self.url,
            "FINSUP_WAREHOUSE_PATH": str(self.warehouse),
        }

    def run_in_process(self, day: str) -> None:
        ledger = LedgerResource(url=self.url, home=str(self.home))
        result = nightly(
            {
                "dbt": dbt_runner.dbt_resource(),
                "ledger": ledger,
                "duckdb": DuckDBResource(database=str(self.warehouse)),
                "paypal": PayPalReportingResource(),  # no base URL: files only
                "reconciliation_policy": ReconciliationPolicyResource(
                    unmatched_rate_threshold="0.05"
                ),
            },
            day,
        )
        ledger.engine.dispose()
        assert result.success, day

    def state(self) -> dict[str, Any]:
        return books(self.url, self.warehouse)

    def reference_state(self, day: str) -> dict[str, Any]:
        self.run_in_process(day)
        return self.state()

    def drop(self) -> None:
        drop_pg_database(self.url)


@dataclass
class Stack:
    """What both tests share: the reference books, the instance, the two workers."""

    root: Path
    start: Books  # the books after the first sample day
    reference: Future[dict[str, Any]]  # the second day's books, run in process on a copy
    instance: dg.DagsterInstance
    workers: dict[str, celery_workers.Worker]
    books: list[Books]  # every set of books made, dropped at the end

    @property
    def expected(self) -> dict[str, Any]:
        """The in-process run's books and reconciliation, once that run has finished."""
        return self.reference.result(timeout=RUN_TIMEOUT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The reference books, an instance on PostgreSQL, a vhost and two celery workers.

    One set of workers serves both tests: each run names its books (ledger, home,
    warehouse) in its run config, so nothing about the books is in the workers'
    environment. They are started first and import the definitions while this process
    runs the two reference days in process.
    """
    root = tmp_path_factory.mktemp("celery")
    created: list[Books] = []
    instance_url = create_pg_database()
    try:
        with ExitStack() as cleanup, pytest.MonkeyPatch.context() as monkeypatch:
            broker = cleanup.enter_context(celery_workers.vhost())
            # Placeholders for the variables every resource reads; the runs' config names
            # the real books. A run that ignored it would book into this empty home's
            # SQLite ledger, and the comparison with the expected books would fail.
            placeholder = root / "workers_home"
            placeholder.mkdir()
            env = {
                **{
                    k: v for k, v in os.environ.items() if not k.startswith(("FINSUP_", "DAGSTER_"))
                },
                # What `finsup` sets for an unset variable on this machine; files only for PayPal.
                **settings.local_defaults(placeholder),
                **celery_workers.instance_env(instance_url),
                "DAGSTER_HOME": str(celery_workers.dagster_home(root / "dagster_home")),
                executors.BROKER_ENV: broker,
            }
            started = cleanup.enter_context(celery_workers.workers(WORKERS, env, root, wait=False))
            sample = root / "sample"
            generate_sample(sample, root / "sandbox", start=SAMPLE_START, days=MIN_DAYS)
            # The first day only lands revenue (settlements come the day after): it is the
            # starting point; the day under test, the second, settles and confirms it.
            start = Books.new(root / "first_day", sample)
            created.append(start)
            start.run_in_process(FIRST_DAY)
            baseline = start.copy(root / "in_process")
            created.append(baseline)
            # The run's executor (in this process) looks for finished steps and submits
            # the next ones once a second; the nightly's steps mostly wait on each other
            # (one warehouse writer at a time), so a tenth of that takes ~1 s off each
            # step. How the steps are sent, run and reported is unchanged.
            monkeypatch.setattr(core_execution_loop, "TICK_SECONDS", 0.1)
            # The runs (started here) read the same instance and broker as the workers.
            for key, value in env.items():
                if key.startswith(("FINSUP_", "DAGSTER_")):
                    monkeypatch.setenv(key, value)
            # Before the thread below: two threads importing the same modules at once
            # (SQLAlchemy's ORM, first used by the instance) can see them half-initialised.
            instance = cleanup.enter_context(dg.DagsterInstance.get())
            # The reference run goes on in a thread while the first test's run is on the
            # workers: its books are separate (own ledger, home and warehouse, an
            # ephemeral instance), it imports nothing the first day's run did not, and
            # most of its time is dbt, a process of its own.
            background = cleanup.enter_context(ThreadPoolExecutor(max_workers=1))
            reference = background.submit(baseline.reference_state, DAY)
            celery_workers.wait_ready(started)
            yield Stack(root, start, reference, instance, started, created)
    finally:
        for b in created:
            b.drop()
        drop_pg_database(instance_url)


@pytest.fixture
def target(stack: Stack, request: pytest.FixtureRequest) -> Books:
    """Fresh books for one test: a copy of the books after the first day."""
    root = stack.root / request.node.name
    root.mkdir()
    books = stack.start.copy(root)
    stack.books.append(books)
    return books


def dbt_config() -> dict[str, Any]:
    """The tests' dbt resource as run config (a resource's config is given whole)."""
    dbt = dbt_runner.dbt_resource()
    fields = ("project_dir", "profiles_dir", "profile", "target", "state_path", "dbt_executable")
    return {k: getattr(dbt, k) for k in fields if getattr(dbt, k) is not None}


def run_config(books: Books) -> dict[str, Any]:
    """Celery, and the books this run writes (the workers' environment names none)."""
    return {
        "execution": {"config": {"celery": executors.celery_run_config()}},
        "resources": {
            # A test ledger's URL holds no password; a deployment keeps its ledger in
            # FINSUP_LEDGER_URL instead, which the workers' environment has.
            "ledger": {
                "config": {
                    "url": books.url,
                    "home": str(books.home),
                    "audit_key": {"env": "FINSUP_AUDIT_KEY"},
                }
            },
            "duckdb": {"config": {"database": str(books.warehouse)}},
            # The tests' dbt (one prepared parse, tests/helpers/dbt_runner.py), as the
            # in-process reference runs use: the same models built, without a parse a build.
            "dbt": {"config": dbt_config()},
        },
    }


def step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    events = [e.dagster_event for e in starts if e.dagster_event]
    return {e.step_key: e.pid for e in events if e.step_key and e.pid is not None}


def execute(
    instance: dg.DagsterInstance,
    books: Books,
    tags: dict[str, str] | None = None,
    **kwargs: Any,
) -> dg.DagsterRun:
    """``execute_job`` of the nightly job for DAY through celery; returns the stored run."""
    with dg.execute_job(
        dg.reconstructable(nightly_job),
        instance=instance,
        run_config=run_config(books),
        tags={"dagster/partition": DAY, **(tags or {})},
        **kwargs,
    ) as result:
        run_id = result.run_id
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def test_the_nightly_job_runs_on_celery_workers_and_books_what_in_process_books(
    stack: Stack, target: Books
) -> None:
    instance, started = stack.instance, stack.workers
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    run = execute(instance, target)

    assert run.status == dg.DagsterRunStatus.SUCCESS, started["wh"].output()[-3000:]
    pids = step_pids(instance, run.run_id)
    submitted = "\n".join(
        e.message or ""
        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    )
    queue_of = dict(re.findall(r'celery task for step "([^"]+)" to queue "([^"]+)"', submitted))
    assert set(queue_of) == set(pids), (queue_of, pids)
    pools = {node.name: node.definition.pools for node in nightly_job().graph.nodes}
    for worker in started.values():
        worker.children()
    for step, pid in pids.items():
        assert pid != os.getpid(), f"{step} ran in the test process"
        # Warehouse writers on the warehouse queue, run by its worker's pool process; the
        # rest (untagged: the default queue) on the ledger queue, by the other worker.
        want = queues.WAREHOUSE if "warehouse" in pools.get(step, set()) else queues.LEDGER
        assert queue_of[step] == want, (step, queue_of[step])
        worker = started["wh"] if want == queues.WAREHOUSE else started["books"]
        assert pid in worker.pids_seen, (step, pid, {w.name: w.pids_seen for w in started.values()})
    assert "reconciliation_models" in pids and queues.LEDGER in queue_of.values()
    assert target.state() == stack.expected


def test_a_worker_killed_mid_step_fails_the_run_and_a_reexecution_converges(
    stack: Stack, target: Books
) -> None:
    instance, started = stack.instance, stack.workers
    token = uuid.uuid4().hex
    outcome: dict[str, Any] = {}

    def orchestrate() -> None:
        try:
            outcome["run"] = execute(instance, target, tags={"finsup/test": token})
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=orchestrate, daemon=True)
    thread.start()
    victim = "reconciliation_models"  # dbt build: the longest step, writing the warehouse
    deadline = time.monotonic() + RUN_TIMEOUT
    killed: list[int] = []
    while not killed and time.monotonic() < deadline and thread.is_alive():
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"finsup/test": token}))
        if runs:
            pid = step_pids(instance, runs[0].run_id).get(victim)
            if pid:
                killed = celery_workers.process_tree(pid)
                for p in killed:
                    os.kill(p, signal.SIGKILL)
        time.sleep(0.2)
    assert killed, f"{victim} never started: {outcome}"
    thread.join(timeout=RUN_TIMEOUT)
    assert not thread.is_alive(), "the run did not notice its worker died"
    assert "error" not in outcome, outcome
    failed = outcome["run"]
    assert failed.status == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure and "WorkerLostError" in str(failure[-1].dagster_event), failure
    done = {
        e.dagster_event.step_key
        for e in instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        if e.dagster_event
    }
    assert victim not in done and "ledger__revenue_confirmations" not in done, done

    # The killed step never handed its warehouse pool slot back. The daemon frees it
    # (deploy/dagster.yaml, run_monitoring.free_slots_after_run_end_seconds); there is
    # no daemon here, so do what it does.
    storage = instance.event_log_storage
    held = storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots
    assert [(c.run_id, c.step_key) for c in held] == [(failed.run_id, victim)], held
    storage.free_concurrency_slots_for_run(failed.run_id)
    assert not storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots

    again = execute(
        instance,
        target,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
    )
    assert again.status == dg.DagsterRunStatus.SUCCESS, started["wh"].output()[-3000:]
    assert victim in step_pids(instance, again.run_id)
    assert not any(k.startswith("raw_") for k in step_pids(instance, again.run_id))
    # Same books as one clean in-process run: nothing booked or logged twice.
    assert target.state() == stack.expected


def test_the_executor_is_chosen_per_job_then_for_all_then_multiprocess() -> None:
    env = {"FINSUP_EXECUTOR": "in_process", "FINSUP_EXECUTOR_NIGHTLY_RECONCILIATION": "celery"}
    assert executors.kind_for("nightly_reconciliation", env) == "celery"
    assert executors.kind_for("submit_payout_batch", env) == "in_process"
    assert executors.kind_for(None, env) == "in_process"
    assert executors.kind_for("nightly_reconciliation", {}) == "multiprocess"
    with pytest.raises(ValueError, match=r"FINSUP_EXECUTOR_AUDIT_SNAPSHOT='kubernetes'"):
        executors.kind_for("audit_snapshot", {"FINSUP_EXECUTOR_AUDIT_SNAPSHOT": "kubernetes"})
    # The broker's URL holds its password: a run's config names the variable instead.
    config = executors.celery_run_config({executors.BROKER_ENV: "pyamqp://u:secret@h//"})
    assert config["broker"] == {"env": executors.BROKER_ENV}
    assert "secret" not in repr(config)
    assert executors.celery_run_config({})["broker"] == executors.LOCAL_BROKER
