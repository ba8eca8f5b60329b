"""The nightly job through the celery executor: RabbitMQ, two celery workers, the instance on PostgreSQL.

Real parts only: the broker is this machine's RabbitMQ (a vhost per test module),
the Dagster instance is deploy/dagster.yaml on a fresh PostgreSQL database, the
ledgers are PostgreSQL databases, the workers are ``celery -A
finsup_dagster.executors:app worker`` processes (one for the warehouse queue, one
for ledger and gateway), and the run is ``execute_job`` of the real
``nightly_reconciliation`` for the generated sample's second day. Its books and
reconciliation are compared with the same day run in process.
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
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
import pytest
import sqlalchemy as sa
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
    resources_from_env,
)
from finsup_dagster.sample_data.generate import MIN_DAYS, generate_sample
from tests.conftest import PG_ADMIN, create_pg_database, drop_pg_database
from tests.helpers import celery_workers
from tests.helpers.books import count, event_rows, nonzero_balances
from tests.helpers.nightly import mart_rows, nightly

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
            state[table] = mart_rows(conn, table)
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
                "dbt": resources_from_env()["dbt"],
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

    def drop(self) -> None:
        drop_pg_database(self.url)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The books after the first sample day, the second day run in process on a copy of
    them, an instance on PostgreSQL and a vhost."""
    root = tmp_path_factory.mktemp("celery")
    sample = root / "sample"
    generate_sample(sample, root / "sandbox", start=SAMPLE_START, days=MIN_DAYS)
    created: list[Books] = []
    instance_url = create_pg_database()
    try:
        # The first day only lands revenue (settlements come the day after): it is the
        # starting point; the day under test, the second, settles and confirms it.
        start = Books.new(root / "first_day", sample)
        created.append(start)
        start.run_in_process(FIRST_DAY)
        baseline = start.copy(root / "in_process")
        created.append(baseline)
        baseline.run_in_process(DAY)
        home = celery_workers.dagster_home(root / "dagster_home")
        with celery_workers.vhost() as broker:
            yield {
                "root": root,
                "start": start,
                "expected": baseline.state(),
                "books": created,
                "dagster_home": home,
                "instance_env": celery_workers.instance_env(instance_url),
                "broker": broker,
            }
    finally:
        for b in created:
            b.drop()
        drop_pg_database(instance_url)


@pytest.fixture
def celery_books(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[Books, dg.DagsterInstance, dict[str, celery_workers.Worker]]]:
    """Fresh books, the instance, and two celery workers whose environment points at both."""
    root = stack["root"] / request.node.name
    root.mkdir()
    target = stack["start"].copy(root)
    stack["books"].append(target)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FINSUP_", "DAGSTER_"))},
        # What `finsup` sets for an unset variable on this machine; files only for PayPal.
        **settings.local_defaults(target.home),
        **target.env(),
        **stack["instance_env"],
        "DAGSTER_HOME": str(stack["dagster_home"]),
        executors.BROKER_ENV: stack["broker"],
    }
    # The run (started here) reads the same variables as the workers.
    for key, value in env.items():
        if key.startswith(("FINSUP_", "DAGSTER_")):
            monkeypatch.setenv(key, value)
    with (
        celery_workers.workers(WORKERS, env, root) as started,
        dg.DagsterInstance.get() as instance,
    ):
        yield target, instance, started


def run_config() -> dict[str, Any]:
    return {"execution": {"config": {"celery": executors.celery_run_config()}}}


def step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    events = [e.dagster_event for e in starts if e.dagster_event]
    return {e.step_key: e.pid for e in events if e.step_key and e.pid is not None}


def execute(
    instance: dg.DagsterInstance, tags: dict[str, str] | None = None, **kwargs: Any
) -> dg.DagsterRun:
    """``execute_job`` of the nightly job for DAY through celery; returns the stored run."""
    with dg.execute_job(
        dg.reconstructable(nightly_job),
        instance=instance,
        run_config=run_config(),
        tags={"dagster/partition": DAY, **(tags or {})},
        **kwargs,
    ) as result:
        run_id = result.run_id
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def test_the_nightly_job_runs_on_celery_workers_and_books_what_in_process_books(
    stack: dict[str, Any],
    celery_books: tuple[Books, dg.DagsterInstance, dict[str, celery_workers.Worker]],
) -> None:
    target, instance, started = celery_books
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    run = execute(instance)

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
    assert target.state() == stack["expected"]


def test_a_worker_killed_mid_step_fails_the_run_and_a_reexecution_converges(
    stack: dict[str, Any],
    celery_books: tuple[Books, dg.DagsterInstance, dict[str, celery_workers.Worker]],
) -> None:
    target, instance, started = celery_books
    token = uuid.uuid4().hex
    outcome: dict[str, Any] = {}

    def orchestrate() -> None:
        try:
            outcome["run"] = execute(instance, tags={"finsup/test": token})
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
        instance, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    )
    assert again.status == dg.DagsterRunStatus.SUCCESS, started["wh"].output()[-3000:]
    assert victim in step_pids(instance, again.run_id)
    assert not any(k.startswith("raw_") for k in step_pids(instance, again.run_id))
    # Same books as one clean in-process run: nothing booked or logged twice.
    assert target.state() == stack["expected"]


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
