"""Taking the books' schema down to an older migration, for a release rolled back.

Only the migrations whose docstring says ``Downgrade: yes`` should be taken
down, and only after reading what their ``Lost on downgrade:`` line names
(docs/operations.md, "Upgrading and rolling back"). Take a backup first.

Why not ``alembic downgrade`` as it stands: on SQLite, dropping a column
copies the table, and with foreign keys on, dropping the old copy counts every
row pointing at it (earnings at their payout item, items at their batch) as a
violation that the renamed copy never clears, so the commit fails once there
are batches. SQLite cannot switch foreign keys off inside a transaction, so
here they are switched off on this one connection before it begins, the
downgrade runs in one transaction, ``PRAGMA foreign_key_check`` must come back
empty before it commits, and the connection is closed (the next one gets
foreign keys on again). On PostgreSQL the downgrade is plain ``ALTER TABLE``.

The same holds for upgrading such books again (the upgrade to 0003 copies
tables too): ``migrate.run`` does both, and ``finsup init`` upgrades through it.

Run it as ``python -m finsup_dagster.ledger.rollback <revision>`` (down) or
``python -m finsup_dagster.ledger.rollback --upgrade`` (back to head), with
``FINSUP_LEDGER_URL`` set.
"""

from __future__ import annotations

import sys

from sqlalchemy.engine import Engine

from finsup_dagster.ledger import db, migrate
from finsup_dagster.ledger.errors import LedgerError


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Downgrades the books to ``revision`` ("base" for nothing); returns (before, after)."""
    return migrate.run(engine, revision, up=False)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrades rolled-back books again, the same way ``finsup init`` does."""
    return migrate.run(engine, revision, up=True)


def main(argv: list[str]) -> int:
    """``<revision>`` downgrades to it; ``--upgrade`` goes back to head."""
    if len(argv) != 1:
        print(
            "usage: python -m finsup_dagster.ledger.rollback <revision> | --upgrade",
            file=sys.stderr,
        )
        return 2
    try:
        engine = db.make_engine()
        if argv[0] == "--upgrade":
            before, after = upgrade(engine)
        else:
            before, after = downgrade(engine, argv[0])
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"books migrated from {before} to {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
