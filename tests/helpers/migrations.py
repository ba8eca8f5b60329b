"""Books as an older release left them, for migration tests."""

from __future__ import annotations

from alembic import command
from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db, migrate


def ledger_at(url: str, revision: str) -> Engine:
    """An engine on ``url`` with the ledger migrated up to ``revision`` only (dispose it after)."""
    eng = db.make_engine(url)
    cfg = migrate._config()
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return eng
