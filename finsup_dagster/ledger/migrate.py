"""Creating and upgrading the books with Alembic (idempotent)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db
from finsup_dagster.ledger.errors import LedgerError

MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Migrates to the newest revision; returns (before, after)."""
    db.prepare_to_create(engine)
    return run(engine, "head", up=True)


def run(engine: Engine, revision: str, up: bool) -> tuple[str | None, str | None]:
    """Migrates up or down to ``revision`` in one transaction; returns (before, after).

    On SQLite, dropping or retyping a column copies the table, and with foreign
    keys on, dropping the old copy counts every row pointing at it (earnings at
    their payout item, items at their batch) as a violation the renamed copy
    never clears, so the commit fails on books that have batches. SQLite cannot
    switch foreign keys off inside a transaction, so they are switched off on
    this one connection before it begins, ``PRAGMA foreign_key_check`` must come
    back empty before it commits, and the connection is discarded afterwards.
    """
    before = current_revision(engine)
    cfg = _config()
    with engine.connect() as conn:
        sqlite = db.is_sqlite(conn)
        if sqlite:
            # Outside any transaction (the driver autocommits): only then does it take.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                (command.upgrade if up else command.downgrade)(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise LedgerError(
                            f"migrating to {revision} would leave {len(broken)} rows of "
                            f"{broken[0][0]} pointing at nothing; nothing was changed"
                        )
        finally:
            if sqlite:
                conn.invalidate()  # never back in the pool with foreign keys off
    return before, current_revision(engine)


def revision(engine: Engine, message: str) -> None:
    """Autogenerates a migration from the difference between schema.py and the books."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
