"""Shared fixtures: every ledger test runs on a real SQLite file and a real PostgreSQL database.

PostgreSQL is the server on 127.0.0.1:5432 (user postgres, trust auth); each
test gets a throw-away database of its own. If no server answers, the tests
that need it fail and say how to start one: they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db, migrate

PG_ADMIN = os.environ.get("FINSUP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_START_HINT = (
    "PostgreSQL is not answering at 127.0.0.1:5432 (user postgres, trust auth). Start it with "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point "
    "FINSUP_TEST_PG at another server."
)


def _admin_connect() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"{PG_START_HINT} ({str(exc).strip().splitlines()[0]})", pytrace=False)


def create_pg_database() -> str:
    name = f"finsup_test_{uuid.uuid4().hex[:12]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    """Initialised books on each backend."""
    eng = db.make_engine(ledger_url)
    migrate.upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def finsup_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ledger_url: str) -> Path:
    """Environment for CLI runs: FINSUP_HOME in tmp_path, the ledger on the current backend."""
    home = tmp_path / "finsup_home"
    home.mkdir()
    monkeypatch.setenv("FINSUP_HOME", str(home))
    monkeypatch.setenv("FINSUP_LEDGER_URL", ledger_url)
    monkeypatch.setenv("FINSUP_ACTOR", "test-operator")
    return home
