"""RabbitMQ vhosts, celery worker processes and a Dagster instance on PostgreSQL, for tests.

Everything here is real: the broker is the RabbitMQ server on 127.0.0.1:5672, the
workers are ``celery -A finsup_dagster.executors:app worker`` processes, and the
instance is deploy/dagster.yaml itself on a throw-away PostgreSQL database. A
worker is a process group of its own, killed (SIGKILL) at the end whatever
happened, so a failed test leaves no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
DEPLOY_INSTANCE = ROOT / "deploy" / "dagster.yaml"
RABBIT = ("127.0.0.1", 5672)
RABBIT_START_HINT = (
    "RabbitMQ is not answering at 127.0.0.1:5672 (user guest). Start it with `make rabbitmq` "
    "(runs `rabbitmq-server -detached`), or `service rabbitmq-server start`."
)


def require_rabbitmq() -> None:
    """Fails the test with the command that starts RabbitMQ when nothing answers."""
    try:
        socket.create_connection(RABBIT, timeout=5).close()
    except OSError as exc:
        pytest.fail(f"{RABBIT_START_HINT} ({exc})", pytrace=False)


def _rabbitmqctl(*args: str) -> None:
    proc = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)}: {proc.stderr.strip()[-500:]}", pytrace=False)


@contextmanager
def vhost() -> Iterator[str]:
    """A RabbitMQ vhost of the test's own; yields its broker URL, deletes it afterwards."""
    require_rabbitmq()
    name = f"finsup_test_{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"pyamqp://guest:guest@{RABBIT[0]}:{RABBIT[1]}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def instance_env(pg_url: str) -> dict[str, str]:
    """deploy/dagster.yaml's variables for a database URL of tests/conftest.py."""
    rest = pg_url.split("://", 1)[1]
    userinfo, hostpart = rest.split("@", 1)
    hostport, db = hostpart.split("/", 1)
    host, _, port = hostport.partition(":")
    user, _, password = userinfo.partition(":")
    return {
        "DAGSTER_PG_HOST": host,
        "DAGSTER_PG_PORT": port or "5432",
        "DAGSTER_PG_USER": user,
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_DB": db,
    }


def dagster_home(folder: Path) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, unchanged."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY_INSTANCE, folder / "dagster.yaml")
    return folder


def _parents() -> dict[int, int]:
    """Every process's parent, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            # The command name may hold spaces: the parent pid is the 2nd field after ")".
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it (a step and, for dbt, its ``dbt build``)."""
    parents = _parents()
    tree, frontier = [pid], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        tree += sorted(frontier)
    return tree


@dataclass
class Worker:
    name: str
    queues: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log: Path
    pids_seen: set[int] = field(default_factory=set)

    def children(self) -> set[int]:
        """The worker's pool processes (where celery runs a task); remembered in pids_seen."""
        found = {child for child, parent in _parents().items() if parent == self.proc.pid}
        self.pids_seen |= found
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_ready(worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker {worker.name} exited: {worker.output()[-3000:]}")
        # celery logs "<name>@<host> ready." once it consumes from its queues.
        if " ready." in worker.output() and worker.children():
            return
        time.sleep(0.5)
    raise AssertionError(f"worker {worker.name} not ready in {timeout}s: {worker.output()[-3000:]}")


@contextmanager
def workers(
    specs: Sequence[tuple[str, Sequence[str]]],
    env: Mapping[str, str],
    log_dir: Path,
    ready_timeout: float = 180,
) -> Iterator[dict[str, Worker]]:
    """Starts one celery worker (one pool process) per (name, queues); kills them all after."""
    started: dict[str, Worker] = {}
    try:
        for name, queue_names in specs:
            log = log_dir / f"worker-{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        CELERY,
                        "-A",
                        "finsup_dagster.executors:app",
                        "worker",
                        "-Q",
                        ",".join(queue_names),  # one -Q, comma-separated
                        "-c",
                        "1",
                        "-n",
                        f"{name}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "-l",
                        "INFO",
                    ],
                    cwd=ROOT,
                    env=dict(env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed whole below
                )
            started[name] = Worker(name, tuple(queue_names), proc, log)
        for worker in started.values():
            _wait_ready(worker, ready_timeout)
        yield started
    finally:
        for worker in started.values():
            _kill_group(worker.proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
