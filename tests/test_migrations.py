"""The Alembic migrations build exactly the schema the code is written against."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.schema import audit_chain_head, metadata


def test_migrated_database_matches_schema_py(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []


def test_init_is_idempotent_and_keeps_data(ledger_url: str) -> None:
    eng = db.make_engine(ledger_url)
    assert migrate.upgrade(eng) == (None, migrate.head_revision())
    with db.write(eng) as conn:
        conn.execute(sa.text("UPDATE audit_chain_head SET seq = seq"))
    assert migrate.upgrade(eng) == (migrate.head_revision(), migrate.head_revision())
    with db.read(eng) as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(audit_chain_head)).scalar_one() == 1
        )
    eng.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    eng = db.make_engine(f"sqlite:///{tmp_path}/l.db")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    eng.dispose()


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert db.normalise_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalise_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalise_url("sqlite:///x.db") == "sqlite:///x.db"
